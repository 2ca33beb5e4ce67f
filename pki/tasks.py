"""Celery tasks that need a CA key or the OCSP delegate key. They are routed to the "signing"
queue, which only the key-holding worker consumes (settings.CELERY_TASK_ROUTES); without a
broker they run in the calling process (eager)."""

from celery import shared_task
from django.db import IntegrityError, OperationalError

from portal.audit import Actor

RETRY = {
    "acks_late": True,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "max_retries": 8,
}


@shared_task(autoretry_for=(OSError, OperationalError), **RETRY)
def ocsp_responder_renew_task(force: bool = False) -> str | None:
    """Renew the OCSP delegate certificate if it is due; doing nothing is a valid outcome."""
    from pki.services import ocsp_responder_renew

    renewed = ocsp_responder_renew(
        actor=Actor.system("celery ocsp_responder_renew_task"), force=force
    )
    if renewed is not None:
        ocsp_presign_task.delay()
    return renewed.serial if renewed else None


@shared_task(autoretry_for=(Exception,), **RETRY)
def crl_publish_task() -> list[int]:
    """Publish a new CRL for every active CA. A failure leaves the last good files in place
    and is retried with backoff (and shown on /pki/health/)."""
    from pki.revocation import crl_publish

    rows = crl_publish(actor=Actor.system("celery crl_publish_task"))
    return [row.number for row in rows]


@shared_task(autoretry_for=(OSError, OperationalError, IntegrityError), **RETRY)
def ocsp_presign_task(serials: list[str] | None = None) -> int:
    """Re-sign and cache OCSP responses (for ``serials``, or for every unexpired certificate)."""
    from pki.ocsp import presign

    return presign(serials)
