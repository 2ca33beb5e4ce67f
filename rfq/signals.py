"""When a firm stops being allowed to trade (suspended, offboarded), its open RFQs and active
quotes are cancelled after the status change commits (rfq reacts to portal; portal never
imports rfq). Every saved firm or instrument also forgets the reference data the processes keep
in memory (:mod:`rfq.reference`)."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from kernel.impact import Impact, firm_stop_preview
from kernel.models import Firm
from rfq.models import Instrument, Quote, Rfq
from rfq.reference import INSTRUMENTS, PROVIDERS, reference_forget
from rfq.services import firm_trading_stop

STOPPED: dict[str, str] = {
    Firm.Status.SUSPENDED: "firm_suspended",
    Firm.Status.OFFBOARDED: "firm_offboarded",
}


@receiver(post_save, sender=Firm, dispatch_uid="rfq_firm_reference_forget")
def firm_saved(sender: type[Firm], instance: Firm, **kwargs: Any) -> None:
    """Created or changed, a firm may join or leave the liquidity providers."""
    reference_forget(PROVIDERS)


@receiver(post_save, sender=Instrument, dispatch_uid="rfq_instrument_saved")
@receiver(post_delete, sender=Instrument, dispatch_uid="rfq_instrument_deleted")
def instrument_changed(sender: type[Instrument], **kwargs: Any) -> None:
    reference_forget(INSTRUMENTS)


@receiver(post_save, sender=Firm, dispatch_uid="rfq_firm_trading_stop")
def firm_status_changed(sender: type[Firm], instance: Firm, **kwargs: Any) -> None:
    reason = STOPPED.get(instance.status)
    if reason is None:
        return

    firm_id = instance.pk
    # robust: the suspension has committed; a failure here is logged (expiry still closes
    # everything within minutes, and accept refuses an inactive counterparty).
    transaction.on_commit(lambda: firm_trading_stop(firm_id=firm_id, reason=reason), robust=True)


@receiver(firm_stop_preview, dispatch_uid="rfq_firm_stop_preview")
def firm_stop_preview_rfq(sender: object, firm_id: int, **kwargs: Any) -> list[Impact]:
    """What :func:`rfq.services.firm_trading_stop` would cancel for this firm now: its open
    RFQs, its active quotes, and the other firms' quotes on those RFQs (closed with them)."""
    rfqs = Rfq.objects.filter(firm_id=firm_id).unclosed().order_by("-pk")
    quotes = Quote.objects.filter(firm_id=firm_id).unclosed().order_by("-pk")

    def first(rows: Any) -> list[str]:
        return [str(pk) for pk in rows.values_list("pk", flat=True)[:5]]

    theirs = Quote.objects.filter(rfq__in=rfqs).exclude(firm_id=firm_id).unclosed().order_by("-pk")
    return [
        Impact("open RFQ", "open RFQs", rfqs.count(), first(rfqs)),
        Impact("active quote", "active quotes", quotes.count(), first(quotes)),
        Impact(
            "other firm's quote on those RFQs",
            "other firms' quotes on those RFQs",
            theirs.count(),
            first(theirs),
        ),
    ]
