"""The trust contract on the app side (docs/architecture.md, "The trust contract between nginx
and the app"): a DRF authentication class for requests that came through the nginx mTLS
terminator.

nginx verified the client certificate in the TLS handshake and forwards, with
``proxy_set_header`` (so a client's own copies are replaced, never passed on):
the verification result, the URL-escaped PEM and the terminator secret. A certificate is
public, so the PEM proves nothing unless it came from the terminator that saw the private key:
the secret is checked first, in constant time. Then the PEM is parsed, its SHA-256 fingerprint
recomputed, and :func:`pki.trust.certificate_decide` says whether it is ours, valid, not
revoked, and its participant and firm active. Nothing here looks at the client's address.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, NoReturn
from urllib.parse import unquote

from django.conf import settings
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from kernel.api import ApiError, request_id
from kernel.audit import Actor, audit_record
from kernel.models import AuditRecord, Participant
from pki import est, trust

logger = logging.getLogger(__name__)

# Decisions that mean "we know who you are, but you may not come in".
FORBIDDEN = {trust.PARTICIPANT_DISABLED, trust.FIRM_INACTIVE}
MESSAGES = {
    "TERMINATOR_NOT_CONFIGURED": "The API is not configured to trust a TLS terminator.",
    "TERMINATOR_SECRET_INVALID": "Requests must come through the venue's TLS terminator.",
    "CLIENT_CERTIFICATE_MISSING": "A client certificate is required.",
    "CLIENT_CERTIFICATE_UNVERIFIED": "The client certificate did not verify.",
    "CLIENT_CERTIFICATE_INVALID": "The forwarded client certificate could not be read.",
    trust.CERTIFICATE_UNKNOWN: "This certificate was not issued by the venue.",
    trust.ISSUER_UNKNOWN: "This certificate's issuing CA is not trusted any more.",
    trust.CERTIFICATE_REVOKED: "This certificate has been revoked.",
    trust.CERTIFICATE_EXPIRED: "This certificate has expired.",
    trust.CERTIFICATE_NOT_YET_VALID: "This certificate is not valid yet.",
    trust.PARTICIPANT_DISABLED: "The participant this certificate belongs to is disabled.",
    trust.FIRM_INACTIVE: "The firm this certificate belongs to is not active.",
}


@dataclass(frozen=True)
class ApiPrincipal:
    """``request.user`` on the API: the participant a trusted certificate belongs to."""

    decision: trust.TrustDecision

    is_authenticated = True
    is_anonymous = False

    @cached_property
    def participant(self) -> Participant:
        """The participant with its firm (:func:`pki.trust.participant_of`)."""
        return trust.participant_of(self.decision)

    @property
    def serial(self) -> str:
        return self.decision.serial

    @property
    def not_after(self) -> datetime | None:
        return self.decision.not_after

    def __str__(self) -> str:
        return f"certificate {self.decision.serial}"


PEM_BEGIN, PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


def _pem_to_der(pem: str) -> bytes | None:
    """The DER of one PEM certificate (RFC 7468 armour), or None."""
    pem = pem.strip()
    if not (pem.startswith(PEM_BEGIN) and pem.endswith(PEM_END)):
        return None
    body = pem[len(PEM_BEGIN) : -len(PEM_END)]
    if "-----" in body:
        return None  # more than one block
    try:
        return base64.b64decode("".join(body.split()), validate=True) or None
    except (binascii.Error, ValueError):
        return None


@functools.lru_cache(maxsize=4096)
def _fingerprint_of(forwarded: str) -> str | None:
    """The SHA-256 fingerprint (hex) of the certificate nginx forwarded (URL-escaped PEM), or
    None when it is not one PEM certificate. Only the fingerprint matters: it is looked up
    among the certificates we issued, so anything else (garbage included) is simply unknown;
    no X.509 parse on the hot path. A pure function of the header, remembered per process:
    the same few certificates call again and again."""
    der = _pem_to_der(unquote(forwarded))
    return None if der is None else hashlib.sha256(der).hexdigest()


def _header(request: Request, name: str) -> str:
    value: str = request.META.get("HTTP_" + name.upper().replace("-", "_"), "")
    return value


def terminator_check(request: Request) -> None:
    """Refuses a request that did not come through the venue's terminator (its secret, in
    constant time), whether or not it carries a client certificate."""
    secret = settings.KEYLINE_TERMINATOR_SECRET
    if not secret:
        _refuse(request, "TERMINATOR_NOT_CONFIGURED", 503)
    given = _header(request, settings.KEYLINE_HEADER_SECRET)
    if not hmac.compare_digest(given.encode(), secret.encode()):
        _refuse(request, "TERMINATOR_SECRET_INVALID", 401)


class TerminatorCertificateAuthentication(BaseAuthentication):
    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when authentication fails.
        return 'mTLS realm="keyline-rfq"'

    def authenticate(self, request: Request) -> tuple[ApiPrincipal, trust.TrustDecision]:
        terminator_check(request)
        verify = _header(request, settings.KEYLINE_HEADER_VERIFY)
        if verify in ("", "NONE"):
            _refuse(request, "CLIENT_CERTIFICATE_MISSING", 401)
        if verify != "SUCCESS":
            _refuse(request, "CLIENT_CERTIFICATE_UNVERIFIED", 401, {"verify": verify[:200]})
        fingerprint = _fingerprint_of(_header(request, settings.KEYLINE_HEADER_CERT))
        if fingerprint is None:
            _refuse(request, "CLIENT_CERTIFICATE_INVALID", 401)
        decision = trust.certificate_decide(fingerprint)
        if not decision.ok:
            _refuse_decision(request, decision)
        if decision.supersedes is not None:
            _supersede_once(decision)
        return ApiPrincipal(decision), decision


# Predecessors this process has revoked: a cached decision may still name one for a moment.
_superseded: set[int] = set()


def _supersede_once(decision: trust.TrustDecision) -> None:
    """A certificate renewed by EST is used for the first time: the one it renews is revoked
    as superseded (pki.est), and its own cached decision forgotten so that no process asks
    again. A failure here never fails the request: the grace period's sweep revokes it."""
    predecessor = decision.supersedes
    if predecessor is None or predecessor in _superseded or decision.certificate_id is None:
        return
    _superseded.add(predecessor)
    try:
        est.supersede_on_first_use(
            certificate_id=decision.certificate_id, predecessor_id=predecessor
        )
        trust.decisions_forget([decision.fingerprint_sha256])
    except Exception:
        _superseded.discard(predecessor)
        logger.exception("superseding certificate %s failed", predecessor)


