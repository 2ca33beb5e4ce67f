"""Public PKI endpoints. These never load a CA key."""

from cryptography.hazmat.primitives import serialization
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from pki.models import CertificateAuthority
from pki.services import ca_certificate as ca_certificate_parsed


@require_GET
def ca_certificate(request: HttpRequest, slug: str) -> HttpResponse:
    """The AIA caIssuers URL: the issuing CA's certificate, DER (RFC 5280 §4.2.2.1)."""
    ca = CertificateAuthority.objects.filter(slug=slug, is_active=True).first()
    if ca is None:
        raise Http404("no such CA")
    der = ca_certificate_parsed(ca).public_bytes(serialization.Encoding.DER)
    response = HttpResponse(der, content_type="application/pkix-cert")
    response["Cache-Control"] = "public, max-age=86400"
    return response
