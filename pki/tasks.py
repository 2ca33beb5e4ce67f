"""Celery tasks that need a CA key. They are routed to the "signing" queue, which only the
key-holding worker consumes (settings.CELERY_TASK_ROUTES)."""

from celery import shared_task
from django.db import OperationalError


@shared_task(acks_late=True, autoretry_for=(OSError, OperationalError), retry_backoff=True)
def ocsp_responder_renew_task(force: bool = False) -> str | None:
    """Renew the OCSP delegate certificate if it is due; doing nothing is a valid outcome."""
    from pki.services import ocsp_responder_renew
    from portal.audit import Actor

    renewed = ocsp_responder_renew(
        actor=Actor.system("celery ocsp_responder_renew_task"), force=force
    )
    return renewed.serial if renewed else None