def principal_of(request: Request) -> ApiPrincipal:
    """``request.user`` of a request this authentication let in (typed as Django's users)."""
    principal = request.user
    if not isinstance(principal, ApiPrincipal):  # the API's views authenticate only so
        raise TypeError("the request was not authenticated by a client certificate")
    return principal


def recheck(request: Request) -> None:
    """Decide again for the certificate this request authenticated with: a request that waits
    (a long-poll) may outlive a revocation. Refuses exactly as authentication does."""
    principal = principal_of(request)
    decision = trust.certificate_decide(principal.decision.fingerprint_sha256)
    if not decision.ok:
        _refuse_decision(request, decision)


def _refuse_decision(request: Request, decision: trust.TrustDecision) -> NoReturn:
    status = 403 if decision.code in FORBIDDEN else 401
    _refuse(request, decision.code, status, {"serial": decision.serial}, decision)


def _refuse(
    request: Request,
    code: str,
    status: int,
    details: dict[str, Any] | None = None,
    decision: trust.TrustDecision | None = None,
) -> NoReturn:
    actor = (
        Actor(AuditRecord.ActorType.CERTIFICATE, decision.serial, decision.serial)
        if decision is not None and decision.serial
        else Actor.anonymous("API client")
    )
    audit_record(
        event="api.authentication_refused",
        actor=actor,
        code=code,
        method=request.method,
        path=request.path[:200],
        request_id=request_id(request),
        **(details or {}),
    )
    raise ApiError(code, MESSAGES[code], status, details)
