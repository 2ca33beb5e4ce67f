"""Read access to CAs and certificates, for the other apps and for pki's own modules: the
active CAs, a CA's parsed certificate, the current OCSP delegate, a key's history.

Low in ``pki`` (it imports only the models) because issuing (``pki.services``), CRLs
(``pki.revocation``), the OCSP responder (``pki.ocsp``) and the status pages all read them.
"""

import functools

from cryptography import x509
from django.db.models import QuerySet

from kernel.errors import NotFound
from pki.models import Certificate, CertificateAuthority


def ca_get_active(kind: str) -> CertificateAuthority:
    """The active CA of ``kind`` (``root``, ``client`` or ``server``): there is at most one
    (constraint ``pki_one_active_ca_per_kind``). Raises ``NotFound`` (``CA_NOT_INITIALISED``)
    when there is none, before ``init_ca``."""
    ca = CertificateAuthority.objects.filter(kind=kind, is_active=True).first()
    if ca is None:
        raise NotFound("CA_NOT_INITIALISED", f"No active {kind} CA; run 'manage.py init_ca'.")
    return ca


def ca_list_active() -> QuerySet[CertificateAuthority]:
    """The active CAs, in the order they were created; empty before ``init_ca``. A lazy
    queryset: raises nothing until it is read."""
    return CertificateAuthority.objects.filter(is_active=True).order_by("id")


@functools.lru_cache(maxsize=32)
def _parsed_ca(fingerprint: str, pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def ca_certificate(ca: CertificateAuthority) -> x509.Certificate:
    """``ca``'s certificate, parsed once per process and fingerprint (a replaced CA has another
    fingerprint, so an old parse is never returned for it). Raises ``ValueError`` only for a
    stored PEM that does not parse, which ``init_ca`` never writes."""
    return _parsed_ca(ca.fingerprint_sha256, ca.certificate_pem)


def ocsp_responder_current() -> Certificate | None:
    """The OCSP delegate in force: of the live (active, inside its validity) responder
    certificates of the active client CA, the one that expires last; None when there is none.
    Raises nothing of its own."""
    return (
        Certificate.objects.live()
        .filter(kind=Certificate.Kind.OCSP_RESPONDER, issuer__kind="client", issuer__is_active=True)
        .order_by("-not_after", "-pk")  # not_after has whole seconds: newest wins a tie
        .first()
    )


def certificate_key_history(spki_sha256: str) -> QuerySet[Certificate]:
    """Every certificate ever issued for the public key with this SPKI SHA-256, whatever its
    kind, status or issuer: what the key reuse and key compromise checks read. A lazy
    queryset: raises nothing until it is read."""
    return Certificate.objects.filter(spki_sha256=spki_sha256)
