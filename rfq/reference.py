"""The reference data every RFQ write reads — the tradable instruments and the firms that may
quote — kept in each process's memory (:mod:`kernel.nearcache`) instead of read per request.

It changes rarely (an instrument listed or retired, a firm approved or suspended) and every
change goes through a save, so :mod:`rfq.signals` forgets it after the commit, in every process
(``REFERENCE_CHANNEL``). Memory is used only while this process is subscribed, and entries
live at most ``TTL`` seconds, as for the trust decisions.
"""

from datetime import datetime
from typing import Any

from django.db import transaction

from kernel.models import Firm
from kernel.nearcache import NearCache, ThreadSubscriber, forget_everywhere
from rfq.models import Instrument

REFERENCE_CHANNEL = "keyline:rfq:reference"
INSTRUMENTS, PROVIDERS = "instruments", "liquidity_providers"
TTL = 60.0

_near: NearCache[Any] = NearCache(ttl=TTL, max_entries=16)
_subscriber = ThreadSubscriber(REFERENCE_CHANNEL, _near)


def _active_instruments() -> dict[str, Instrument]:
    _subscriber.ensure_started()
    found: dict[str, Instrument] | None = _near.get(INSTRUMENTS)
    if found is None:
        seen = _near.generation()
        found = {i.symbol: i for i in Instrument.objects.filter(is_active=True)}
        _near.put(INSTRUMENTS, found, seen)
    return found


def instruments_tradable(symbols: set[str], now: datetime) -> dict[str, Instrument]:
    """The instruments of ``symbols`` that are active and not expired at ``now``, by symbol
    (the others are left out). Read-only rows, shared by the process's requests."""
    active = _active_instruments()
    return {
        symbol: instrument
        for symbol in symbols
        if (instrument := active.get(symbol)) is not None
        and (instrument.expiry is None or instrument.expiry > now)
    }


def liquidity_provider_ids() -> list[int]:
    """Every firm that may quote now (``Firm.objects.liquidity_providers()``): the audience of
    an RFQ sent to all."""
    _subscriber.ensure_started()
    found: list[int] | None = _near.get(PROVIDERS)
    if found is None:
        seen = _near.generation()
        found = list(Firm.objects.liquidity_providers().values_list("pk", flat=True))
        _near.put(PROVIDERS, found, seen)
    return list(found)


def cache_usable() -> bool:
    """Whether this process hears reference changes now (what may be kept depends on it)."""
    _subscriber.ensure_started()
    return _near.subscribed


def generation() -> int:
    """Moves with every reference change heard (and every loss of the subscription): a key
    part for what is derived from firms and instruments (``rfq.listing``)."""
    return _near.generation()


def reference_forget(*keys: str) -> None:
    """Forget ``keys`` (``INSTRUMENTS``, ``PROVIDERS``): in this process at once (a read later
    in the same transaction sees its own change), and in every process once the transaction
    commits (at once outside one)."""
    _near.forget(list(keys))
    # robust: the change has committed; if Redis cannot take the message, the other processes
    # keep the old rows at most TTL seconds (logged).
    transaction.on_commit(
        lambda: forget_everywhere(REFERENCE_CHANNEL, list(keys), _near), robust=True
    )


def reference_reset() -> None:
    """Forget everything in this process only (tests: rows of a rolled-back transaction)."""
    _near.forget([INSTRUMENTS, PROVIDERS])
