"""EST over HTTP (RFC 7030, with RFC 8951's clarifications), under ``/.well-known/est/`` on the
API's address, behind the nginx terminator (the trust contract: its secret on every request).

- ``GET cacerts``: the client certificates' chain (issuing CA, root), ``application/pkcs7-mime``
  certs-only, base64 (§4.1.3).
- ``GET csrattrs``: what the CA wants in a CSR, ``application/csrattrs``, base64 (§4.5.2).
- ``POST simpleenroll``: a participant's first certificate; HTTP Basic authentication, the
  trader id and a one-time enrollment token (§3.2.3); the body a base64 PKCS#10
  (``application/pkcs10``). ``200`` with the certificate (certs-only PKCS#7), or ``202`` and
  ``Retry-After`` while it waits for an officer or the signing worker (§4.2.3): the client
  sends the same request again.
- ``POST simplereenroll``: a new certificate for the participant whose current certificate
  authenticates the TLS connection (§4.2.2), with a new key, inside the renewal window.

Refusals answer with their HTTP status and a ``text/plain`` body (§4.2.3) that starts with the
project's error code: ``EST_TOKEN_SPENT: This enrollment token has been used…``; 401s carry
``WWW-Authenticate``. Every refusal is audited (``est.refused``, with the code and the
endpoint); issuance is audited by the signing path (``certificate.issued``).
"""

import base64
import binascii
import functools
import logging
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from kombu.exceptions import KombuError
from pyasn1.codec.der.encoder import encode as der_encode
from pyasn1.type import univ
from pyasn1_alt_modules import rfc7030
from redis.exceptions import RedisError
from rest_framework.request import Request

from kernel.api import ApiError
from kernel.audit import Actor, audit_record
from kernel.errors import DomainError, Invalid, Unauthenticated
from pki import est
from pki.authentication import TerminatorCertificateAuthentication, terminator_check
from pki.models import Certificate, CertificateAuthority, CertificateRequest
from pki.selectors import ca_certificate, ca_get_active
from pki.signing import certificate_issue_queued

app_name = "est"
logger = logging.getLogger(__name__)

PKCS7 = "application/pkcs7-mime; smime-type=certs-only"
MAX_CSR_BYTES = 64 * 1024
BASIC_CHALLENGE = 'Basic realm="keyline-est", charset="UTF-8"'
CERT_CHALLENGE = 'mTLS realm="keyline-rfq"'

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SECP256R1 = "1.2.840.10045.3.1.7"
OID_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"


def _base64(der: bytes) -> bytes:
    """Base64 in lines (of 76), as RFC 7030 §4 and RFC 8951 send it."""
    return base64.encodebytes(der)


def _answer(body: bytes, content_type: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type, status=status)
    response["Content-Transfer-Encoding"] = "base64"
    return response


def _text(status: int, line: str, challenge: str = "") -> HttpResponse:
    """A plain-text answer (RFC 7030 §4.2.3): one line, ``CODE: message``."""
    response = HttpResponse(f"{line}\n", content_type="text/plain; charset=utf-8", status=status)
    if status == 401 and challenge:
        response["WWW-Authenticate"] = challenge
    return response


