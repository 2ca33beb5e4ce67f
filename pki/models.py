"""Certificate authorities, certificate requests and issued certificates.

Only ``pki.services`` writes these tables. CA private keys never live here: they are
PKCS#8-encrypted files in the CA directory (``pki.keystore``).
"""

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class CertificateAuthority(models.Model):
    """One CA of the hierarchy, with the distribution URLs it writes into what it signs.

    The URLs belong to the CA, not to the process that signs: every certificate the CA issues
    is built from this row alone (CRL distribution point, AIA OCSP and caIssuers), whatever
    that process's settings or environment say. ``init_ca`` records them from the settings;
    ``set_ca_urls`` changes them (audited). Certificates already issued keep the URLs they
    were signed with until they are renewed.
    """

    class Kind(models.TextChoices):
        ROOT = "root", _("Root CA")
        CLIENT = "client", _("Client issuing CA")
        SERVER = "server", _("Server CA")

    kind = models.CharField(max_length=8, choices=Kind.choices)
    slug = models.SlugField(max_length=40, help_text="Name in CRL and caIssuers URLs.")
    name = models.CharField(max_length=200)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT)
    key_type = models.CharField(max_length=16)
    key_file = models.CharField(max_length=200, help_text="Relative to the CA directory.")
    serial = models.CharField(max_length=40)
    subject = models.CharField(max_length=400)
    ski = models.CharField("subject key identifier", max_length=64)
    fingerprint_sha256 = models.CharField(max_length=64, unique=True)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    certificate_pem = models.TextField()
    crl_url = models.URLField(
        "CRL URL",
        max_length=400,
        help_text="Where this CA's CRL is published: the CRL distribution point of every "
        "certificate it issues.",
    )
    ocsp_url = models.URLField(
        "OCSP URL",
        max_length=400,
        blank=True,
        help_text="The OCSP responder for the certificates this CA issues (AIA OCSP of its "
        "trader certificates); blank when no responder answers for them.",
    )
    ca_issuers_url = models.URLField(
        "caIssuers URL",
        max_length=400,
        help_text="Where this CA's own certificate is published (DER): the AIA caIssuers of "
        "every certificate it issues.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "certificate authorities"
        constraints = [
            models.UniqueConstraint(
                fields=["kind"], condition=Q(is_active=True), name="pki_one_active_ca_per_kind"
            )
        ]

    def __str__(self) -> str:
        return self.name


class CertificateRequest(models.Model):
    """A CSR as submitted for one participant. Only the public key and proof of possession
    are used; subject, SAN and extensions come from the participant's verified records."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", _("Submitted")
        ISSUED = "issued", _("Issued")
        REJECTED = "rejected", _("Rejected")

    participant = models.ForeignKey(
        "kernel.Participant", on_delete=models.PROTECT, related_name="certificate_requests"
    )
    csr_pem = models.TextField()
    spki_sha256 = models.CharField(max_length=64, db_index=True)
    key_description = models.CharField(max_length=32)
    requested_subject = models.CharField(max_length=1000, blank=True)
    requested_extensions = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.SUBMITTED)
    rejection_code = models.CharField(max_length=64, blank=True)
    rejection_reason = models.TextField(blank=True)
    submitted_by = models.CharField(max_length=200, blank=True)
    decided_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # EST re-enrollment (RFC 7030 simplereenroll): the certificate this request renews. The
    # certificate issued for it supersedes that one (pki.est).
    renewal_of = models.ForeignKey(
        "Certificate",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="renewal_requests",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A certificate is renewed once: one renewal waiting or issued at a time.
            models.UniqueConstraint(
                fields=["renewal_of"],
                condition=Q(status__in=["submitted", "issued"]),
                name="pki_one_renewal_per_certificate",
            )
        ]

    def __str__(self) -> str:
        return f"CSR #{self.pk} for {self.participant_id} ({self.status})"


class EnrollmentToken(models.Model):
    """A one-time secret that lets one participant enroll its first certificate over EST
    (RFC 7030 simpleenroll, HTTP authentication over server-authenticated TLS). Made by a firm
    administrator or an officer, shown once, stored as its SHA-256, short-lived; spent by the
    request it enrolled (a retry of that same request may poll with it)."""

    participant = models.ForeignKey(
        "kernel.Participant", on_delete=models.PROTECT, related_name="enrollment_tokens"
    )
    token_sha256 = models.CharField(max_length=64, unique=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=200, blank=True)
    request = models.OneToOneField(
        CertificateRequest,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="enrollment_token",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"enrollment token #{self.pk} for {self.participant_id}"

    def state(self, now: datetime | None = None) -> str:
        """ "revoked", "used", "expired" or "open"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used"
        return "expired" if (now or timezone.now()) >= self.expires_at else "open"


class EstPolicy(models.Model):
    """One firm's EST rules (no row: the defaults). Officers set them on the firm's page."""

    firm = models.OneToOneField("kernel.Firm", on_delete=models.CASCADE, related_name="est_policy")
    # A first certificate enrolled with a token is signed at once, or waits for an officer.
    auto_sign_enrollment = models.BooleanField(default=False)
    # A re-enrollment inside the window is signed at once, or waits for an officer.
    auto_sign_renewal = models.BooleanField(default=True)
    # Re-enrollment opens when this share of the certificate's lifetime remains.
    renewal_window_percent = models.PositiveSmallIntegerField(default=33)
    # An officer can stop re-enrollment for the firm altogether.
    renewal_blocked = models.BooleanField(default=False)
    updated_by = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(renewal_window_percent__gte=1, renewal_window_percent__lte=100),
                name="pki_est_window_percent_range",
            )
        ]

    def __str__(self) -> str:
        return f"EST policy of {self.firm_id}"


