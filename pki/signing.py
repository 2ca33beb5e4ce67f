"""Issuing from a web request: the web processes hold no CA key (deploy/ gives the CA
passphrase to the signing worker alone, and bin/run does the same), so a certificate asked for
in a request (an officer's "Sign", a firm's auto-signing) is signed by
:func:`pki.tasks.certificate_issue_task` on the "signing" queue, and the request waits a few
seconds for the outcome.

Beside ``pki.propagation`` at the top of ``pki``: it queues a task and reads the rows the
worker writes. Without a broker (tests, CELERY_TASK_ALWAYS_EAGER) the task runs inline and its
errors propagate to the caller as :func:`pki.services.certificate_issue` raises them.
"""

import time

from django.conf import settings

from kernel.audit import Actor
from kernel.errors import Conflict
from pki import tasks
from pki.models import Certificate, CertificateRequest

POLL_SECONDS = 0.05


def certificate_issue_queued(*, request: CertificateRequest, actor: Actor) -> Certificate | None:
    """Have the signing worker sign ``request`` and wait up to ``KEYLINE_SIGNING_WAIT_SECONDS``
    for it.

    Returns the certificate; or None when the worker has not answered yet (the request stays
    submitted, and is signed when the worker gets to it). Raises ``Conflict`` with the
    request's rejection code when the worker rejected it (a key certified or compromised
    before), and, without a broker, whatever ``pki.services.certificate_issue`` raises."""
    tasks.certificate_issue_task.delay(request.pk, [actor.type, actor.id, actor.label])
    deadline = time.monotonic() + settings.KEYLINE_SIGNING_WAIT_SECONDS
    while True:
        row = (
            CertificateRequest.objects.filter(pk=request.pk)
            .values("status", "rejection_code", "rejection_reason")
            .first()
        )
        if row is not None and row["status"] == CertificateRequest.Status.ISSUED:
            return Certificate.objects.select_related("participant").get(request_id=request.pk)
        if row is not None and row["status"] == CertificateRequest.Status.REJECTED:
            raise Conflict(row["rejection_code"] or "CSR_REJECTED", row["rejection_reason"])
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)
