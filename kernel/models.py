"""Who the venue knows, and what happened: firms, their participants (traders and API
services), and the tamper-evident audit log. Every app builds on these; they depend on no app.

The tables keep the names they had when these models lived in the portal app
(``portal_firm`` …): the move was a change of ownership, not of data."""

import re
from typing import Self

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from kernel.lei import validate_lei

TRADER_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")


class FirmQuerySet(models.QuerySet["Firm"]):
    """Firms by what they may do, chainable: ``Firm.objects.approved()``,
    ``Firm.objects.liquidity_providers()``; the filters :attr:`Firm.is_active` and
    :attr:`Firm.provides_liquidity` state for one firm."""

    def approved(self) -> Self:
        """Firms the venue lets act now (:attr:`Firm.is_active`)."""
        return self.filter(status=Firm.Status.APPROVED)

    def liquidity_providers(self) -> Self:
        """Approved firms whose role lets them quote (:attr:`Firm.provides_liquidity`)."""
        return self.approved().filter(role__in=Firm.LIQUIDITY_ROLES)


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

    # The roles that quote: a liquidity provider, or a firm that is both.
    LIQUIDITY_ROLES = (Role.LIQUIDITY_PROVIDER, Role.BOTH)

    objects = models.Manager.from_queryset(FirmQuerySet)()

    class Meta:
        db_table = "portal_firm"
        ordering = ["legal_name"]

    def __str__(self) -> str:
        return f"{self.legal_name} ({self.lei})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.APPROVED

    @property
    def provides_liquidity(self) -> bool:
        return self.role in self.LIQUIDITY_ROLES

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
        db_table = "portal_participant"
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

    A record is inserted in the action's own transaction, in insertion (``id``) order, without
    its place in the chain; the chainer (``manage.py chain_audit --follow``) then gives each
    committed record, in the order it sees them committed, its ``sequence``, the previous
    record's hash and its own: the SHA-256 of its canonical content and that previous hash, so an
    edited, inserted or deleted row breaks the chain (``manage.py verify_audit``). Database
    triggers refuse DELETE and every UPDATE but that one write of the three chain fields to a
    record that has none (kernel migration 0002); the chain catches what a privileged attacker
    does after dropping them. Until the chainer reaches it a record is protected by the
    triggers alone; that tail and its age are shown by ``verify_audit`` and ``/pki/health/``.
    """

    class ActorType(models.TextChoices):
        USER = "user", _("User")
        CERTIFICATE = "certificate", _("Certificate")
        SYSTEM = "system", _("System")
        ANONYMOUS = "anonymous", _("Anonymous")

    # Null until chained.
    sequence = models.PositiveBigIntegerField(unique=True, null=True, blank=True)
    created_at = models.DateTimeField()
    event = models.CharField(max_length=64, db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=128, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=128, blank=True, db_index=True)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64, null=True, blank=True)
    hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    # When the chainer reached it (chained_at - created_at is the chain's lag); not hashed.
    chained_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "portal_auditrecord"
        ordering = ["id"]
        indexes = [
            # The chainer's work list: the records not chained yet, in insertion order.
            models.Index(
                fields=["id"], condition=models.Q(hash__isnull=True), name="audit_unchained_idx"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.sequence or '-'} {self.event}"

    @property
    def chained(self) -> bool:
        return self.hash is not None


class AuditCheck(models.Model):
    """One verification of the audit chain (``verify_audit``, the hourly task, an officer's
    "Verify now"), kept so that the audit pages show the chain's state without recomputing
    it: when, by whom, and what it found."""

    checked_at = models.DateTimeField()
    by = models.CharField(max_length=200)
    ok = models.BooleanField()
    # Records are checked from #1 in order, up to the first broken one: #1 to #checked are
    # intact, whatever the verdict.
    checked = models.PositiveBigIntegerField(help_text="records found intact, from #1")
    broken_sequence = models.PositiveBigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    unchained = models.PositiveIntegerField(default=0, help_text="records not chained yet")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        state = "intact" if self.ok else f"broken at #{self.broken_sequence}"
        return f"audit check {self.checked_at:%Y-%m-%d %H:%M}: {state}"


class AuditHead(models.Model):
    """A single row holding the chain's tip; the chainer locks it FOR UPDATE for each pass, so
    two chainers cannot both extend the same predecessor. Requests never touch it."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "portal_audithead"

    def __str__(self) -> str:
        return f"audit head #{self.sequence}"
