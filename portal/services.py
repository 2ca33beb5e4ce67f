"""Onboarding services: applications, out-of-band checks, four-eyes decisions, invitations,
firm users, CSR decisions, downloads, revocation, suspension.

Every rule is enforced here (views only hide buttons): who may act, in which state, the four
eyes. Each entry point is one transaction that writes its audit record with the acting user;
e-mail goes out after the commit.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.files.uploadedfile import UploadedFile
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from kernel.audit import Actor, audit_record
from kernel.errors import Conflict, Invalid, NotFound, PermissionDenied
from kernel.impact import Impact, firm_stop_impacts
from kernel.models import Firm, Participant
from pki import est
from pki import services as pki_services
from pki.keystore import atomic_write
from pki.models import Certificate, CertificateRequest, EnrollmentToken, EstPolicy
from pki.revocation import certificate_revoke, certificates_revoke_for_firm
from pki.selectors import ca_get_active
from pki.signing import certificate_issue_queued
from portal.models import (
    Application,
    CallbackChallenge,
    Document,
    Invitation,
    PortalAccount,
    VerificationCheck,
)

INVITATION_DAYS = 7
CALLBACK_MINUTES = 30
CALLBACK_ATTEMPTS = 5
REQUIRED_CHECKS = {k for k, _ in VerificationCheck.Kind.choices}
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
DOCUMENT_TYPES = {
    "application/pdf": b"%PDF-",
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
}


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a case or invitation token is kept: the token itself
    never is. Raises nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def _mail(subject: str, body: str, to: list[str]) -> None:
    transaction.on_commit(
        lambda: send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to, fail_silently=False)
    )


def portal_url(path: str) -> str:
    """An absolute link into the portal, at its public address (KEYLINE_PORTAL_URL).
    Raises nothing."""
    return settings.KEYLINE_PORTAL_URL.rstrip("/") + path


# --- the applicant -------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def application_submit(*, fields: dict[str, Any], actor: Actor) -> tuple[Application, str]:
    """A firm applies. Returns the application and the case token (shown once and e-mailed).

    The firm (``applied``), its application and the audit record commit together, in a
    transaction of its own (durable); the e-mail goes out after the commit, and only a hash of
    the token is stored. Raises ``django.core.exceptions.ValidationError`` for what the firm
    model refuses (an invalid or already registered LEI, a bad country code, ...)."""
    firm = Firm(status=Firm.Status.APPLIED, **fields)
    firm.full_clean()
    firm.save()
    token, hashed = _new_token()
    application = Application.objects.create(firm=firm, token_hash=hashed)
    audit_record(event="application.submitted", actor=actor, target=firm, lei=firm.lei)
    _mail(
        f"Keyline RFQ: your application for {firm.legal_name}",
        "We have your application. Follow it, and enter the call-back code when an officer "
        f"calls you, at:\n\n{portal_url(f'/apply/case/{token}/')}\n\nKeep this link private.",
        [firm.contact_email],
    )
    return application, token


def application_by_token(token: str) -> Application:
    """The application this case token opens, with its firm. Raises ``NotFound``
    (``APPLICATION_NOT_FOUND``) for any other token."""
    application = (
        Application.objects.select_related("firm").filter(token_hash=token_hash(token)).first()
    )
    if application is None:
        raise NotFound("APPLICATION_NOT_FOUND", "No such application.")
    return application


@transaction.atomic(durable=True)
def callback_confirm(*, token: str, code: str) -> CallbackChallenge:
    """The contact enters the code the officer read out on the phone.

    Returns the challenge, confirmed if the code matched (compared in constant time, as hashes);
    a wrong code is counted and audited, and the challenge stays unconfirmed. Raises
    ``NotFound`` (``APPLICATION_NOT_FOUND``), ``Conflict`` (``CALLBACK_NOT_PENDING``: no
    unexpired code waiting; ``CALLBACK_LOCKED``: ``CALLBACK_ATTEMPTS`` wrong codes)."""
    application = application_by_token(token)
    challenge = (
        CallbackChallenge.objects.select_for_update()
        .filter(application=application, confirmed_at__isnull=True)
        .first()
    )
    actor = Actor.anonymous(f"applicant {application.firm.lei}")
    if challenge is None or challenge.expires_at <= timezone.now():
        raise Conflict(
            "CALLBACK_NOT_PENDING", "There is no call-back code waiting; ask the officer."
        )
    if challenge.attempts >= CALLBACK_ATTEMPTS:
        raise Conflict("CALLBACK_LOCKED", "Too many wrong codes; the officer must call again.")
    challenge.attempts += 1
    if not hmac.compare_digest(token_hash(code.strip()), challenge.code_hash):
        challenge.save(update_fields=["attempts"])
        audit_record(event="callback.code_wrong", actor=actor, target=challenge)
        return challenge  # not confirmed: the view says so (the attempt counts)
    challenge.confirmed_at = timezone.now()
    challenge.save(update_fields=["attempts", "confirmed_at"])
    audit_record(event="callback.confirmed", actor=actor, target=challenge)
    return challenge


# --- officers ------------------------------------------------------------------------------------


def _officer(user: User | AnonymousUser) -> tuple[User, Actor]:
    """The acting officer and its audit actor; anyone else is refused."""
    if not (user.is_authenticated and user.is_staff):
        raise PermissionDenied("OFFICER_REQUIRED", "Only compliance officers may do this.")
    return user, Actor.user(user)


def _locked_application(application_id: int) -> Application:
    application = (
        Application.objects.select_for_update()
        .select_related("firm")
        .filter(pk=application_id)
        .first()
    )
    if application is None:
        raise NotFound("APPLICATION_NOT_FOUND", "No such application.")
    return application


_REVIEWABLE = {Firm.Status.APPLIED, Firm.Status.UNDER_REVIEW}


def _require_in_review(application: Application) -> None:
    """Checks, documents and call-backs belong to the case before it is submitted: after that
    the second officer decides on exactly what was prepared."""
    if application.firm.status not in _REVIEWABLE or application.prepared_at:
        raise Conflict(
            "APPLICATION_NOT_IN_REVIEW", "The case can change only before it is submitted."
        )


@transaction.atomic(durable=True)
def check_record(
    *, application_id: int, kind: str, outcome: str, evidence: str, user: User | AnonymousUser
) -> VerificationCheck:
    """An officer records one out-of-band check and its evidence; the first work on a case
    moves the firm to ``under_review``. The check and its audit record commit together.

    Raises ``PermissionDenied`` (``OFFICER_REQUIRED``), ``NotFound``
    (``APPLICATION_NOT_FOUND``), ``Conflict`` (``APPLICATION_NOT_IN_REVIEW``: submitted or
    decided; ``CALLBACK_NOT_CONFIRMED``: a call-back check before the contact entered the
    code), ``Invalid`` (``EVIDENCE_REQUIRED``)."""
    officer, actor = _officer(user)
    application = _locked_application(application_id)
    _require_in_review(application)
    if (
        kind == VerificationCheck.Kind.CALLBACK
        and not application.callbacks.filter(confirmed_at__isnull=False).exists()
    ):
        raise Conflict(
            "CALLBACK_NOT_CONFIRMED",
            "Record the call-back only after the contact has entered the code.",
        )
    if not evidence.strip():
        raise Invalid("EVIDENCE_REQUIRED", "Describe the evidence.")
    _start_review(application, actor)
    check = VerificationCheck.objects.create(
        application=application,
        kind=kind,
        outcome=outcome,
        evidence=evidence,
        performed_by=officer,
    )
    audit_record(
        event="verification.recorded",
        actor=actor,
        target=application.firm,
        kind=kind,
        outcome=outcome,
    )
    return check


def _start_review(application: Application, actor: Actor) -> None:
    if application.firm.status == Firm.Status.APPLIED:
        Firm.objects.filter(pk=application.firm_id).update(status=Firm.Status.UNDER_REVIEW)
        application.firm.status = Firm.Status.UNDER_REVIEW
        audit_record(event="application.review_started", actor=actor, target=application.firm)


@transaction.atomic(durable=True)
def document_add(
    *, application_id: int, title: str, upload: "UploadedFile[bytes]", user: User | AnonymousUser
) -> Document:
    """Keep an uploaded document with the case (PDF, PNG or JPEG; at most 10 MB; the content
    is checked, not the name).

    The file is stored under its SHA-256 (mode 0600, outside any public path) before the row
    and its audit record commit. Raises ``PermissionDenied`` (``OFFICER_REQUIRED``),
    ``NotFound`` (``APPLICATION_NOT_FOUND``), ``Conflict`` (``APPLICATION_NOT_IN_REVIEW``),
    ``Invalid`` (``DOCUMENT_TOO_LARGE``, ``DOCUMENT_TYPE``), ``OSError`` for the file."""
    officer, actor = _officer(user)
    application = _locked_application(application_id)
    _require_in_review(application)
    if (upload.size or 0) > MAX_DOCUMENT_BYTES:  # unknown size: the read below bounds it
        raise Invalid("DOCUMENT_TOO_LARGE", "Documents are limited to 10 MB.")
    data = upload.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise Invalid("DOCUMENT_TOO_LARGE", "Documents are limited to 10 MB.")
    content_type = next((t for t, magic in DOCUMENT_TYPES.items() if data.startswith(magic)), None)
    if content_type is None:
        raise Invalid("DOCUMENT_TYPE", "Upload a PDF, PNG or JPEG file.")
    digest = hashlib.sha256(data).hexdigest()
    directory = Path(settings.KEYLINE_DOCUMENTS_DIR)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(directory / digest, data, mode=0o600)
    _start_review(application, actor)
    document = Document.objects.create(
        application=application,
        title=title[:200],
        filename=Path(upload.name or "document").name[:200],
        content_type=content_type,
        size=len(data),
        sha256=digest,
        uploaded_by=officer,
    )
    audit_record(
        event="document.added", actor=actor, target=application.firm, sha256=digest, size=len(data)
    )
    return document


def document_read(document: Document) -> bytes:
    """The stored bytes of ``document``; who may read it is the caller's check (the officer
    views). Raises ``OSError`` when its file is missing or unreadable."""
    return (Path(settings.KEYLINE_DOCUMENTS_DIR) / document.sha256).read_bytes()


def _national_digits(phone: str) -> str:
    """The digits of a phone number without its international prefix ("+", "00") or trunk
    zero ("0", "(0)"): what every spelling of the number ends with."""
    return "".join(c for c in phone.replace("(0)", "") if c.isdigit()).lstrip("0")


def _same_phone(a: str, b: str) -> bool:
    """Whether two spellings name one number: "+44 20 7946 0999", "0044-20-7946-0999",
    "020 7946 0999" and "+44 (0)20 7946 0999" do."""
    short, long = sorted((_national_digits(a), _national_digits(b)), key=len)
    # The longer may carry a country code (1-3 digits) that the national spelling lacks.
    return short == long or (
        len(short) >= 7 and len(long) - len(short) <= 3 and long.endswith(short)
    )


@transaction.atomic(durable=True)
def callback_start(
    *, application_id: int, phone: str, source: str, user: User | AnonymousUser
) -> str:
    """Start a call-back; returns the one-time code for the officer to read out. The number
    must not be the one on the application: the point is a number sourced independently.

    Any code still waiting for this case expires; only the new code's hash is kept, valid for
    ``CALLBACK_MINUTES``. Raises ``PermissionDenied`` (``OFFICER_REQUIRED``), ``NotFound``
    (``APPLICATION_NOT_FOUND``), ``Conflict`` (``APPLICATION_NOT_IN_REVIEW``), ``Invalid``
    (``PHONE_INVALID``, ``PHONE_NOT_INDEPENDENT``, ``PHONE_SOURCE_REQUIRED``)."""
    officer, actor = _officer(user)
    application = _locked_application(application_id)
    _require_in_review(application)
    digits = "".join(c for c in phone if c.isdigit())
    if len(digits) < 6:
        raise Invalid("PHONE_INVALID", "Enter the full number you dialled.")
    if _same_phone(phone, application.firm.contact_phone):
        raise Invalid(
            "PHONE_NOT_INDEPENDENT",
            "Call a number you sourced yourself (registry, website, filing), "
            "not the one on the application.",
        )
    if not source.strip():
        raise Invalid("PHONE_SOURCE_REQUIRED", "Say where the number came from.")
    _start_review(application, actor)
    CallbackChallenge.objects.filter(application=application, confirmed_at__isnull=True).update(
        expires_at=timezone.now()
    )
    code = f"{secrets.randbelow(10**6):06d}"
    CallbackChallenge.objects.create(
        application=application,
        phone_dialled=phone,
        phone_source=source,
        code_hash=token_hash(code),
        created_by=officer,
        expires_at=timezone.now() + timedelta(minutes=CALLBACK_MINUTES),
    )
    audit_record(
        event="callback.started", actor=actor, target=application.firm, phone=phone, source=source
    )
    return code


@transaction.atomic(durable=True)
def application_prepare(*, application_id: int, user: User | AnonymousUser) -> Application:
    """The preparing officer submits the case for a second officer's decision.

    Only once every required check has passed; the case then takes no more checks, documents
    or call-backs. Raises ``PermissionDenied`` (``OFFICER_REQUIRED``), ``NotFound``
    (``APPLICATION_NOT_FOUND``), ``Conflict`` (``APPLICATION_NOT_IN_REVIEW``;
    ``CHECKS_MISSING``, naming the missing kinds)."""
    officer, actor = _officer(user)
    application = _locked_application(application_id)
    if application.firm.status != Firm.Status.UNDER_REVIEW or application.prepared_at:
        raise Conflict("APPLICATION_NOT_IN_REVIEW", "This case is not being reviewed.")
    passed = set(
        application.checks.filter(outcome=VerificationCheck.Outcome.PASSED).values_list(
            "kind", flat=True
        )
    )
    missing = sorted(REQUIRED_CHECKS - passed)
    if missing:
        raise Conflict("CHECKS_MISSING", "Every check must pass first.", {"missing": missing})
    application.prepared_by, application.prepared_at = officer, timezone.now()
    application.save(update_fields=["prepared_by", "prepared_at"])
    audit_record(event="application.prepared", actor=actor, target=application.firm)
    return application


def took_part(application: Application, user: User) -> bool:
    """Whether the officer prepared the case or contributed to it (a check, a document, a
    call-back): four eyes means the decision comes from someone who did none of these.
    Reads only; raises nothing."""
    return (
        application.prepared_by_id == user.pk
        or application.checks.filter(performed_by=user).exists()
        or application.documents.filter(uploaded_by=user).exists()
        or application.callbacks.filter(created_by=user).exists()
    )


@transaction.atomic(durable=True)
def application_decide(
    *, application_id: int, approve: bool, reason: str, user: User | AnonymousUser
) -> Application:
    """Four eyes: a second officer approves or rejects a prepared case, with a reason.
    Approval activates the firm and invites its administrator (the contact).

    The decision, the firm's status, the audit record and the invitation commit together; the
    e-mails go out after the commit. Raises ``PermissionDenied`` (``OFFICER_REQUIRED``;
    ``FOUR_EYES`` for an officer who took part), ``NotFound`` (``APPLICATION_NOT_FOUND``),
    ``Conflict`` (``APPLICATION_NOT_PREPARED``: not submitted, or already decided),
    ``Invalid`` (``REASON_REQUIRED``)."""
    officer, actor = _officer(user)
    application = _locked_application(application_id)
    if application.prepared_at is None or application.decided_at is not None:
        raise Conflict(
            "APPLICATION_NOT_PREPARED", "Only a prepared, undecided case can be decided."
        )
    if took_part(application, officer):
        raise PermissionDenied(
            "FOUR_EYES", "An officer who prepared or worked on this case cannot decide it."
        )
    if not reason.strip():
        raise Invalid("REASON_REQUIRED", "Give the reason for the decision.")
    prepared_by = application.prepared_by
    if prepared_by is None:  # never: application_prepare sets it with prepared_at
        raise Conflict(
            "APPLICATION_NOT_PREPARED", "Only a prepared, undecided case can be decided."
        )
    firm = application.firm
    application.decided_by, application.decided_at = officer, timezone.now()
    application.decision_reason = reason
    application.save(update_fields=["decided_by", "decided_at", "decision_reason"])
    firm.status = Firm.Status.APPROVED if approve else Firm.Status.REJECTED
    firm.save(update_fields=["status", "updated_at"])
    audit_record(
        event="application.approved" if approve else "application.rejected",
        actor=actor,
        target=firm,
        reason=reason,
        prepared_by=prepared_by.get_username(),
    )
    if approve:
        _invite(firm=firm, email=firm.contact_email, role=PortalAccount.Role.ADMIN, actor=actor)
    else:
        _mail(
            f"Keyline RFQ: application of {firm.legal_name}",
            f"Your application was not approved. Reason: {reason}",
            [firm.contact_email],
        )
    return application


def _invite(
    *, firm: Firm, email: str, role: str, actor: Actor, participant: Participant | None = None
) -> Invitation:
    token, hashed = _new_token()
    invitation = Invitation.objects.create(
        firm=firm,
        email=email,
        role=role,
        participant=participant,
        token_hash=hashed,
        created_by=actor.label,
        expires_at=timezone.now() + timedelta(days=INVITATION_DAYS),
    )
    audit_record(event="invitation.sent", actor=actor, target=invitation, email=email, role=role)
    _mail(
        f"Keyline RFQ: your {firm.legal_name} account",
        f"Create your account (the link works once, for {INVITATION_DAYS} days):\n\n"
        f"{portal_url(f'/invite/{token}/')}",
        [email],
    )
    return invitation


@dataclass(frozen=True)
class FirmStopPreview:
    """What suspending or offboarding a firm would do now (:func:`firm_stop_preview`)."""

    firm: Firm
    certificates: list[Certificate]  # revoked
    users: int  # portal accounts disabled
    participants: int  # disabled
    impacts: list[Impact]  # what the trading apps would close


def firm_stop_preview(*, firm_id: int, user: User | AnonymousUser) -> FirmStopPreview:
    """Reads only. Raises what :func:`firm_suspend` raises before it changes anything:
    ``PermissionDenied`` (``OFFICER_REQUIRED``), ``NotFound`` (``FIRM_NOT_FOUND``),
    ``Conflict`` (``FIRM_NOT_ACTIVE``)."""
    _officer(user)
    firm = Firm.objects.filter(pk=firm_id).first()
    if firm is None:
        raise NotFound("FIRM_NOT_FOUND", "No such firm.")
    if firm.status not in (Firm.Status.APPROVED, Firm.Status.SUSPENDED):
        raise Conflict("FIRM_NOT_ACTIVE", f"The firm is {firm.get_status_display().lower()}.")
    certificates = list(
        # What certificates_revoke_for_firm will revoke.
        Certificate.objects.filter(participant__firm=firm)
        .revocable()
        .select_related("participant")
        .order_by("participant__trader_id", "not_after")
    )
    return FirmStopPreview(
        firm=firm,
        certificates=certificates,
        users=User.objects.filter(portal__firm=firm, is_active=True).count(),
        participants=Participant.objects.filter(firm=firm, is_active=True).count(),
        impacts=firm_stop_impacts(firm.pk),
    )


def firm_suspend(*, firm_id: int, offboard: bool, reason: str, user: User | AnonymousUser) -> Firm:
    """Suspend or offboard a firm: its users are disabled and every live certificate revoked.

    Two transactions: the status change (after which the API already refuses the firm's
    certificates, the trust decision checks the firm) and then the revocations, which publish
    CRLs and OCSP. Running it again on a suspended firm revokes whatever is still live.

    Raises ``PermissionDenied`` (``OFFICER_REQUIRED``), ``Invalid`` (``REASON_REQUIRED``),
    ``NotFound`` (``FIRM_NOT_FOUND``), ``Conflict`` (``FIRM_NOT_ACTIVE``: neither approved nor
    suspended), all before anything changes; an error of the revocations comes after the
    status change committed (running it again completes them)."""
    _, actor = _officer(user)
    if not reason.strip():
        raise Invalid("REASON_REQUIRED", "Give the reason.")
    with transaction.atomic(durable=True):
        firm = Firm.objects.select_for_update().filter(pk=firm_id).first()
        if firm is None:
            raise NotFound("FIRM_NOT_FOUND", "No such firm.")
        if firm.status not in (Firm.Status.APPROVED, Firm.Status.SUSPENDED):
            raise Conflict("FIRM_NOT_ACTIVE", f"The firm is {firm.get_status_display().lower()}.")
        firm.status = Firm.Status.OFFBOARDED if offboard else Firm.Status.SUSPENDED
        firm.save(update_fields=["status", "updated_at"])
        User.objects.filter(portal__firm=firm).update(is_active=False)
        Participant.objects.filter(firm=firm).update(is_active=False)
        audit_record(
            event="firm.offboarded" if offboard else "firm.suspended",
            actor=actor,
            target=firm,
            reason=reason,
        )
    certificates_revoke_for_firm(
        firm=firm,
        reason="cessationOfOperation" if offboard else "affiliationChanged",
        actor=actor,
    )
    return firm


# --- firm users ------------------------------------------------------------------------------


def invitation_get(token: str) -> Invitation:
    """The invitation this token opens: unused, unexpired, for a firm that is still active.
    Raises ``NotFound`` (``INVITATION_INVALID``) otherwise, without saying which."""
    invitation = (
        Invitation.objects.select_related("firm").filter(token_hash=token_hash(token)).first()
    )
    if (
        invitation is None
        or invitation.used_at
        or invitation.expires_at <= timezone.now()
        # A suspended or offboarded firm's pending invitations die with its accounts.
        or not invitation.firm.is_active
    ):
        raise NotFound("INVITATION_INVALID", "This invitation is not valid (used or expired).")
    return invitation


@transaction.atomic(durable=True)
def invitation_accept(*, token: str, username: str, password: str) -> User:
    """Create the invited account; the link works once.

    The user, its portal account (tied to the participant, for a trader), the invitation's
    use and the audit record commit together; a concurrent second use waits, then is refused.
    Raises ``NotFound`` (``INVITATION_INVALID``), ``Conflict`` (``USERNAME_TAKEN``, compared
    without case)."""
    invitation = invitation_get(token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.used_at:
        raise NotFound("INVITATION_INVALID", "This invitation is not valid (used or expired).")
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict("USERNAME_TAKEN", "Choose another user name.")
    user = User.objects.create_user(username=username, email=invitation.email, password=password)
    PortalAccount.objects.create(
        user=user, firm=invitation.firm, role=invitation.role, participant=invitation.participant
    )
    invitation.used_at = timezone.now()
    invitation.save(update_fields=["used_at"])
    audit_record(
        event="invitation.accepted", actor=Actor.user(user), target=invitation, role=invitation.role
    )
    return user


def account_of(user: User | AnonymousUser) -> PortalAccount:
    """The portal account of a signed-in user of an active firm. Raises ``PermissionDenied``
    (``FIRM_USER_REQUIRED``) for anyone else: anonymous, a user without a firm (an officer),
    a user of a suspended or offboarded firm."""
    account: PortalAccount | None = getattr(user, "portal", None) if user.is_authenticated else None
    if account is None or not account.firm.is_active:
        raise PermissionDenied("FIRM_USER_REQUIRED", "Sign in as a user of an approved firm.")
    return account


def participant_for(user: User | AnonymousUser, participant_id: int) -> Participant:
    """A participant the user may act for: any of its firm's (administrator) or its own
    (trader). Another firm's participant does not exist for it (404).

    Raises ``PermissionDenied`` (``FIRM_USER_REQUIRED``), ``NotFound``
    (``PARTICIPANT_NOT_FOUND``)."""
    account = account_of(user)
    participant = (
        Participant.objects.select_related("firm")
        .filter(pk=participant_id, firm=account.firm)
        .first()
    )
    if participant is None or (
        account.role == PortalAccount.Role.TRADER and account.participant_id != participant.pk
    ):
        raise NotFound("PARTICIPANT_NOT_FOUND", "No such participant.")
    return participant


@transaction.atomic(durable=True)
def participant_add(
    *, user: User | AnonymousUser, trader_id: str, name: str, email: str, role: str
) -> Participant:
    """A firm administrator adds a trader (as the firm's role allows) and invites it.

    The participant, its invitation and their audit records commit together; the e-mail goes
    out after the commit. Raises ``PermissionDenied`` (``FIRM_USER_REQUIRED``,
    ``FIRM_ADMIN_REQUIRED``), ``django.core.exceptions.ValidationError`` for what the
    participant model refuses (a malformed or taken trader id, a role the firm may not have)."""
    account = account_of(user)
    if account.role != PortalAccount.Role.ADMIN:
        raise PermissionDenied(
            "FIRM_ADMIN_REQUIRED", "Only the firm's administrators add participants."
        )
    actor = Actor.user(user)
    participant = Participant(
        firm=account.firm, trader_id=trader_id, name=name, email=email, role=role
    )
    participant.full_clean()
    participant.save()
    audit_record(
        event="participant.added", actor=actor, target=participant, trader_id=trader_id, role=role
    )
    _invite(
        firm=account.firm,
        email=email,
        role=PortalAccount.Role.TRADER,
        actor=actor,
        participant=participant,
    )
    return participant


def csr_upload(
    *, user: User | AnonymousUser, participant_id: int, data: bytes
) -> CertificateRequest | Certificate:
    """Submit a CSR for a participant. Signed at once when the firm is approved and
    ``KEYLINE_AUTO_SIGN`` allows it; otherwise it waits for an officer's decision.

    Raises ``PermissionDenied`` (``FIRM_USER_REQUIRED``), ``NotFound``
    (``PARTICIPANT_NOT_FOUND``), :class:`pki.csr.CsrRejected` and
    :class:`pki.csr.CsrKeyRejected` (nothing stored but the audit record). When auto-signing
    fails, its error (what ``pki.services.certificate_issue`` raises) is raised, and the
    request stays stored as that left it (pending, for an officer, unless it was rejected)."""
    participant = participant_for(user, participant_id)
    actor = Actor.user(user)
    request = pki_services.csr_submit(participant=participant, data=data, actor=actor)
    if settings.KEYLINE_AUTO_SIGN and participant.firm.is_active:
        with transaction.atomic():
            audit_record(
                event="csr.auto_sign_decided",
                actor=Actor.system("KEYLINE_AUTO_SIGN"),
                target=request,
            )
        signed = certificate_issue_queued(request=request, actor=Actor.system("auto-sign"))
        return signed if signed is not None else request
    return request


def csr_decide(
    *, user: User | AnonymousUser, request_id: int, approve: bool, reason: str = ""
) -> CertificateRequest | Certificate:
    """An officer signs or rejects a pending CSR.

    Signing is done by the signing worker (``pki.signing``): it returns the certificate, or
    the request still submitted when the worker has not answered within seconds (it signs it
    when it gets to it); rejecting returns the request, rejected with the reason and audited.
    Raises ``PermissionDenied`` (``OFFICER_REQUIRED``), ``NotFound`` (``CSR_NOT_FOUND``),
    ``Conflict`` (``CSR_NOT_PENDING``, also when decided meanwhile; a rejection code when the
    worker rejected the key), ``Invalid`` (``REASON_REQUIRED``, to reject), and without a
    broker what ``certificate_issue`` raises."""
    _, actor = _officer(user)
    request = (
        CertificateRequest.objects.select_related("participant__firm").filter(pk=request_id).first()
    )
    if request is None:
        raise NotFound("CSR_NOT_FOUND", "No such request.")
    if request.status != CertificateRequest.Status.SUBMITTED:
        raise Conflict("CSR_NOT_PENDING", f"This request is {request.status}.")
    if approve:
        signed = certificate_issue_queued(request=request, actor=actor)
        return signed if signed is not None else request
    if not reason.strip():
        raise Invalid("REASON_REQUIRED", "Give the reason.")
    with transaction.atomic():
        updated = CertificateRequest.objects.filter(
            pk=request.pk, status=CertificateRequest.Status.SUBMITTED
        ).update(
            status=CertificateRequest.Status.REJECTED,
            rejection_code="OFFICER_REJECTED",
            rejection_reason=reason,
            decided_by=actor.label,
            decided_at=timezone.now(),
        )
        if not updated:
            raise Conflict("CSR_NOT_PENDING", "This request was decided meanwhile.")
        audit_record(event="csr.rejected_by_officer", actor=actor, target=request, reason=reason)
    request.refresh_from_db()
    return request


def certificate_for(user: User | AnonymousUser, certificate_id: int) -> Certificate:
    """A client certificate the user may see: officers any; firm users their firm's (a
    trader its own). Otherwise 404.

    Raises ``NotFound`` (``CERTIFICATE_NOT_FOUND``), and ``PermissionDenied``
    (``FIRM_USER_REQUIRED``) for an existing certificate asked for by someone who is neither
    an officer nor a user of an active firm."""
    certificate = (
        Certificate.objects.select_related("participant__firm", "issuer")
        .filter(pk=certificate_id, kind=Certificate.Kind.CLIENT)
        .first()
    )
    if certificate is None:
        raise NotFound("CERTIFICATE_NOT_FOUND", "No such certificate.")
    if user.is_authenticated and user.is_staff:
        return certificate
    account = account_of(user)
    participant = certificate.participant  # a client certificate always has one
    if (
        participant is None
        or participant.firm_id != account.firm_id
        or (
            account.role == PortalAccount.Role.TRADER
            and account.participant_id != certificate.participant_id
        )
    ):
        raise NotFound("CERTIFICATE_NOT_FOUND", "No such certificate.")
    return certificate


def certificate_download(
    *, user: User | AnonymousUser, certificate_id: int, kind: str
) -> tuple[str, bytes]:
    """(filename, PEM bytes) of the certificate, its chain, or the CA bundle; audited.

    ``kind`` is ``cert``, ``chain`` (with its issuing CA and the root) or ``ca`` (the root and
    the server CA, for verifying the API). Raises what :func:`certificate_for` raises, and
    ``NotFound`` (``DOWNLOAD_NOT_FOUND`` for another kind; ``CA_NOT_INITIALISED``)."""
    certificate = certificate_for(user, certificate_id)
    if certificate.participant is None:  # never: certificate_for returns client certificates
        raise NotFound("CERTIFICATE_NOT_FOUND", "No such certificate.")
    root = ca_get_active("root")
    trader = certificate.participant.trader_id
    if kind == "cert":
        name, data = f"{trader}.pem", certificate.pem
    elif kind == "chain":
        name, data = (
            f"{trader}-fullchain.pem",
            certificate.pem + certificate.issuer.certificate_pem + root.certificate_pem,
        )
    elif kind == "ca":
        server_ca = ca_get_active("server")
        name, data = "keyline-ca-bundle.pem", root.certificate_pem + server_ca.certificate_pem
    else:
        raise NotFound("DOWNLOAD_NOT_FOUND", "No such download.")
    with transaction.atomic():
        audit_record(
            event="certificate.downloaded", actor=Actor.user(user), target=certificate, kind=kind
        )
    return name, data.encode()


def officer_or_firm_admin_require(user: User | AnonymousUser, does: str = "revoke") -> None:
    """What officers do for any firm and firm administrators for their own (revoke, make
    enrollment tokens); anyone else gets ``PermissionDenied`` (``FIRM_ADMIN_REQUIRED``, or
    ``FIRM_USER_REQUIRED`` from :func:`account_of`)."""
    if not user.is_staff and account_of(user).role != PortalAccount.Role.ADMIN:
        raise PermissionDenied("FIRM_ADMIN_REQUIRED", f"Only the firm's administrators {does}.")


def certificate_revoke_by(
    *, user: User | AnonymousUser, certificate_id: int, reason: str
) -> Certificate:
    """Officers revoke any certificate, firm administrators their firm's.

    Returns the revoked certificate (``pki.revocation.certificate_revoke``: audited, the CRLs
    and OCSP answers follow). Raises what :func:`certificate_for` raises,
    ``PermissionDenied`` (``FIRM_ADMIN_REQUIRED``), ``Invalid`` (``REASON_INVALID``: a reason
    the form does not offer), ``Conflict`` (``CERTIFICATE_ALREADY_REVOKED``)."""
    certificate = certificate_for(user, certificate_id)
    officer_or_firm_admin_require(user)
    allowed = {
        "unspecified",
        "keyCompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
    }
    if reason not in allowed:
        raise Invalid("REASON_INVALID", "Choose a reason from the list.")
    return certificate_revoke(certificate=certificate, reason=reason, actor=Actor.user(user))


# --- EST enrollment tokens and policy ---------------------------------------------------------


def _token_participant(user: User | AnonymousUser, participant_id: int) -> Participant:
    """A participant whose enrollment tokens ``user`` may manage: officers any, a firm
    administrator its firm's. Raises ``NotFound`` (``PARTICIPANT_NOT_FOUND``), and
    ``PermissionDenied`` (``FIRM_ADMIN_REQUIRED``, ``FIRM_USER_REQUIRED``)."""
    officer_or_firm_admin_require(user, "make enrollment tokens")
    if not user.is_staff:
        return participant_for(user, participant_id)
    participant = Participant.objects.select_related("firm").filter(pk=participant_id).first()
    if participant is None:
        raise NotFound("PARTICIPANT_NOT_FOUND", "No such participant.")
    return participant


def enrollment_token_issue(
    *, user: User | AnonymousUser, participant_id: int
) -> tuple[EnrollmentToken, str]:
    """A one-time EST enrollment token for the participant (pki.est): the row and the token,
    to be shown once. Officers for any participant, administrators for their firm's."""
    participant = _token_participant(user, participant_id)
    return est.enrollment_token_create(participant=participant, actor=Actor.user(user))


