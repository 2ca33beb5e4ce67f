"""When a firm stops being allowed to trade (suspended, offboarded), its open RFQs and active
quotes are cancelled after the status change commits (rfq reacts to portal; portal never
imports rfq)."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from kernel.models import Firm
from rfq.services import firm_trading_stop

STOPPED: dict[str, str] = {
    Firm.Status.SUSPENDED: "firm_suspended",
    Firm.Status.OFFBOARDED: "firm_offboarded",
}


@receiver(post_save, sender=Firm, dispatch_uid="rfq_firm_trading_stop")
def firm_status_changed(sender: type[Firm], instance: Firm, **kwargs: Any) -> None:
    reason = STOPPED.get(instance.status)
    if reason is None:
        return

    firm_id = instance.pk
    # robust: the suspension has committed; a failure here is logged (expiry still closes
    # everything within minutes, and accept refuses an inactive counterparty).
    transaction.on_commit(lambda: firm_trading_stop(firm_id=firm_id, reason=reason), robust=True)
