"""The onboarding workflow: a firm's application and its checks, documents and call-back,
portal accounts, invitations and expiry reminders. Firms and participants themselves are the
kernel's (kernel.models)."""

from django.db import models
from django.utils.translation import gettext_lazy as _

from kernel.models import Firm, Participant


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