def _csr_body(request: HttpRequest) -> bytes:
    """The PKCS#10 a POST carries: ``application/pkcs10``, base64 (whitespace allowed)."""
    if not request.body.strip():
        raise Invalid("EST_BODY_EMPTY", "The body holds no CSR.")
    kind = request.content_type or ""
    if kind != "application/pkcs10":
        raise Invalid(
            "EST_CONTENT_TYPE", f"Send the CSR as application/pkcs10, not {kind or 'nothing'}."
        )
    if len(request.body) > MAX_CSR_BYTES:
        raise Invalid("EST_BODY_TOO_LARGE", f"A CSR is at most {MAX_CSR_BYTES} bytes.")
    try:
        der = base64.b64decode(b"".join(request.body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(
            "EST_BODY_NOT_BASE64", "The body must be the DER CSR in base64 (RFC 7030 §4.2.1)."
        ) from None
    if not der:
        raise Invalid("EST_BODY_EMPTY", "The body holds no CSR.")
    return der


def _issued_or_waiting(submission: est.Submission) -> HttpResponse:
    """200 with the certificate, or 202 with Retry-After while it waits. A request the policy
    signs at once is (re)queued for the signing worker on every ask until it is signed:
    issuing is idempotent, and a task lost with a broker or a worker is asked for again."""
    certificate = submission.certificate
    request = submission.request
    if (
        certificate is None
        and submission.sign_now
        and request.status == CertificateRequest.Status.SUBMITTED
    ):
        try:
            certificate = certificate_issue_queued(
                request=request, actor=Actor.system("EST policy: signed at once")
            )
        except (KombuError, RedisError):
            # The request is stored; the client's next ask queues it again.
            logger.exception("EST: could not queue request %s for signing", request.pk)
    if certificate is not None:
        issued = x509.load_pem_x509_certificate(certificate.pem.encode())
        return _answer(_base64(pkcs7.serialize_certificates([issued], Encoding.DER)), PKCS7)
    waits_for = "the signing worker" if submission.sign_now else "an officer"
    response = _text(
        202,
        f"EST_PENDING: Request #{request.pk} waits for {waits_for}; send the same request "
        "again later.",
    )
    retry = 5 if submission.sign_now else settings.KEYLINE_EST_RETRY_AFTER_SECONDS
    response["Retry-After"] = str(retry)
    return response


def _est_endpoint(
    endpoint: str, challenge: str = CERT_CHALLENGE
) -> Callable[[Callable[[HttpRequest], HttpResponse]], Callable[[HttpRequest], HttpResponse]]:
    """The trust contract's terminator check first, and every refusal as EST answers it (a
    401 with ``challenge``, how this endpoint authenticates)."""

    def decorate(
        view: Callable[[HttpRequest], HttpResponse],
    ) -> Callable[[HttpRequest], HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest) -> HttpResponse:
            try:
                terminator_check(Request(request))
                return view(request)
            except ApiError as exc:  # the trust contract's refusals (already audited)
                return _text(exc.status_code, f"{exc.error_code}: {exc.detail}", CERT_CHALLENGE)
            except DomainError as exc:
                actor = getattr(request, "est_actor", Actor.anonymous("EST client"))
                audit_record(
                    event="est.refused",
                    actor=actor,
                    endpoint=endpoint,
                    code=exc.code,
                    status=exc.status_code,
                )
                return _text(exc.status_code, str(exc), challenge)

        return csrf_exempt(wrapper)

    return decorate


@require_GET
@_est_endpoint("cacerts")
def cacerts(request: HttpRequest) -> HttpResponse:
    """The chain a client certificate is verified against: the client issuing CA and the
    root (RFC 7030 §4.1)."""
    issuing = ca_get_active(CertificateAuthority.Kind.CLIENT)
    root = ca_get_active(CertificateAuthority.Kind.ROOT)
    certs = [ca_certificate(issuing), ca_certificate(root)]
    return _answer(_base64(pkcs7.serialize_certificates(certs, Encoding.DER)), PKCS7)


def _csr_attributes() -> bytes:
    """CsrAttrs: sign with ecdsa-with-SHA256, an EC key on P-256 (RFC 7030 §4.5.2)."""
    attrs = rfc7030.CsrAttrs()
    signature = rfc7030.AttrOrOID()
    signature["oid"] = univ.ObjectIdentifier(OID_ECDSA_WITH_SHA256)
    attrs.append(signature)
    key = rfc7030.AttrOrOID()
    key["attribute"]["attrType"] = univ.ObjectIdentifier(OID_EC_PUBLIC_KEY)
    key["attribute"]["attrValues"].append(
        univ.Any(der_encode(univ.ObjectIdentifier(OID_SECP256R1)))
    )
    attrs.append(key)
    return der_encode(attrs)


@require_GET
@_est_endpoint("csrattrs")
def csrattrs(request: HttpRequest) -> HttpResponse:
    """What the CA asks for (RFC 7030 §4.5): an EC P-256 key and an ECDSA-SHA256 signature.
    It also accepts P-384, Ed25519 and RSA 2048-4096 (pki.csr), and ignores the subject and
    every requested extension."""
    return _answer(_base64(_csr_attributes()), "application/csrattrs")


def _basic_credentials(request: HttpRequest) -> tuple[str, str]:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Unauthenticated(
            "EST_AUTHENTICATION_REQUIRED",
            "Authenticate with HTTP Basic: your trader id and the enrollment token.",
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Unauthenticated(
            "EST_AUTHENTICATION_MALFORMED", "The Basic credentials could not be read."
        ) from None
    trader_id, colon, token = decoded.partition(":")
    if not colon or not trader_id or not token:
        raise Unauthenticated(
            "EST_AUTHENTICATION_MALFORMED", "Expected <trader id>:<enrollment token>."
        )
    return trader_id, token


@require_POST
@_est_endpoint("simpleenroll", BASIC_CHALLENGE)
def simpleenroll(request: HttpRequest) -> HttpResponse:
    """A participant's first certificate, authenticated by an enrollment token (§4.2.1)."""
    trader_id, token = _basic_credentials(request)
    request.est_actor = Actor.anonymous(f"EST client for {trader_id[:64]}")  # type: ignore[attr-defined]
    csr = _csr_body(request)
    submission = est.enroll(trader_id=trader_id, token=token, csr=csr)
    return _issued_or_waiting(submission)


@require_POST
@_est_endpoint("simplereenroll")
def simplereenroll(request: HttpRequest) -> HttpResponse:
    """A new certificate for the one that authenticates this connection (§4.2.2)."""
    _, decision = TerminatorCertificateAuthentication().authenticate(Request(request))
    certificate = Certificate.objects.select_related("participant__firm", "request").get(
        pk=decision.certificate_id or 0  # a trusted decision names its certificate
    )
    request.est_actor = Actor.certificate(certificate)  # type: ignore[attr-defined]
    csr = _csr_body(request)
    submission = est.reenroll(certificate=certificate, csr=csr)
    return _issued_or_waiting(submission)


urlpatterns = [
    path("cacerts", cacerts, name="cacerts"),
    path("csrattrs", csrattrs, name="csrattrs"),
    path("simpleenroll", simpleenroll, name="simpleenroll"),
    path("simplereenroll", simplereenroll, name="simplereenroll"),
]
