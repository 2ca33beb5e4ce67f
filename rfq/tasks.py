"""RFQ housekeeping for Celery beat (default queue: no key needed)."""

from typing import Any

from celery import Task, shared_task
from django.db import DatabaseError

from rfq.services import rfq_expire_due


@shared_task(bind=True, acks_late=True, max_retries=3, ignore_result=True)
def rfq_expire_task(self: Task[Any, Any]) -> tuple[int, int]:
    """Close RFQs and quotes past their time. Idempotent: a second run finds nothing due."""

    try:
        return rfq_expire_due()
    except DatabaseError as exc:
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=2) from exc