def enrollment_token_withdraw(*, user: User | AnonymousUser, token_id: int) -> EnrollmentToken:
    """Withdraw an unused token (``EST_TOKEN_NOT_OPEN`` otherwise); the same people as above.
    Raises ``NotFound`` (``EST_TOKEN_NOT_FOUND``) for a token the user may not see."""
    row = EnrollmentToken.objects.select_related("participant").filter(pk=token_id).first()
    if row is None:
        raise NotFound("EST_TOKEN_NOT_FOUND", "No such enrollment token.")
    try:
        _token_participant(user, row.participant_id)
    except NotFound:
        raise NotFound("EST_TOKEN_NOT_FOUND", "No such enrollment token.") from None
    return est.enrollment_token_revoke(token=row, actor=Actor.user(user))


def est_policy_update(*, user: User, firm_id: int, **values: Any) -> EstPolicy:
    """An officer sets the firm's EST policy (audited ``est.policy_changed``)."""
    firm = Firm.objects.filter(pk=firm_id).first()
    if firm is None:
        raise NotFound("FIRM_NOT_FOUND", "No such firm.")
    return est.policy_set(firm=firm, actor=Actor.user(user), **values)


# --- second factors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldFactors:
    user: User
    authenticator_apps: int
    passkeys: list[str]


