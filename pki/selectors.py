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
    ca = CertificateAuthority.objects.filter(kind=kind, is_active=True).first()
    if ca is None:
        raise NotFound("ca_not_initialised", f"No active {kind} CA; run 'manage.py init_ca'.")
    return ca


def ca_list_active() -> QuerySet[CertificateAuthority]:
    return CertificateAuthority.objects.filter(is_active=True).order_by("id")


@functools.lru_cache(maxsize=32)
def _parsed_ca(fingerprint: str, pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def ca_certificate(ca: CertificateAuthority) -> x509.Certificate:
    return _parsed_ca(ca.fingerprint_sha256, ca.certificate_pem)


def ocsp_responder_current() -> Certificate | None:
    return (
        Certificate.objects.live()
        .filter(kind=Certificate.Kind.OCSP_RESPONDER, issuer__kind="client", issuer__is_active=True)
        .order_by("-not_after", "-pk")  # not_after has whole seconds: newest wins a tie
        .first()
    )


def certificate_key_history(spki_sha256: str) -> QuerySet[Certificate]:
    return Certificate.objects.filter(spki_sha256=spki_sha256)
