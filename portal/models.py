"""Firms, their participants (traders and API services) and the tamper-evident audit log."""

import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from portal.lei import validate_lei

TRADER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")


class Firm(models.Model):
    class Role(models.TextChoices):
        CLIENT = "client", _("Client (liquidity seeker)")
        LIQUIDITY_PROVIDER = "liquidity_provider", _("Liquidity provider")
        BOTH = "both", _("Client and liquidity provider")

    class Status(models.TextChoices):
        APPLIED = "applied", _("Applied")
        UNDER_REVIEW = "under_review", _("Under review")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")
        SUSPENDED = "suspended", _("Suspended")
        OFFBOARDED = "offboarded", _("Offboarded")

    legal_name = models.CharField(max_length=200)
    lei = models.CharField("LEI", max_length=20, unique=True, validators=[validate_lei])
    jurisdiction = models.CharField(
        max_length=2,
        validators=[RegexValidator(r"^[A-Z]{2}$", "ISO 3166-1 alpha-2 country code")],
    )
    role = models.CharField(max_length=24, choices=Role.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.APPLIED)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    contact_phone = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["legal_name"]

    def __str__(self) -> str:
        return f"{self.legal_name} ({self.lei})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.APPROVED

    @property
    def provides_liquidity(self) -> bool:
        return self.role in (self.Role.LIQUIDITY_PROVIDER, self.Role.BOTH)

    @property
    def requests_quotes(self) -> bool:
        return self.role in (self.Role.CLIENT, self.Role.BOTH)


class Participant(models.Model):
    """A trader or API service of one firm. The trader id is stable and appears in the
    certificate's SAN URI, so it never changes once a certificate has been issued."""

    class Role(models.TextChoices):
        REQUESTER = "requester", _("Requester")
        LIQUIDITY_PROVIDER = "liquidity_provider", _("Liquidity provider")

    firm = models.ForeignKey(Firm, on_delete=models.PROTECT, related_name="participants")
    trader_id = models.CharField(
        max_length=63,
        unique=True,
        validators=[
            RegexValidator(
                TRADER_ID_RE,
                "2-63 characters: lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter or digit.",
            )
        ],
    )
    name = models.CharField(max_length=200)
    email = models.EmailField()
    role = models.CharField(max_length=24, choices=Role.choices)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["trader_id"]

    def __str__(self) -> str:
        return self.trader_id

    def clean(self) -> None:
        if self.role == self.Role.LIQUIDITY_PROVIDER and not self.firm.provides_liquidity:
            raise ValidationError({"role": "This firm is not a liquidity provider."})
        if self.role == self.Role.REQUESTER and not self.firm.requests_quotes:
            raise ValidationError({"role": "This firm does not request quotes."})

    @property
    def san_uri(self) -> str:
        return f"urn:keyline:firm:{self.firm.lei}:trader:{self.trader_id}"

    @property
    def can_hold_certificate(self) -> bool:
        return self.is_active and self.firm.is_active


class AuditRecord(models.Model):
    """One append-only entry of the security audit log.

    Each record carries the SHA-256 of its canonical content including the previous record's
    hash, so an edited, inserted or deleted row breaks the chain (``manage.py verify_audit``).
    Database triggers refuse UPDATE and DELETE (migration 0002); the chain catches what a
    privileged attacker does after dropping them.
    """

    class ActorType(models.TextChoices):
        USER = "user", _("User")
        CERTIFICATE = "certificate", _("Certificate")
        SYSTEM = "system", _("System")
        ANONYMOUS = "anonymous", _("Anonymous")

    sequence = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    event = models.CharField(max_length=64, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=128, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=128, blank=True, db_index=True)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["sequence"]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event}"


class AuditHead(models.Model):
    """A single row holding the chain's tip; locked FOR UPDATE by every append so that two
    concurrent transactions cannot both extend the same predecessor."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"audit head #{self.sequence}"


# --- onboarding ---------------------------------------------------------------------------------


class Application(models.Model):
    """A firm's onboarding case: what the applicant sent (on the Firm), the officers' checks,
    and the four-eyes decision. The applicant follows it through a private case link (only the
    hash of its token is stored), where it also enters the call-back code."""

    firm = models.OneToOneField(Firm, on_delete=models.PROTECT, related_name="application")
    token_hash = models.CharField(max_length=64, unique=True)
    submitted_at = models.DateTimeField(auto_now_add=True)
    prepared_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    prepared_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"Application of {self.firm}"


class VerificationCheck(models.Model):
    """One out-of-band check an officer ran, with its evidence, who and when."""

    class Kind(models.TextChoices):
        LEI_REGISTRY = "lei_registry", _("LEI record checked against the registry (GLEIF)")
        DOCUMENTS = "documents", _("Documents reviewed")
        SANCTIONS = "sanctions", _("Sanctions screening")
        CALLBACK = "callback", _("Call-back to an independently sourced number")

    class Outcome(models.TextChoices):
        PASSED = "passed", _("Passed")
        FAILED = "failed", _("Failed")

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="checks")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    evidence = models.TextField(help_text="What was checked, where, and what it showed.")
    performed_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    performed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["performed_at"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.outcome}"


class Document(models.Model):
    """A document kept with the case. Stored under ``KEYLINE_DOCUMENTS_DIR`` by SHA-256, never
    served from a public path."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="documents")
    title = models.CharField(max_length=200)
    filename = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    uploaded_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["uploaded_at"]

    def __str__(self) -> str:
        return self.title


class CallbackChallenge(models.Model):
    """The call-back: the officer dials a number it sourced itself (not the application's),
    reads out a one-time code, and the contact enters it on the case page. Only a hash of the
    code is kept; it expires and allows a few attempts."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="callbacks")
    phone_dialled = models.CharField(max_length=40)
    phone_source = models.CharField(max_length=300, help_text="Where the number came from.")
    code_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Call-back {self.pk} for {self.application_id}"


class PortalAccount(models.Model):
    """A firm user's link to its firm: an administrator, or a trader tied to its participant."""

    class Role(models.TextChoices):
        ADMIN = "admin", _("Firm administrator")
        TRADER = "trader", _("Trader")

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="portal")
    firm = models.ForeignKey(Firm, on_delete=models.PROTECT, related_name="accounts")
    role = models.CharField(max_length=8, choices=Role.choices)
    participant = models.OneToOneField(
        Participant, null=True, blank=True, on_delete=models.PROTECT, related_name="account"
    )

    def __str__(self) -> str:
        return f"{self.user} ({self.role} of {self.firm_id})"


class Invitation(models.Model):
    """A single-use, expiring link to create a portal account (only the token's hash kept)."""

    firm = models.ForeignKey(Firm, on_delete=models.PROTECT, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=8, choices=PortalAccount.Role.choices)
    participant = models.ForeignKey(
        Participant, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Invitation for {self.email} ({self.role})"


class ExpiryReminder(models.Model):
    """One reminder per certificate and threshold, ever: the unique constraint is what makes
    the daily task exactly-once (it claims the row, sends, and marks it sent, in one
    transaction)."""

    certificate = models.ForeignKey(
        "pki.Certificate", on_delete=models.CASCADE, related_name="expiry_reminders"
    )
    days_before = models.PositiveSmallIntegerField()
    recipients = models.JSONField(default=list)
    sent_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["certificate", "days_before"], name="portal_reminder_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.certificate_id} -{self.days_before}d"
