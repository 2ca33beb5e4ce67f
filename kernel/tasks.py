"""Celery tasks of the kernel: the audit chain's verification, hourly (settings'
CELERY_BEAT_SCHEDULE) and when an officer asks for it on the audit page."""

from celery import shared_task

from kernel.audit import audit_check


@shared_task(acks_late=True)
def audit_verify_task(by: str = "hourly schedule") -> int:
    """Recompute the chain and keep the result (:func:`kernel.audit.audit_check`); returns
    the stored check's id."""
    return audit_check(by).pk
