"""One CA per test session (per xdist worker). A transactional test's flush deletes its rows;
they are put back as they were (same keys, same delegate), so servers started once per session
keep working."""

_rows: dict[str, list[dict]] = {}


def remember() -> None:
    from pki.models import Certificate, CertificateAuthority

    _rows["cas"] = list(CertificateAuthority.objects.order_by("pk").values())
    _rows["delegates"] = list(
        Certificate.objects.filter(kind=Certificate.Kind.OCSP_RESPONDER).values()
    )


def restore() -> dict:
    """The active CAs by kind, restoring the session's rows if a flush removed them."""
    from pki.models import Certificate, CertificateAuthority

    active = {ca.kind: ca for ca in CertificateAuthority.objects.filter(is_active=True)}
    if len(active) != 3:
        CertificateAuthority.objects.bulk_create(
            CertificateAuthority(**row) for row in _rows["cas"]
        )
        Certificate.objects.bulk_create(Certificate(**row) for row in _rows["delegates"])
        active = {ca.kind: ca for ca in CertificateAuthority.objects.filter(is_active=True)}
    return active