def firm_user_factors(*, user_id: int) -> HeldFactors:
    """A firm user's second factors (confirmed apps, passkeys by name); officers' are not
    reset from the desk (``USER_NOT_FOUND``)."""
    target = (
        User.objects.filter(pk=user_id, is_staff=False, portal__isnull=False)
        .select_related("portal__firm")
        .first()
    )
    if target is None:
        raise NotFound("USER_NOT_FOUND", "No such firm user.")
    return HeldFactors(
        target,
        TOTPDevice.objects.filter(user=target, confirmed=True).count(),
        list(WebAuthnCredential.objects.filter(user=target).values_list("name", flat=True)),
    )


def second_factors_reset(*, officer: User, user_id: int, reason: str) -> HeldFactors:
    """An officer removes every second factor of a firm user who lost theirs, after checking
    out of band who asks: the user's verified sessions stop being verified, and at the next
    sign-in they set up a new factor. Audited ``second_factor.reset`` with the reason and
    what was removed."""
    held = firm_user_factors(user_id=user_id)
    if not reason.strip():
        raise Invalid("REASON_REQUIRED", "Say why, and how you checked who asked.")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=held.user).delete()
        WebAuthnCredential.objects.filter(user=held.user).delete()
        audit_record(
            event="second_factor.reset",
            actor=Actor.user(officer),
            target=held.user,
            reason=reason.strip(),
            authenticator_apps=held.authenticator_apps,
            passkeys=held.passkeys,
            firm_lei=held.user.portal.firm.lei,
        )
    return held