class CertificateQuerySet(models.QuerySet["Certificate"]):
    def live(self, now: datetime | None = None) -> "CertificateQuerySet":
        now = now or timezone.now()
        return self.filter(status=Certificate.Status.ACTIVE, not_before__lte=now, not_after__gt=now)

    def revocable(self, now: datetime | None = None) -> "CertificateQuerySet":
        """What a revocation would still change: active and not expired (not yet valid ones
        included, unlike :meth:`live`)."""
        return self.filter(status=Certificate.Status.ACTIVE, not_after__gt=now or timezone.now())

    def revoked(self) -> "CertificateQuerySet":
        return self.filter(status=Certificate.Status.REVOKED)


class Certificate(models.Model):
    class Kind(models.TextChoices):
        CLIENT = "client", _("Client (participant)")
        SERVER = "server", _("Server (terminator)")
        OCSP_RESPONDER = "ocsp", _("OCSP responder")

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        REVOKED = "revoked", _("Revoked")

    class Reason(models.TextChoices):
        # RFC 5280 §5.3.1 CRLReason names; "unspecified" is never written as a reason code.
        UNSPECIFIED = "unspecified", _("Unspecified")
        KEY_COMPROMISE = "key_compromise", _("Key compromise")
        AFFILIATION_CHANGED = "affiliation_changed", _("Affiliation changed")
        SUPERSEDED = "superseded", _("Superseded")
        CESSATION_OF_OPERATION = "cessation_of_operation", _("Cessation of operation")
        PRIVILEGE_WITHDRAWN = "privilege_withdrawn", _("Privilege withdrawn")

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.CLIENT)
    issuer = models.ForeignKey(
        CertificateAuthority, on_delete=models.PROTECT, related_name="certificates"
    )
    participant = models.ForeignKey(
        "kernel.Participant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="certificates",
    )
    request = models.OneToOneField(
        CertificateRequest,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="certificate",
    )
    serial = models.CharField(max_length=40, help_text="Lower-case hex, no leading zeros.")
    fingerprint_sha256 = models.CharField(max_length=64, unique=True)
    spki_sha256 = models.CharField(max_length=64, db_index=True)
    subject = models.CharField(max_length=400)
    san = models.JSONField(default=list)
    not_before = models.DateTimeField()
    not_after = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=24, choices=Reason.choices, blank=True)
    invalidity_date = models.DateTimeField(null=True, blank=True)
    pem = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CertificateQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The CRL build reads every revoked entry of a CA in revocation order: an
            # index-only scan of this partial covering index (no table rows, no sort).
            models.Index(
                fields=["issuer", "revoked_at"],
                include=["serial", "revocation_reason", "invalidity_date", "not_after"],
                condition=Q(status="revoked"),
                name="pki_cert_revoked_crl_idx",
            )
        ]
        constraints = [
            # RFC 5280 §4.1.2.2: serials are unique per issuer; ours are unique outright.
            models.UniqueConstraint(fields=["serial"], name="pki_certificate_serial_unique"),
            # No public key is ever certified twice (docs/architecture.md, the certificate profile).
            models.UniqueConstraint(
                fields=["spki_sha256"],
                condition=Q(kind="client"),
                name="pki_client_key_certified_once",
            ),
            models.CheckConstraint(
                condition=Q(status="active", revoked_at__isnull=True)
                | Q(status="revoked", revoked_at__isnull=False),
                name="pki_certificate_revocation_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} #{self.serial}"

    @property
    def serial_int(self) -> int:
        return int(self.serial, 16)

    @property
    def is_expired(self) -> bool:
        return self.not_after <= timezone.now()

    def mark_revoked(
        self, *, reason: str, at: datetime, invalidity_date: datetime | None = None
    ) -> None:
        self.status = self.Status.REVOKED
        self.revoked_at = at
        self.revocation_reason = reason
        self.invalidity_date = invalidity_date


class RevocationList(models.Model):
    """One signed, published CRL (for the root: the ARL). CRL numbers are allocated under a
    row lock on the CA and are unique per CA, so concurrent rebuilds can never publish two
    different CRLs under one number (RFC 5280 §5.2.3)."""

    ca = models.ForeignKey(
        CertificateAuthority, on_delete=models.PROTECT, related_name="revocation_lists"
    )
    number = models.PositiveBigIntegerField()
    this_update = models.DateTimeField()
    next_update = models.DateTimeField()
    entries = models.PositiveIntegerField()
    der = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    build_seconds = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        get_latest_by = "number"
        constraints = [
            models.UniqueConstraint(fields=["ca", "number"], name="pki_crl_number_unique_per_ca")
        ]

    def __str__(self) -> str:
        return f"CRL #{self.number} of {self.ca.slug}"


class PublishFailure(models.Model):
    """A failure to publish revocation data (CRL build, files, reload, enqueueing, the OCSP
    cache), kept in the database so that /pki/health/ sees it from every process, even when
    Redis is what failed. Resolved by the next success of the same stage."""

    class Stage(models.TextChoices):
        CRL = "crl", _("CRL build or files")
        RELOAD = "reload", _("CRL reload command")
        ENQUEUE = "enqueue", _("Queueing a publishing task")
        CACHE = "cache", _("Cache invalidation (OCSP answers, trust decisions)")

    stage = models.CharField(max_length=8, choices=Stage.choices)
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stage} failure at {self.created_at:%Y-%m-%d %H:%M:%S}"
