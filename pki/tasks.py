"""Celery tasks that need a CA key or the OCSP delegate key. They are routed to the "signing"
queue, which only the key-holding worker consumes (settings.CELERY_TASK_ROUTES); without a
broker they run in the calling process (eager), once, without retries.

This is the module Celery autodiscovers, and the tasks' registered names (``pki.tasks.<name>``,
which the beat schedule and the routing use) come from it. It sits above the code the tasks
run (``pki.services``, ``pki.revocation``, ``pki.ocsp``); what queues them after an issuance or
a status change is ``pki.propagation``, above it."""

from typing import Any

from celery import Task, shared_task
from django.db import DatabaseError
from redis import RedisError

from kernel.audit import Actor
from pki.est import supersede_due as est_supersede_due
from pki.models import CertificateRequest
from pki.ocsp import context_reset, presign
from pki.revocation import CrlPublishFailed, crl_publish
from pki.services import certificate_issue, ocsp_responder_renew

MAX_RETRIES = 8


def _backoff(retries: int) -> int:
    return min(300, 2 ** (retries + 1))  # 2 s, 4 s, ... 5 min


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def ocsp_responder_renew_task(self: Task[Any, Any], force: bool = False) -> str | None:
    """Renew the OCSP delegate certificate if it is due; doing nothing is a valid outcome."""
    try:
        renewed = ocsp_responder_renew(
            actor=Actor.system("celery ocsp_responder_renew_task"), force=force
        )
    except (OSError, DatabaseError) as exc:
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    if renewed is not None:
        context_reset()  # sign with the new delegate from now on, in this process
        ocsp_presign_task.delay()
    return renewed.serial if renewed else None


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def crl_publish_task(self: Task[Any, Any]) -> list[int]:
    """Publish a new CRL for every active CA. A failure leaves the last good files in place,
    is recorded for /pki/health/ and is retried with exponential backoff."""
    try:
        rows = crl_publish(actor=Actor.system("celery crl_publish_task"))
    except (CrlPublishFailed, OSError, ValueError, DatabaseError) as exc:
        # ValueError: a CA key that does not open (wrong passphrase).
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    return [row.number for row in rows]


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def ocsp_presign_task(self: Task[Any, Any], serials: list[str] | None = None) -> int:
    """Re-sign and cache OCSP answers (for ``serials``, or for every unexpired certificate)."""
    try:
        return presign(serials)
    except (OSError, RedisError, DatabaseError) as exc:
        if self.request.is_eager:
            raise
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(acks_late=True)
def certificate_issue_task(request_id: int, actor: list[str]) -> int:
    """Sign one submitted request for a web process that holds no CA key
    (:mod:`pki.signing` queues it and waits for the row). Returns the certificate's id; the
    errors of ``pki.services.certificate_issue`` end the task (a rejected key is recorded on
    the request, which the waiting request reads)."""
    request = CertificateRequest.objects.select_related("participant__firm").get(pk=request_id)
    return certificate_issue(request=request, actor=Actor(*actor)).pk


@shared_task(acks_late=True)
def est_supersede_task() -> list[int]:
    """Revoke, as superseded, the certificates renewed by EST whose grace period is over
    (every 10 minutes, Celery beat)."""
    return est_supersede_due()
