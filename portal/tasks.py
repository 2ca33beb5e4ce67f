"""Portal tasks for Celery beat (default queue)."""

from typing import Any

from celery import Task, shared_task
from django.db import DatabaseError

from portal.reminders import expiry_reminders_send


@shared_task(bind=True, acks_late=True, max_retries=5, ignore_result=True)
def expiry_reminders_task(self: Task[Any, Any]) -> int:
    """Daily: e-mail certificate expiry reminders (exactly once per certificate and
    threshold; safe to run twice, and after a crash)."""

    try:
        return expiry_reminders_send()
    except (OSError, DatabaseError) as exc:  # SMTP or database trouble: try again later
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=300) from exc
