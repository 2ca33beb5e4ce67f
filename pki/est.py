"""EST (RFC 7030) enrollment and re-enrollment: the rules, apart from HTTP (pki.est_views).

- **Enrollment tokens** let one participant enroll its first certificate (simpleenroll): a
  firm administrator or an officer makes one in the portal; it is shown once, stored as its
  SHA-256, lives ``KEYLINE_EST_TOKEN_HOURS`` and is spent by the request it enrolled. A retry
  of that same request (the same public key) may poll with it until the request is decided.
- **Re-enrollment** (simplereenroll) is authenticated by the participant's current
  certificate (the trust contract, pki.authentication). The identity is the certificate's:
  the new one gets the participant's verified subject, as every certificate does. The key is
  always new (the key-reuse rule of ``csr_submit`` holds). It is allowed inside the renewal
  window, the last ``renewal_window_percent`` of the certificate's lifetime, unless an officer
  blocked renewals for the firm.
- **Superseding**: the certificate a renewal replaces is revoked with reason ``superseded``
  when its successor is first used (pki.authentication calls :func:`supersede_on_first_use`)
  or ``KEYLINE_EST_SUPERSEDE_GRACE_HOURS`` after the successor was issued
  (:func:`supersede_due`, every 10 minutes), whichever is first.
- **Policy** (:class:`pki.models.EstPolicy`, per firm): whether a first certificate and a
  renewal are signed at once or wait for an officer, the window, the block.

Every refusal is one of the project's errors (``kernel.errors``: ``Unauthenticated`` for a
token, ``PermissionDenied``, ``Conflict``, and ``pki.csr``'s for a CSR) and is audited by the
view with its code; every issuance is audited by the signing path.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from kernel.audit import Actor, audit_record
from kernel.errors import Conflict, PermissionDenied, Unauthenticated
from kernel.models import Firm, Participant
from pki.csr import csr_parse
from pki.models import Certificate, CertificateRequest, EnrollmentToken, EstPolicy
from pki.revocation import certificate_revoke
from pki.services import csr_submit

TOKEN_PREFIX = "est_"  # noqa: S105 - a prefix that names what the secret is, not a secret


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- policy -----------------------------------------------------------------------------------


def policy_of(firm: Firm) -> EstPolicy:
    """The firm's EST policy (an unsaved row with the defaults when it has none)."""
    return EstPolicy.objects.filter(firm=firm).first() or EstPolicy(firm=firm)


POLICY_FIELDS = (
    "auto_sign_enrollment",
    "auto_sign_renewal",
    "renewal_window_percent",
    "renewal_blocked",
)


def policy_set(*, firm: Firm, actor: Actor, **values: Any) -> EstPolicy:
    """Change the firm's EST policy; audited with what changed (``est.policy_changed``)."""
    unknown = set(values) - set(POLICY_FIELDS)
    if unknown:
        raise ValueError(f"not EST policy fields: {sorted(unknown)}")
    with transaction.atomic():
        policy, _ = EstPolicy.objects.select_for_update().get_or_create(firm=firm)
        changed = {
            name: {"from": getattr(policy, name), "to": value}
            for name, value in values.items()
            if getattr(policy, name) != value
        }
        for name, value in values.items():
            setattr(policy, name, value)
        policy.updated_by = actor.label
        policy.save()
        if changed:
            audit_record(
                event="est.policy_changed",
                actor=actor,
                target=firm,
                firm_lei=firm.lei,
                changes=changed,
            )
    return policy


def renewal_opens_at(certificate: Certificate, policy: EstPolicy) -> datetime:
    """When re-enrollment opens for ``certificate``: the last ``renewal_window_percent`` of its
    lifetime."""
    lifetime = certificate.not_after - certificate.not_before
    return certificate.not_after - lifetime * policy.renewal_window_percent / 100


# --- enrollment tokens ------------------------------------------------------------------------


