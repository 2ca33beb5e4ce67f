"""Publishing failures (``PublishFailure`` rows): recording one, resolving a stage after the
next success, listing the open ones for ``/pki/health/``.

Their own module, low in ``pki``, because every step that keeps revocation data current
records here: the CRL publisher (``pki.revocation``), the OCSP pre-signer (``pki.ocsp``), what
runs after a status change (``pki.propagation``) and the trust-decision receivers
(``pki.signals``). Kept in the database, not the cache: the cache may be what failed.
"""

import logging
from typing import Any

from django.utils import timezone

from kernel.errors import DomainError
from pki.models import PublishFailure

logger = logging.getLogger(__name__)


def failure_record(stage: str, exc: BaseException) -> None:
    """Remember a publishing failure for /pki/health/ (in the database: the cache may be what
    failed). Never raises: the failure itself is already logged."""
    details = getattr(exc, "details", {}) or {}
    error = str(exc) if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
    if details.get("stderr"):
        error += f"\n{details['stderr']}"
    try:
        PublishFailure.objects.create(stage=stage, error=error)
    except Exception:
        logger.exception("could not record the publishing failure")


def failures_resolve(stages: list[str]) -> None:
    PublishFailure.objects.filter(stage__in=stages, resolved_at__isnull=True).update(
        resolved_at=timezone.now()
    )


def failures_open() -> list[dict[str, Any]]:
    """Unresolved publishing failures, newest first, as shown publicly: no command output."""
    return [
        {"stage": f.stage, "at": f.created_at, "error": f.error.splitlines()[0][:200]}
        for f in PublishFailure.objects.filter(resolved_at__isnull=True)[:20]
    ]
