"""What follows a committed issuance or status change: this process forgets what its caches
say about the certificates, and the signing worker is asked to publish CRLs and (re-)sign OCSP
answers.

The top of ``pki``: it coordinates the trust decisions (``pki.trust``), the OCSP answer cache
(``pki.ocsp``) and the signing worker's tasks (``pki.tasks``), none of which imports it. The
modules that issue and revoke sit below all of those and announce what they did through
``pki.events``; the receivers here are connected by ``PkiConfig.ready``.
"""

import logging
from typing import Any

from django.dispatch import receiver

from pki import events, ocsp, tasks
from pki.failures import failure_record
from pki.models import Certificate, PublishFailure
from pki.trust import decisions_forget

logger = logging.getLogger(__name__)


def certificates_status_changed(certificates: list[Certificate]) -> None:
    """After a committed status change: forget what the caches say about these certificates
    in this process, now, then have the signing worker publish CRLs and re-sign OCSP answers.

    The status change is committed whatever happens here: each step that fails is logged and
    recorded for /pki/health/ and does not stop the others. The hourly CRL and half-hourly
    OCSP beat runs repair what a failed step left behind.
    """
    serials = [c.serial for c in certificates]
    steps = [
        (
            PublishFailure.Stage.CACHE,
            lambda: decisions_forget(c.fingerprint_sha256 for c in certificates),
        ),
        (PublishFailure.Stage.CACHE, lambda: ocsp.responses_forget(certificates)),
        (PublishFailure.Stage.ENQUEUE, tasks.crl_publish_task.delay),
        (PublishFailure.Stage.ENQUEUE, lambda: tasks.ocsp_presign_task.delay(serials=serials)),
    ]
    for stage, step in steps:
        try:
            step()
        except Exception as exc:
            logger.exception("after revoking %s: %s step failed", serials, stage)
            failure_record(stage, exc)
    if any(c.kind == Certificate.Kind.OCSP_RESPONDER for c in certificates):
        # The responder cannot sign with a revoked delegate: replace it now, not at the next
        # six-hourly renewal check.
        try:
            tasks.ocsp_responder_renew_task.delay(force=True)
        except Exception as exc:
            logger.exception("could not queue the OCSP delegate's renewal")
            failure_record(PublishFailure.Stage.ENQUEUE, exc)


def certificates_issued(certificates: list[Certificate]) -> None:
    """Have the signing worker put the new certificates' "good" answers in the OCSP cache, so
    that the first relying party to ask (nginx) is answered from it."""
    serials = [c.serial for c in certificates]
    try:
        tasks.ocsp_presign_task.delay(serials=serials)
    except Exception:
        # Not a failure of issuance: the responder signs on the first request instead.
        logger.warning("could not queue the OCSP pre-sign of %s", serials, exc_info=True)


@receiver(events.certificates_status_changed, dispatch_uid="pki.propagate_status_change")
def _status_changed(
    sender: type[Certificate], certificates: list[Certificate], **kwargs: Any
) -> None:
    certificates_status_changed(certificates)


@receiver(events.certificates_issued, dispatch_uid="pki.propagate_issuance")
def _issued(sender: type[Certificate], certificates: list[Certificate], **kwargs: Any) -> None:
    certificates_issued(certificates)
