"""Read access to CAs and certificates for the other apps."""

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


def certificate_key_history(spki_sha256: str) -> QuerySet[Certificate]:
    return Certificate.objects.filter(spki_sha256=spki_sha256)
