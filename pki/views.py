"""Public PKI endpoints: caIssuers, CRLs, OCSP (Django fallback), status pages and health.
None of them loads a CA key."""

import functools
from datetime import UTC, datetime
from email.utils import format_datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from pki import ocsp
from pki.crypto import serial_normalize
from pki.health import health_check
from pki.models import Certificate, CertificateAuthority, RevocationList
from pki.ocsp_http import answer_for
from pki.revocation import crl_latest
from pki.selectors import ca_certificate as ca_certificate_parsed

CRL_MAX_AGE = 300  # seconds: a new CRL follows every revocation, so clients re-fetch often


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


@require_GET
def crl(request: HttpRequest, slug: str) -> HttpResponse:
    """The CRL distribution point: the CA's newest CRL, DER (RFC 5280 §4.2.1.13)."""
    ca = CertificateAuthority.objects.filter(slug=slug, is_active=True).first()
    latest = crl_latest(ca) if ca else None
    if latest is None:
        raise Http404("no CRL published for this CA")
    etag = f'"{latest.sha256}"'
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)  # RFC 9110 §15.4.5: with the caching headers
    else:
        response = HttpResponse(bytes(latest.der), content_type="application/pkix-crl")
        response["Content-Disposition"] = f'attachment; filename="{slug}.crl"'
    left = int((latest.next_update - timezone.now()).total_seconds())
    response["Cache-Control"] = f"public, max-age={max(0, min(CRL_MAX_AGE, left))}"
    response["Last-Modified"] = format_datetime(latest.this_update.astimezone(UTC), usegmt=True)
    response["Expires"] = format_datetime(latest.next_update.astimezone(UTC), usegmt=True)
    response["ETag"] = etag
    return response


@csrf_exempt
def ocsp_responder(request: HttpRequest, tail: str = "") -> HttpResponse:
    """RFC 6960 over Django, for servers that do not route through ``keyline.wsgi``."""
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = -1  # answered as malformedRequest
    answer = answer_for(request.method or "", tail, lambda n: request.body[:n], length)
    if answer is None:
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    response = HttpResponse(answer.body)
    for name, value in answer.headers():
        response[name] = value
    return response


# --- status pages --------------------------------------------------------------------------


def _find_certificate(ident: str) -> Certificate | None:
    certificates = Certificate.objects.select_related("issuer", "participant__firm")
    fingerprint = ident.lower().replace(":", "")
    if len(fingerprint) == 64:
        return certificates.filter(fingerprint_sha256=fingerprint).first()
    serial = serial_normalize(ident)
    return certificates.filter(serial=serial).first() if serial else None


@functools.lru_cache(maxsize=8)
def _parsed_crl(pk: int, sha256: str) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(bytes(RevocationList.objects.get(pk=pk).der))


def _crl_view(cert: Certificate) -> dict | None:
    latest = crl_latest(cert.issuer)
    if latest is None:
        return None
    listed = _parsed_crl(latest.pk, latest.sha256).get_revoked_certificate_by_serial_number(
        cert.serial_int
    )
    return {
        "number": latest.number,
        "this_update": latest.this_update,
        "next_update": latest.next_update,
        "lists_certificate": listed is not None,
    }


def _status_label(cert: Certificate, now: datetime) -> str:
    if cert.status == Certificate.Status.REVOKED:
        return "revoked"
    if cert.not_after <= now:
        return "expired"
    if cert.not_before > now:
        return "not_yet_valid"
    return "good"


def certificate_status_data(cert: Certificate) -> dict:
    """Public facts only: what the certificate itself says, plus its status."""
    now = timezone.now()
    participant = cert.participant
    return {
        "serial": cert.serial,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "kind": cert.kind,
        "subject": cert.subject,
        "san": cert.san,
        "issuer": cert.issuer.subject,
        "firm": (
            {"legal_name": participant.firm.legal_name, "lei": participant.firm.lei}
            if participant
            else None
        ),
        "trader_id": participant.trader_id if participant else None,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "status": _status_label(cert, now),
        "revoked_at": cert.revoked_at,
        "revocation_reason": cert.revocation_reason or None,
        "invalidity_date": cert.invalidity_date,
        "crl": _crl_view(cert),
        "ocsp": ocsp.cached_status(cert),
        "checked_at": now,
    }


def _wants_json(request: HttpRequest) -> bool:
    return request.GET.get("format") == "json" or (
        "application/json" in request.headers.get("Accept", "")
        and "text/html" not in request.headers.get("Accept", "")
    )


@require_GET
def certificate_status(request: HttpRequest, ident: str) -> HttpResponse:
    """The "OCSP-style" status of one certificate, by serial (hex) or SHA-256 fingerprint:
    HTML for people, ``?format=json`` for programs."""
    cert = _find_certificate(ident)
    as_json = _wants_json(request)
    if cert is None:
        if as_json:
            return JsonResponse(
                {
                    "code": "CERTIFICATE_NOT_FOUND",
                    "message": "No certificate with this serial or fingerprint was issued here.",
                },
                status=404,
            )
        raise Http404("no such certificate")
    data = certificate_status_data(cert)
    response = (
        JsonResponse(data) if as_json else render(request, "pki/status.html", {"status": data})
    )
    response["Cache-Control"] = "no-cache"
    return response


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Operational health for monitoring (:mod:`pki.health`): the age of every CA's newest CRL,
    whether the bundle file on this host holds them, unresolved publishing failures, the OCSP
    delegate's remaining life and the audit chain's unchained tail. 503 unless all is well."""
    report = health_check()
    return JsonResponse(report.as_json(), status=200 if report.ok else 503)
