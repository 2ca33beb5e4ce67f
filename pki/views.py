"""Public PKI endpoints: caIssuers, CRLs, OCSP (Django fallback), status pages and health.
None of them loads a CA key."""

import functools
from dataclasses import asdict
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
from pki.conf import pki_settings
from pki.crypto import serial_normalize
from pki.failures import failures_open
from pki.models import Certificate, CertificateAuthority, RevocationList
from pki.ocsp_http import answer_for
from pki.revocation import crl_health, crl_latest
from pki.selectors import ca_certificate as ca_certificate_parsed
from pki.selectors import ocsp_responder_current

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


def _bundle_report(newest: dict[str, int]) -> dict:
    """Whether the CRL bundle nginx reads on this host holds the newest CRL of every CA
    (``newest``: issuer name → CRL number). The file may live on another host."""
    path = pki_settings().ca_dir / "crl" / "bundle.pem"
    try:
        data = path.read_bytes()
        mtime = path.stat().st_mtime
    except OSError:
        return {"path": str(path), "present": False}
    numbers = {}
    for block in data.split(b"-----END X509 CRL-----")[:-1]:
        crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        numbers[crl.issuer.rfc4514_string()] = number
    return {
        "path": str(path),
        "present": True,
        "age_seconds": int(timezone.now().timestamp() - mtime),
        "current": all(numbers.get(subject) == n for subject, n in newest.items()),
    }


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Revocation publishing health for monitoring: the age of every CA's newest CRL, whether
    the bundle file on this host holds them, unresolved publishing failures and the OCSP
    delegate's remaining life. 503 unless all is well."""
    now = timezone.now()
    crls = crl_health(now)
    delegate = ocsp_responder_current()
    failures = failures_open()
    subjects = dict(
        CertificateAuthority.objects.filter(is_active=True).values_list("slug", "subject")
    )
    bundle = _bundle_report({subjects[c.ca]: c.number for c in crls if c.number is not None})
    ok = (
        all(c.status == "ok" for c in crls)
        and delegate is not None
        and not failures
        and bundle.get("current", True)
    )
    return JsonResponse(
        {
            "status": "ok" if ok else "degraded",
            "checked_at": now,
            "crls": [asdict(c) for c in crls],
            "crl_bundle": bundle,
            "publish_failures": failures,
            "ocsp_responder": (
                {
                    "serial": delegate.serial,
                    "not_after": delegate.not_after,
                    "seconds_left": int((delegate.not_after - now).total_seconds()),
                }
                if delegate
                else None
            ),
        },
        status=200 if ok else 503,
    )