def enrollment_token_create(
    *, participant: Participant, actor: Actor
) -> tuple[EnrollmentToken, str]:
    """A new one-time token for ``participant``'s enrollment: the row and the token itself,
    which is never stored and must be shown to its creator now."""
    if not participant.can_hold_certificate:
        raise Conflict(
            "PARTICIPANT_INACTIVE",
            "Enrollment tokens are made only for active participants of approved firms.",
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(24)
    with transaction.atomic():
        row = EnrollmentToken.objects.create(
            participant=participant,
            token_sha256=token_sha256(token),
            created_by=actor.label,
            expires_at=timezone.now() + timedelta(hours=settings.KEYLINE_EST_TOKEN_HOURS),
        )
        audit_record(
            event="est.token_created",
            actor=actor,
            target=participant,
            token=row.pk,
            trader_id=participant.trader_id,
            expires_at=row.expires_at,
        )
    return row, token


def enrollment_token_revoke(*, token: EnrollmentToken, actor: Actor) -> EnrollmentToken:
    """Withdraw a token that has not been used; ``EST_TOKEN_NOT_OPEN`` (409) otherwise."""
    with transaction.atomic():
        row = EnrollmentToken.objects.select_for_update().get(pk=token.pk)
        if row.state() != "open":
            raise Conflict("EST_TOKEN_NOT_OPEN", f"This token is {row.state()} already.")
        row.revoked_at, row.revoked_by = timezone.now(), actor.label
        row.save(update_fields=["revoked_at", "revoked_by"])
        audit_record(
            event="est.token_revoked",
            actor=actor,
            target=row.participant,
            token=row.pk,
            trader_id=row.participant.trader_id,
        )
    return row


# --- simpleenroll and simplereenroll ----------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """Where an EST request stands: its certificate request, the certificate once issued,
    and whether the firm's policy has it signed now (else it waits for an officer)."""

    request: CertificateRequest
    sign_now: bool

    @property
    def certificate(self) -> Certificate | None:
        return Certificate.objects.filter(request=self.request).first()


def _existing(request: CertificateRequest, sign_now: bool) -> Submission:
    """A retry of a request already made: its outcome so far, or its rejection."""
    if request.status == CertificateRequest.Status.REJECTED:
        raise PermissionDenied(
            "EST_REQUEST_REJECTED",
            f"This request was rejected: {request.rejection_reason or request.rejection_code}",
            {"request": request.pk, "rejection_code": request.rejection_code},
        )
    return Submission(request, sign_now)


def _refuse_unless_open(token: EnrollmentToken) -> None:
    state = token.state()
    if state == "revoked":
        raise Unauthenticated("EST_TOKEN_REVOKED", "This enrollment token was withdrawn.")
    if state == "used":
        raise Unauthenticated(
            "EST_TOKEN_SPENT", "This enrollment token has been used; ask for a new one."
        )
    if state == "expired":
        raise Unauthenticated(
            "EST_TOKEN_EXPIRED",
            f"This enrollment token expired at {token.expires_at:%Y-%m-%d %H:%M}Z.",
        )


def enroll(*, trader_id: str, token: str, csr: bytes) -> Submission:
    """simpleenroll: ``trader_id`` and ``token`` from HTTP Basic authentication, ``csr`` the
    PKCS#10 (DER). Spends the token on a new request; a retry with the same key polls it."""
    row = (
        EnrollmentToken.objects.select_related("participant__firm")
        .filter(token_sha256=token_sha256(token))
        .first()
    )
    if row is None or row.participant.trader_id != trader_id:
        raise Unauthenticated("EST_TOKEN_INVALID", "Unknown enrollment token for this trader id.")
    participant = row.participant
    policy = policy_of(participant.firm)
    parsed = csr_parse(csr)
    actor = Actor.system(f"EST enrollment token #{row.pk}")
    with transaction.atomic():
        # Decided under the token's lock: requests with one token queue here, and each sees
        # what the one before it left (a retry of the same request polls it).
        locked = (
            EnrollmentToken.objects.select_for_update(of=("self",))
            .select_related("request")
            .get(pk=row.pk)
        )
        if locked.request is not None and locked.request.spki_sha256 == parsed.spki_sha256:
            return _existing(locked.request, policy.auto_sign_enrollment)
        _refuse_unless_open(locked)
        if not participant.can_hold_certificate:
            raise PermissionDenied(
                "PARTICIPANT_INACTIVE",
                "Certificates are issued only to active participants of approved firms.",
            )
        # A CSR refused here rolls the token back with it: a bad request does not spend it.
        request = csr_submit(participant=participant, data=csr, actor=actor)
        locked.used_at, locked.request = timezone.now(), request
        locked.save(update_fields=["used_at", "request"])
        audit_record(
            event="est.enrolled",
            actor=actor,
            target=request,
            token=row.pk,
            trader_id=participant.trader_id,
            signed_at_once=policy.auto_sign_enrollment,
        )
    return Submission(request, policy.auto_sign_enrollment)


def reenroll(*, certificate: Certificate, csr: bytes, now: datetime | None = None) -> Submission:
    """simplereenroll for ``certificate`` (already trusted by the caller): inside the renewal
    window and not blocked, with a new key; a retry with the same key polls the request."""
    now = now or timezone.now()
    participant = certificate.participant
    if participant is None:  # never: a trusted client certificate names a participant
        raise PermissionDenied("PARTICIPANT_INACTIVE", "This certificate has no participant.")
    policy = policy_of(participant.firm)
    if policy.renewal_blocked:
        raise PermissionDenied(
            "EST_RENEWAL_BLOCKED",
            "Renewal by EST is blocked for this firm: ask the venue's compliance desk.",
        )
    opens = renewal_opens_at(certificate, policy)
    if now < opens:
        raise PermissionDenied(
            "EST_OUTSIDE_RENEWAL_WINDOW",
            f"Renewal opens at {opens:%Y-%m-%d %H:%M}Z "
            f"(the last {policy.renewal_window_percent}% of the certificate's lifetime).",
            {"opens_at": opens.isoformat(), "serial": certificate.serial},
        )
    parsed = csr_parse(csr)
    actor = Actor.certificate(certificate)
    with transaction.atomic():
        # One renewal per certificate: concurrent renewals of it queue on its row, and each
        # sees what the one before it left (the constraint pki_one_renewal_per_certificate
        # backs this up).
        Certificate.objects.select_for_update().filter(pk=certificate.pk).first()
        earlier = list(CertificateRequest.objects.filter(renewal_of=certificate).order_by("-pk"))
        for request in earlier:
            if request.spki_sha256 == parsed.spki_sha256:
                return _existing(request, policy.auto_sign_renewal)
        for request in earlier:
            if request.status == CertificateRequest.Status.ISSUED:
                successor = Certificate.objects.get(request=request)
                raise Conflict(
                    "EST_ALREADY_RENEWED",
                    f"This certificate was renewed already, by {successor.serial}.",
                    {"successor": successor.serial},
                )
            if request.status == CertificateRequest.Status.SUBMITTED:
                raise Conflict(
                    "EST_RENEWAL_PENDING",
                    f"A renewal with another key (request #{request.pk}) is waiting.",
                    {"request": request.pk},
                )
        request = csr_submit(participant=participant, data=csr, actor=actor, renewal_of=certificate)
        audit_record(
            event="est.reenrolled",
            actor=actor,
            target=request,
            renews=certificate.serial,
            trader_id=participant.trader_id,
            signed_at_once=policy.auto_sign_renewal,
        )
    return Submission(request, policy.auto_sign_renewal)


# --- superseding --------------------------------------------------------------------------------


def _supersede(predecessor_id: int, actor: Actor) -> bool:
    """Revoke the predecessor as superseded (audited ``certificate.revoked`` with ``actor``:
    the successor's certificate on its first use, the grace period's sweep otherwise); False
    when it was revoked already."""
    try:
        certificate_revoke(
            certificate=Certificate(pk=predecessor_id),
            reason=Certificate.Reason.SUPERSEDED,
            actor=actor,
        )
    except Conflict:  # revoked meanwhile (by the other path, or by a person)
        return False
    return True


def supersede_on_first_use(*, certificate_id: int, predecessor_id: int) -> bool:
    """The renewed certificate ``certificate_id`` was used: revoke what it renewed."""
    successor = Certificate.objects.get(pk=certificate_id)
    return _supersede(predecessor_id, Actor.certificate(successor))


def supersede_due(now: datetime | None = None) -> list[int]:
    """Revoke, as superseded, every active certificate whose renewal was issued more than
    ``KEYLINE_EST_SUPERSEDE_GRACE_HOURS`` ago. Returns their ids."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.KEYLINE_EST_SUPERSEDE_GRACE_HOURS)
    due = list(
        Certificate.objects.filter(
            status=Certificate.Status.ACTIVE,
            renewal_requests__status=CertificateRequest.Status.ISSUED,
            renewal_requests__decided_at__lte=cutoff,
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    actor = Actor.system("EST: the grace period after a renewal is over")
    return [pk for pk in due if _supersede(pk, actor)]
