"""Keep the cached trust decisions true when a participant or a firm changes (disabled,
suspended, re-enabled): whoever saves it (the portal, the admin, a command), the decisions of
their certificates are forgotten when the change commits. Queryset ``update()`` bypasses
signals: code that changes these statuses must save the objects."""

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from kernel.models import Firm, Participant
from pki import trust
from pki.failures import failure_record
from pki.models import PublishFailure

logger = logging.getLogger(__name__)


def _forget_after_commit(**scope: Iterable[int]) -> None:
    def forget() -> None:
        try:
            trust.decisions_forget(trust.certificate_fingerprints_of(**scope))
        except Exception as exc:
            logger.exception("could not forget trust decisions for %s", scope)
            failure_record(PublishFailure.Stage.CACHE, exc)

    transaction.on_commit(forget)


@receiver(post_save, sender=Participant, dispatch_uid="pki.forget_participant_decisions")
def participant_saved(
    sender: type[Participant], instance: Participant, created: bool, **kwargs: Any
) -> None:
    if not created:
        _forget_after_commit(participant_ids=[instance.pk])


@receiver(post_save, sender=Firm, dispatch_uid="pki.forget_firm_decisions")
def firm_saved(sender: type[Firm], instance: Firm, created: bool, **kwargs: Any) -> None:
    if not created:
        _forget_after_commit(firm_ids=[instance.pk])
