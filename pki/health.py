"""The venue's operational health in one place: revocation publishing (every CA's newest CRL,
the bundle nginx reads on this host, unresolved publishing failures, the OCSP delegate) and
the audit chain's unchained tail. ``/pki/health/`` answers it as JSON for monitoring, the
officers' dashboard shows it; both read it here.

Above the rest of ``pki`` (it reads revocation, OCSP and failure records); nothing in ``pki``
imports it.
"""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from django.conf import settings
from django.utils import timezone

from kernel.audit import AuditTail, audit_tail
from pki.conf import pki_settings
from pki.failures import failures_open
from pki.models import Certificate, CertificateAuthority
from pki.revocation import CrlHealth, crl_health
from pki.selectors import ocsp_responder_current


def _bundle_report(newest: dict[str, int]) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Health:
    """What :func:`health_check` found; :attr:`ok` is the verdict."""

    checked_at: datetime
    crls: list[CrlHealth]
    crl_bundle: dict[str, Any]
    publish_failures: list[dict[str, Any]]
    ocsp_responder: Certificate | None
    audit_tail: AuditTail
    audit_max_lag: float

    @property
    def audit_lag(self) -> float:
        """Seconds the oldest unchained audit record has waited."""
        return self.audit_tail.age(self.checked_at).total_seconds()

    @property
    def ok(self) -> bool:
        """Every CRL current and in this host's bundle, no publishing failure, an OCSP delegate,
        and no audit record waiting longer than ``KEYLINE_AUDIT_MAX_LAG`` seconds."""
        return (
            all(c.status == "ok" for c in self.crls)
            and self.ocsp_responder is not None
            and not self.publish_failures
            and self.crl_bundle.get("current", True)
            and self.audit_lag <= self.audit_max_lag
        )

    def as_json(self) -> dict[str, Any]:
        """The ``/pki/health/`` document."""
        now, delegate, tail = self.checked_at, self.ocsp_responder, self.audit_tail
        return {
            "status": "ok" if self.ok else "degraded",
            "checked_at": now,
            "crls": [asdict(c) for c in self.crls],
            "crl_bundle": self.crl_bundle,
            "publish_failures": self.publish_failures,
            "ocsp_responder": (
                {
                    "serial": delegate.serial,
                    "not_after": delegate.not_after,
                    "seconds_left": int((delegate.not_after - now).total_seconds()),
                }
                if delegate
                else None
            ),
            "audit_chain": {
                "unchained": tail.count,
                "oldest_unchained_at": tail.oldest_at,
                "lag_seconds": round(self.audit_lag, 3),
                "max_lag_seconds": self.audit_max_lag,
            },
        }


def health_check(now: datetime | None = None) -> Health:
    """Check everything :class:`Health` reports (a handful of small queries and one file)."""
    now = now or timezone.now()
    crls = crl_health(now)
    subjects = dict(
        CertificateAuthority.objects.filter(is_active=True).values_list("slug", "subject")
    )
    bundle = _bundle_report({subjects[c.ca]: c.number for c in crls if c.number is not None})
    return Health(
        checked_at=now,
        crls=crls,
        crl_bundle=bundle,
        publish_failures=failures_open(),
        ocsp_responder=ocsp_responder_current(),
        audit_tail=audit_tail(),
        audit_max_lag=settings.KEYLINE_AUDIT_MAX_LAG,
    )
