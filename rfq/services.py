"""RFQ services: create, cancel, quote, replace, accept, expire.

Every state change runs in one durable transaction under the RFQ's row lock (a quote is only
written while its RFQ is locked; several RFQs are locked in id order), checks its invariant
here and nowhere else, applies the models' transitions (``Rfq.close``, ``Quote.close``,
``Quote.objects…close``), writes its audit record with the caller's certificate serial, then
appends the events each desk should see (:class:`rfq.events.Outbox` renders them). A service
returns the domain objects it changed, loaded as the API renders them and never read back
after the write; the view renders its answer from them. Errors carry FIX-inspired codes (FIX
658 QuoteRequestRejectReason, 300 QuoteRejectReason) and change nothing.
"""

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from kernel.audit import Actor, AuditEntry, audit_record, audit_record_many
from kernel.errors import Conflict, Invalid, NotFound, PermissionDenied
from kernel.models import AuditRecord, Firm, Participant
from rfq.events import Outbox
from rfq.models import (
    Audience,
    Instrument,
    Quote,
    QuoteLeg,
    QuoteQuerySet,
    Rfq,
    RfqCounterparty,
    RfqLeg,
    RfqQuerySet,
    Side,
    Trade,
    TradeLeg,
    dec,
    opposite,
    preloaded,
)
from rfq.reference import instruments_tradable, liquidity_provider_ids
from rfq.selectors import (
    QUOTE_RELATED,
    Viewer,
    is_uuid,
    quote_details,
    quote_get,
    quote_lock,
    quote_with_details,
    rfq_details,
    rfq_get,
    rfq_lock,
    rfq_maker_firm_ids,
)

R = TypeVar("R", Rfq, Quote)

ZERO = Decimal(0)
# What numeric(24, 8) holds: computed leg quantities and prices must stay below it.
LIMIT = Decimal(10) ** (24 - 8)


@dataclass(frozen=True)
class Caller:
    """An authenticated API caller: the participant and the serial of the certificate it
    presented (the audit log's actor)."""

    participant: Participant
    serial: str

    @property
    def viewer(self) -> Viewer:
        """What the caller may see: its firm, from its desk."""
        return Viewer.of(self.participant)

    @property
    def actor(self) -> Actor:
        """The caller as the audit log names it: its certificate."""
        return Actor(
            AuditRecord.ActorType.CERTIFICATE,
            self.serial,
            f"{self.participant.trader_id} ({self.serial})",
        )


# --- input shapes (validated for type and range by the API's serializers) --------------------


@dataclass(frozen=True)
class LegIn:
    """One leg of a new RFQ: an instrument symbol, a side, a ratio."""

    instrument: str
    side: str
    ratio: Decimal = Decimal(1)


@dataclass(frozen=True)
class QuoteLegIn:
    """The prices of one leg of a quote."""

    leg_no: int
    bid_price: Decimal | None = None
    ask_price: Decimal | None = None


@dataclass(frozen=True)
class QuoteIn:
    """A quote as asked for: package prices and sizes, leg prices, lifetime, client id."""

    bid_price: Decimal | None = None
    bid_size: Decimal | None = None
    ask_price: Decimal | None = None
    ask_size: Decimal | None = None
    legs: tuple[QuoteLegIn, ...] | None = None
    expires_in: int | None = None
    client_quote_id: str = ""


def _request_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _require(caller: Caller, audience: str) -> None:
    if caller.viewer.audience != audience:
        what = "requesters" if audience == Audience.REQUESTER else "liquidity providers"
        raise PermissionDenied("NOT_AUTHORIZED", f"Only {what} may do this.")


def _multiple_of(value: Decimal, step: Decimal) -> bool:
    return value % step == ZERO


# --- RFQ ---------------------------------------------------------------------------------------


def _resolve_instruments(legs: list[LegIn], now: datetime) -> dict[str, Instrument]:
    symbols = {leg.instrument for leg in legs}
    found = instruments_tradable(symbols, now)
    missing = sorted(symbols - found.keys())
    if missing:
        raise Invalid(
            "UNKNOWN_INSTRUMENT",
            f"Unknown, inactive or expired instrument: {', '.join(missing)}.",
            {"instruments": missing},
        )
    return found


def _check_leg_quantities(
    legs: list[tuple[Instrument, Decimal]], quantity: Decimal, code: str = "INVALID_QUANTITY"
) -> None:
    for leg_no, (instrument, ratio) in enumerate(legs, start=1):
        leg_quantity = ratio * quantity
        if leg_quantity >= LIMIT:
            raise Invalid(
                code,
                f"Leg {leg_no} ({instrument.symbol}) would trade {dec(leg_quantity)}: too large.",
                {"leg_no": leg_no},
            )
        if leg_quantity < instrument.min_size or not _multiple_of(
            leg_quantity, instrument.min_size
        ):
            raise Invalid(
                code,
                f"Leg {leg_no} ({instrument.symbol}) would trade {dec(leg_quantity)}; it must be "
                f"a positive multiple of the minimum size {dec(instrument.min_size)}.",
                {"leg_no": leg_no, "min_size": dec(instrument.min_size)},
            )


def _resolve_counterparties(caller: Caller, leis: list[str]) -> list[Firm]:
    leis = sorted(set(leis))
    if not leis:
        return []
    if caller.participant.firm.lei in leis:
        raise Invalid("SELF_TRADE", "An RFQ cannot be sent to the requester's own firm.")
    firms = list(Firm.objects.liquidity_providers().filter(lei__in=leis).order_by("lei"))
    missing = sorted(set(leis) - {f.lei for f in firms})
    if missing:
        raise Invalid(
            "UNKNOWN_COUNTERPARTY",
            "Not an active liquidity provider: " + ", ".join(missing) + ".",
            {"counterparties": missing},
        )
    return firms


@transaction.atomic(durable=True)
def rfq_create(
    *,
    caller: Caller,
    legs: list[LegIn],
    quantity: Decimal,
    counterparties: list[str] | None = None,
    anonymous: bool = False,
    expires_in: int | None = None,
    client_rfq_id: str = "",
) -> tuple[Rfq, bool]:
    """Open an RFQ. Returns ``(rfq, created)``, the RFQ loaded as ``rfq_with_details``:
    replaying a ``client_rfq_id`` with the same body returns the original (``created``
    False); concurrent replays create one RFQ (the unique constraint decides).

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a requester,
    ``Conflict`` (``DUPLICATE_CLIENT_ID``) for a used ``client_rfq_id`` with another body, and
    ``Invalid`` (``INVALID_LEGS``, ``INVALID_EXPIRY``, ``UNKNOWN_INSTRUMENT``,
    ``INVALID_QUANTITY``, ``SELF_TRADE``, ``UNKNOWN_COUNTERPARTY``) for a request that cannot
    open."""
    _require(caller, Audience.REQUESTER)
    now = timezone.now()
    counterparties = counterparties or []
    cfg = settings.KEYLINE_RFQ
    if expires_in is None:
        expires_in = cfg["RFQ_EXPIRY_DEFAULT"]
    request_hash = _request_hash(
        {
            "legs": [
                [leg.instrument, leg.side, str(Decimal(leg.ratio).normalize())] for leg in legs
            ],
            "quantity": str(quantity.normalize()),
            "counterparties": sorted(set(counterparties)),
            "anonymous": anonymous,
            "expires_in": expires_in,
        }
    )
    firm = caller.participant.firm
    if client_rfq_id:
        existing = _rfqs_by_client_id(firm, client_rfq_id).first()
        if existing is not None:
            return _rfq_replayed(existing, request_hash), False

    if not 1 <= len(legs) <= cfg["MAX_LEGS"]:
        raise Invalid("INVALID_LEGS", f"An RFQ has 1 to {cfg['MAX_LEGS']} legs.")
    if len({leg.instrument for leg in legs}) != len(legs):
        raise Invalid("INVALID_LEGS", "Each instrument may appear in one leg only.")
    if not cfg["RFQ_EXPIRY_MIN"] <= expires_in <= cfg["RFQ_EXPIRY_MAX"]:
        raise Invalid(
            "INVALID_EXPIRY",
            f"expires_in must be {cfg['RFQ_EXPIRY_MIN']}-{cfg['RFQ_EXPIRY_MAX']} seconds.",
        )
    instruments = _resolve_instruments(legs, now)
    _check_leg_quantities([(instruments[leg.instrument], leg.ratio) for leg in legs], quantity)
    named = _resolve_counterparties(caller, counterparties)

    try:
        # A savepoint only where a unique violation can happen (a concurrent client_rfq_id).
        with transaction.atomic() if client_rfq_id else contextlib.nullcontext():
            rfq = Rfq.objects.create(
                firm=firm,
                requester=caller.participant,
                certificate_serial=caller.serial,
                client_rfq_id=client_rfq_id,
                request_hash=request_hash,
                quantity=quantity,
                anonymous=anonymous,
                to_all=not named,
                created_at=now,
                expires_at=now + timedelta(seconds=expires_in),
            )
    except IntegrityError:
        # A concurrent request with the same client_rfq_id committed first.
        return _rfq_replayed(_rfqs_by_client_id(firm, client_rfq_id).get(), request_hash), False
    leg_rows = RfqLeg.objects.bulk_create(
        [
            RfqLeg(
                rfq=rfq,
                leg_no=n,
                instrument=instruments[leg.instrument],
                side=leg.side,
                ratio=leg.ratio,
            )
            for n, leg in enumerate(legs, start=1)
        ]
    )
    links = RfqCounterparty.objects.bulk_create([RfqCounterparty(rfq=rfq, firm=f) for f in named])
    # The RFQ as rfq_with_details would load it, from what is in memory (no read-back).
    preloaded(rfq, legs=leg_rows, counterparty_links=links)
    outbox = Outbox(now)
    outbox.rfq(rfq, "rfq.created", rfq_maker_firm_ids(rfq))
    audit_record(
        event="rfq.created",
        actor=caller.actor,
        target=rfq,
        client_rfq_id=client_rfq_id,
        quantity=quantity,
        legs=[[leg.instrument, leg.side, leg.ratio] for leg in legs],
        counterparties=[f.lei for f in named],
        anonymous=anonymous,
        expires_at=rfq.expires_at,
    )
    outbox.append()
    return rfq, True


def _rfqs_by_client_id(firm: Firm, client_rfq_id: str) -> RfqQuerySet:
    return Rfq.objects.filter(firm=firm, client_rfq_id=client_rfq_id).select_related(
        "firm", "requester"
    )


def _replayed(existing: R, request_hash: str, field: str) -> R:
    if existing.request_hash != request_hash:
        raise Conflict(
            "DUPLICATE_CLIENT_ID",
            f"This {field} was already used with a different request.",
            {"id": str(existing.pk)},
        )
    return existing


def _rfq_replayed(existing: Rfq, request_hash: str) -> Rfq:
    """The RFQ a replay returns, with details; ``Conflict`` for another body."""
    return rfq_details([_replayed(existing, request_hash, "client_rfq_id")])[0]


def _close_quotes(rfq_ids: list[UUID], state: str, reason: str, now: datetime) -> list[Quote]:
    """Close the active quotes on these (locked) RFQs; returns them closed, with details."""
    if not rfq_ids:
        return []
    return quote_with_details(Quote.objects.filter(rfq_id__in=rfq_ids)).close(state, reason, now)


def _by_rfq(quotes: list[Quote]) -> dict[UUID, list[Quote]]:
    groups: dict[UUID, list[Quote]] = {}
    for quote in quotes:
        groups.setdefault(quote.rfq_id, []).append(quote)
    return groups


@transaction.atomic(durable=True)
def rfq_cancel(*, caller: Caller, rfq_id: UUID | str) -> Rfq:
    """Cancel an open RFQ of the caller's firm; its active quotes close with it. Returns the
    RFQ, cancelled, loaded as ``rfq_with_details``.

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a requester,
    ``NotFound`` (``UNKNOWN_RFQ``) for an RFQ it may not see, ``Conflict`` (``RFQ_EXPIRED``,
    ``RFQ_NOT_OPEN``) for one that is not open."""
    _require(caller, Audience.REQUESTER)
    now = timezone.now()
    rfq = rfq_lock(caller.viewer, rfq_id)
    _require_open(rfq, now)
    rfq_details([rfq])
    rfq.save(update_fields=rfq.close(Rfq.State.CANCELLED, "cancelled_by_requester", now))
    closed = _close_quotes([rfq.pk], Quote.State.CANCELLED, "rfq_cancelled", now)
    outbox = Outbox(now)
    outbox.rfq(rfq, "rfq.cancelled", rfq_maker_firm_ids(rfq))
    outbox.quotes(closed, "quote.cancelled", requester=False)
    audit_record(event="rfq.cancelled", actor=caller.actor, target=rfq, quotes_closed=len(closed))
    outbox.append()
    return rfq


def _require_open(rfq: Rfq, now: datetime) -> None:
    state, _ = rfq.effective_state(now)
    if state == Rfq.State.EXPIRED:
        raise Conflict("RFQ_EXPIRED", "The RFQ has expired.", {"state": state})
    if state != Rfq.State.OPEN:
        raise Conflict("RFQ_NOT_OPEN", f"The RFQ is {state}.", {"state": state})


# --- quotes ------------------------------------------------------------------------------------


def _validate_quote(
    rfq: Rfq, data: QuoteIn, now: datetime
) -> tuple[dict[str, Decimal | None], list[QuoteLeg], datetime]:
    """Check a quote against its RFQ; returns (quote fields, leg rows, expires_at)."""
    cfg = settings.KEYLINE_RFQ
    expires_in = cfg["QUOTE_EXPIRY_DEFAULT"] if data.expires_in is None else data.expires_in
    if not cfg["QUOTE_EXPIRY_MIN"] <= expires_in <= cfg["QUOTE_EXPIRY_MAX"]:
        raise Invalid(
            "INVALID_EXPIRY",
            f"expires_in must be {cfg['QUOTE_EXPIRY_MIN']}-{cfg['QUOTE_EXPIRY_MAX']} seconds.",
        )
    rfq_legs = list(rfq_details([rfq], counterparties=False)[0].legs.all())
    fields: dict[str, Decimal | None] = {}
    prices: dict[str, Decimal] = {}  # the package price of each side quoted
    for side in ("bid", "ask"):
        price, size = getattr(data, f"{side}_price"), getattr(data, f"{side}_size")
        if price is None:
            if size is not None:
                raise Invalid("INVALID_PRICE", f"{side}_size was given without a {side}_price.")
            fields[f"{side}_price"] = fields[f"{side}_size"] = None
            continue
        size = rfq.quantity if size is None else size
        if not ZERO < size <= rfq.quantity:
            raise Invalid(
                "INVALID_QUANTITY",
                f"{side}_size must be more than 0 and at most the RFQ quantity "
                f"{dec(rfq.quantity)}.",
            )
        _check_leg_quantities([(leg.instrument, leg.ratio) for leg in rfq_legs], size)
        fields[f"{side}_price"], fields[f"{side}_size"] = price, size
        prices[side] = price
    if not prices:
        raise Invalid("INVALID_PRICE", "A quote needs a bid, an ask or both.")
    if len(prices) == 2 and prices["bid"] >= prices["ask"]:
        raise Invalid("INVALID_PRICE", "The bid must be below the ask.")

    leg_prices: dict[int, dict[str, Decimal | None]] = {
        leg.leg_no: {"bid": None, "ask": None} for leg in rfq_legs
    }
    if data.legs is None:
        if len(rfq_legs) > 1:
            raise Invalid("INVALID_PRICE", "A multi-leg quote needs a price for every leg.")
        leg = rfq_legs[0]
        sign = 1 if leg.side == Side.BUY else -1
        for side, package_price in prices.items():
            leg_prices[1][side] = package_price / (sign * leg.ratio)
    else:
        given = {leg_in.leg_no: leg_in for leg_in in data.legs}
        if len(given) != len(data.legs) or set(given) != set(leg_prices):
            raise Invalid(
                "INVALID_PRICE",
                f"Give each leg 1-{len(rfq_legs)} exactly once.",
                {"legs": sorted(given)},
            )
        for side in ("bid", "ask"):
            for leg_no, leg_in in given.items():
                leg_price = getattr(leg_in, f"{side}_price")
                if side in prices and leg_price is None:
                    raise Invalid("INVALID_PRICE", f"Leg {leg_no} has no {side}_price.")
                if side not in prices and leg_price is not None:
                    raise Invalid("INVALID_PRICE", f"Leg {leg_no} prices a {side} the quote lacks.")
                leg_prices[leg_no][side] = leg_price
    for side, package_price in prices.items():
        total = ZERO
        for leg in rfq_legs:
            price = leg_prices[leg.leg_no][side]
            tick = leg.instrument.tick_size
            # None never: every leg is priced on each side quoted (checked above).
            if price is None or price <= ZERO or price >= LIMIT or not _multiple_of(price, tick):
                raise Invalid(
                    "INVALID_PRICE",
                    f"Leg {leg.leg_no} {side} {dec(price)} must be positive and a multiple of "
                    f"the tick size {dec(tick)} of {leg.instrument.symbol}.",
                    {"leg_no": leg.leg_no, "side": side, "tick_size": dec(tick)},
                )
            total += (1 if leg.side == Side.BUY else -1) * leg.ratio * price
        if total != package_price:
            raise Invalid(
                "INVALID_PRICE",
                f"The {side}_price {dec(package_price)} does not equal the sum of "
                f"the leg prices, {dec(total)} (sum of +/- ratio x leg price).",
                {"side": side, "legs_total": dec(total)},
            )
    rows = [
        QuoteLeg(leg_no=n, bid_price=p["bid"], ask_price=p["ask"]) for n, p in leg_prices.items()
    ]
    expires_at = min(now + timedelta(seconds=expires_in), rfq.expires_at)
    return fields, rows, expires_at


def _quote_hash(rfq_id: UUID, data: QuoteIn, replaces: UUID | None = None) -> str:
    return _request_hash(
        {
            "rfq": str(rfq_id),
            "replaces": str(replaces) if replaces else None,
            "prices": [
                dec(getattr(data, f)) for f in ("bid_price", "bid_size", "ask_price", "ask_size")
            ],
            "legs": None
            if data.legs is None
            else sorted(
                ([leg.leg_no, dec(leg.bid_price), dec(leg.ask_price)] for leg in data.legs),
                key=lambda row: (row[0], row[1] or "", row[2] or ""),
            ),
            "expires_in": data.expires_in,
        }
    )


def _quotes_by_client_id(caller: Caller, client_quote_id: str) -> QuoteQuerySet:
    return Quote.objects.filter(
        firm_id=caller.viewer.firm_id, client_quote_id=client_quote_id
    ).select_related(*QUOTE_RELATED)


def _quote_replayed(existing: Quote, request_hash: str) -> Quote:
    """The quote a replay returns, with details; ``Conflict`` for another body."""
    return quote_details([_replayed(existing, request_hash, "client_quote_id")])[0]


def _quote_insert(
    *,
    caller: Caller,
    rfq: Rfq,
    data: QuoteIn,
    now: datetime,
    request_hash: str,
    replaces: Quote | None = None,
) -> tuple[Quote, bool]:
    """Validate and store a quote on the locked ``rfq`` (the replay check done already).
    Returns ``(quote, created)``: the new quote as ``quote_with_details`` would load it, or
    what a concurrent request with the same ``client_quote_id`` stored."""
    _require_open(rfq, now)
    fields, leg_rows, expires_at = _validate_quote(rfq, data, now)
    try:
        # A savepoint only where a unique violation can happen (a concurrent client_quote_id).
        with transaction.atomic() if data.client_quote_id else contextlib.nullcontext():
            quote = Quote.objects.create(
                rfq=rfq,
                firm=caller.participant.firm,
                maker=caller.participant,
                certificate_serial=caller.serial,
                client_quote_id=data.client_quote_id,
                request_hash=request_hash,
                replaces=replaces,
                created_at=now,
                expires_at=expires_at,
                **fields,
            )
    except IntegrityError:
        existing = _quotes_by_client_id(caller, data.client_quote_id).get()
        return _quote_replayed(existing, request_hash), False
    for row in leg_rows:
        row.quote = quote
    QuoteLeg.objects.bulk_create(leg_rows)
    # As quote_with_details would load it, from what is in memory (no read-back).
    return preloaded(quote, legs=leg_rows, replaced_by=None), True


def _audit_quote(event: str, caller: Caller, quote: Quote, **details: Any) -> None:
    audit_record(
        event=event,
        actor=caller.actor,
        target=quote,
        rfq_id=quote.rfq_id,
        client_quote_id=quote.client_quote_id,
        bid=[quote.bid_price, quote.bid_size],
        ask=[quote.ask_price, quote.ask_size],
        expires_at=quote.expires_at,
        **details,
    )


@transaction.atomic(durable=True)
def quote_create(*, caller: Caller, rfq_id: UUID | str, data: QuoteIn) -> tuple[Quote, bool]:
    """Quote an open RFQ addressed to the caller's firm. Returns ``(quote, created)``, the
    quote loaded as ``quote_with_details``; ``client_quote_id`` replays like
    ``client_rfq_id``. The quote expires ``expires_in`` seconds from now, never after the RFQ.

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a liquidity
    provider, ``NotFound`` (``UNKNOWN_RFQ``) for an RFQ it may not see, ``Conflict``
    (``DUPLICATE_CLIENT_ID``, ``RFQ_EXPIRED``, ``RFQ_NOT_OPEN``) and ``Invalid``
    (``INVALID_EXPIRY``, ``INVALID_PRICE``, ``INVALID_QUANTITY``) for a quote it cannot take."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    rfq = rfq_lock(caller.viewer, rfq_id)
    request_hash = _quote_hash(rfq.pk, data)
    if data.client_quote_id:
        existing = _quotes_by_client_id(caller, data.client_quote_id).first()
        if existing is not None:
            return _quote_replayed(existing, request_hash), False
    quote, created = _quote_insert(
        caller=caller, rfq=rfq, data=data, now=now, request_hash=request_hash
    )
    if created:
        outbox = Outbox(now)
        outbox.quotes([quote], "quote.created")
        _audit_quote("quote.created", caller, quote)
        outbox.append()
    return quote, created


def _lock_quote_rfq(caller: Caller, quote_id: UUID | str) -> tuple[Rfq, UUID]:
    """The RFQ of a quote the caller may see, locked (a quote is only written under its
    RFQ's lock), and the quote's id. ``NotFound`` (``UNKNOWN_QUOTE``) otherwise."""
    quote = quote_get(caller.viewer, quote_id)
    return Rfq.objects.filter(pk=quote.rfq_id).for_update().get(), quote.pk


def _lock_active_quote(rfq: Rfq, quote_id: UUID, now: datetime) -> Quote:
    """The quote, locked and active, with details. ``Conflict`` unless it is active."""
    quote = quote_lock(Quote.objects.filter(pk=quote_id))
    if quote is None:  # it was visible under the same RFQ lock: only a deleted row gets here
        raise NotFound("UNKNOWN_QUOTE", "No such quote.")
    _require_active(quote, now)
    quote.rfq = rfq
    return quote_details([quote])[0]


def _require_active(quote: Quote, now: datetime) -> None:
    state, _ = quote.effective_state(now)
    if state == Quote.State.EXPIRED:
        raise Conflict("QUOTE_EXPIRED", "The quote has expired.", {"state": state})
    if state != Quote.State.ACTIVE:
        raise Conflict("QUOTE_NOT_ACTIVE", f"The quote is {state}.", {"state": state})


@transaction.atomic(durable=True)
def quote_replace(*, caller: Caller, quote_id: UUID | str, data: QuoteIn) -> tuple[Quote, bool]:
    """Replace an active quote of the caller's firm: a new quote, the old one ``replaced``.
    Returns ``(new quote, created)`` as :func:`quote_create`; a replayed ``client_quote_id``
    returns the replacement made the first time.

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a liquidity
    provider, ``NotFound`` (``UNKNOWN_QUOTE``) for a quote it may not see, ``Conflict``
    (``QUOTE_EXPIRED``, ``QUOTE_NOT_ACTIVE``) for one that is not active, and the errors of
    :func:`quote_create` for the new quote."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    # The RFQ's lock first, then the replay check: a retry that waited behind its own first
    # attempt must find the replacement it made, not a quote that is now "replaced".
    rfq, old_id = _lock_quote_rfq(caller, quote_id)
    request_hash = _quote_hash(rfq.pk, data, old_id)
    if data.client_quote_id:
        existing = _quotes_by_client_id(caller, data.client_quote_id).first()
        if existing is not None:
            return _quote_replayed(existing, request_hash), False
    old = _lock_active_quote(rfq, old_id, now)
    new, created = _quote_insert(
        caller=caller, rfq=rfq, data=data, now=now, request_hash=request_hash, replaces=old
    )
    if not created:
        return new, False
    old.save(update_fields=old.close(Quote.State.REPLACED, "replaced", now))
    outbox = Outbox(now)
    outbox.quotes([old], "quote.replaced")
    outbox.quotes([new], "quote.created")
    _audit_quote("quote.replaced", caller, new, replaces=old.pk)
    outbox.append()
    return new, True


@transaction.atomic(durable=True)
def quote_cancel(*, caller: Caller, quote_id: UUID | str) -> Quote:
    """Cancel an active quote of the caller's firm. Returns it, cancelled, loaded as
    ``quote_with_details``.

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a liquidity
    provider, ``NotFound`` (``UNKNOWN_QUOTE``) for a quote it may not see, ``Conflict``
    (``QUOTE_EXPIRED``, ``QUOTE_NOT_ACTIVE``) for one that is not active."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    rfq, quote_pk = _lock_quote_rfq(caller, quote_id)
    quote = _lock_active_quote(rfq, quote_pk, now)
    quote.save(update_fields=quote.close(Quote.State.CANCELLED, "cancelled_by_maker", now))
    outbox = Outbox(now)
    outbox.quotes([quote], "quote.cancelled")
    audit_record(event="quote.cancelled", actor=caller.actor, target=quote, rfq_id=quote.rfq_id)
    outbox.append()
    return quote


@transaction.atomic(durable=True)
def quote_cancel_all(*, caller: Caller, rfq_id: UUID | str | None = None) -> list[Quote]:
    """Cancel every active quote of the caller's firm (on one RFQ, or everywhere); returns
    them, cancelled, newest first. RFQs are locked in id order, so this never deadlocks with
    an accept.

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a liquidity
    provider, ``NotFound`` (``UNKNOWN_RFQ``) for an ``rfq_id`` it may not see."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    active = Quote.objects.filter(firm_id=caller.viewer.firm_id).active(now)
    if rfq_id is not None:
        active = active.filter(rfq_id=rfq_get(caller.viewer, rfq_id).pk)
    rfq_ids = sorted(set(active.values_list("rfq_id", flat=True)))
    list(Rfq.objects.filter(pk__in=rfq_ids).for_update().values_list("pk"))
    quotes = (
        quote_with_details(active.filter(rfq_id__in=rfq_ids))
        .select_related("rfq")
        .close(Quote.State.CANCELLED, "cancel_all", now)
    )
    if not quotes:
        return []
    outbox = Outbox(now)
    outbox.quotes(quotes, "quote.cancelled")
    audit_record_many(
        [
            AuditEntry(
                "quote.cancelled", caller.actor, q, "", "", {"rfq_id": q.rfq_id, "cancel_all": True}
            )
            for q in quotes
        ]
    )
    outbox.append()
    return quotes


# --- accept ------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def rfq_accept(
    *,
    caller: Caller,
    rfq_id: UUID | str,
    quote_id: UUID | str,
    side: str,
    quantity: Decimal | None = None,
    limit_price: Decimal | None = None,
) -> Trade:
    """Take one active quote on an open RFQ of the caller's firm. Returns the trade loaded as
    ``trade_with_details``. Exactly one accept per RFQ can succeed, whatever the concurrency:
    the RFQ row lock serialises them, and the trade's one-to-one key on the RFQ backs it.
    Every other quote closes as ``traded_away``.

    Raises ``PermissionDenied`` (``NOT_AUTHORIZED``) unless the caller is a requester,
    ``NotFound`` (``UNKNOWN_RFQ``, ``UNKNOWN_QUOTE``) for an RFQ it may not see or a quote not
    on it, ``Conflict`` (``RFQ_EXPIRED``, ``RFQ_NOT_OPEN``, ``QUOTE_EXPIRED``,
    ``QUOTE_NOT_ACTIVE``, ``SELF_TRADE``, ``COUNTERPARTY_UNAVAILABLE``,
    ``QUOTE_SIDE_UNAVAILABLE``, ``PRICE_LIMIT_EXCEEDED``) and ``Invalid``
    (``INVALID_QUANTITY``) for a trade that cannot happen."""
    _require(caller, Audience.REQUESTER)
    now = timezone.now()
    rfq = rfq_lock(caller.viewer, rfq_id)
    _require_open(rfq, now)
    quote = quote_lock(Quote.objects.filter(pk=quote_id, rfq=rfq)) if is_uuid(quote_id) else None
    if quote is None:
        raise NotFound("UNKNOWN_QUOTE", "No such quote on this RFQ.")
    _require_active(quote, now)
    if quote.firm_id == rfq.firm_id:
        raise Conflict("SELF_TRADE", "A firm cannot trade with itself.")
    maker = quote.maker
    if not (maker.is_active and maker.firm.is_active):
        raise Conflict("COUNTERPARTY_UNAVAILABLE", "The quoting firm cannot trade now.")
    # The requester buys the package at the ask or sells it at the bid.
    price, size = (
        (quote.ask_price, quote.ask_size) if side == Side.BUY else (quote.bid_price, quote.bid_size)
    )
    # A side's size is None only with its price (the services write them together).
    if price is None or size is None:
        raise Conflict(
            "QUOTE_SIDE_UNAVAILABLE",
            f"The quote has no {'ask' if side == Side.BUY else 'bid'}.",
            {"side": side},
        )
    if limit_price is not None and (
        (side == Side.BUY and price > limit_price) or (side == Side.SELL and price < limit_price)
    ):
        raise Conflict(
            "PRICE_LIMIT_EXCEEDED",
            f"The quote's price {dec(price)} is worse than the limit {dec(limit_price)}.",
            {"price": dec(price), "limit_price": dec(limit_price)},
        )
    rfq_legs = list(rfq_details([rfq], counterparties=False)[0].legs.all())
    if quantity is None:
        quantity = size
    elif not ZERO < quantity <= size:
        raise Invalid("INVALID_QUANTITY", f"quantity must be more than 0 and at most {dec(size)}.")
    _check_leg_quantities([(leg.instrument, leg.ratio) for leg in rfq_legs], quantity)
    leg_prices: dict[int, Decimal] = {}
    for quote_leg in quote_details([quote])[0].legs.all():
        leg_price = quote_leg.ask_price if side == Side.BUY else quote_leg.bid_price
        if leg_price is None:  # never: a quote prices every leg on each side it has
            raise Conflict(
                "QUOTE_SIDE_UNAVAILABLE",
                f"The quote has no {'ask' if side == Side.BUY else 'bid'}.",
                {"side": side},
            )
        leg_prices[quote_leg.leg_no] = leg_price

    trade = Trade.objects.create(
        rfq=rfq,
        quote=quote,
        requester_firm=rfq.firm,
        requester=caller.participant,
        requester_serial=caller.serial,
        maker_firm=quote.firm,
        maker=maker,
        maker_serial=quote.certificate_serial,
        side=side,
        quantity=quantity,
        price=price,
        created_at=now,
    )
    trade_legs = TradeLeg.objects.bulk_create(
        [
            TradeLeg(
                trade=trade,
                leg_no=leg.leg_no,
                instrument=leg.instrument,
                side=leg.side if side == Side.BUY else opposite(leg.side),
                quantity=leg.ratio * quantity,
                price=leg_prices[leg.leg_no],
            )
            for leg in rfq_legs
        ]
    )
    # As trade_with_details would load it, from what is in memory (no read-back).
    preloaded(trade, legs=trade_legs)
    quote.save(update_fields=quote.close(Quote.State.ACCEPTED, "accepted", now))
    losers = _close_quotes([rfq.pk], Quote.State.TRADED_AWAY, "traded_away", now)
    rfq.save(update_fields=rfq.close(Rfq.State.FILLED, "accepted", now))
    rfq_details([rfq])
    outbox = Outbox(now)
    outbox.trade(trade)
    outbox.quotes([quote], "quote.accepted", requester=False)
    outbox.quotes(losers, "quote.traded_away", requester=False)
    outbox.rfq(rfq, "rfq.filled", rfq_maker_firm_ids(rfq))
    audit_record(
        event="trade.executed",
        actor=caller.actor,
        target=trade,
        rfq_id=rfq.pk,
        quote_id=quote.pk,
        side=side,
        quantity=quantity,
        price=price,
        requester_serial=caller.serial,
        maker_serial=quote.certificate_serial,
        quotes_traded_away=[q.pk for q in losers],
    )
    outbox.append()
    return trade


# --- expiry ------------------------------------------------------------------------------------


def rfq_expire_due(*, now: datetime | None = None, batch: int = 500) -> tuple[int, int]:
    """Close open RFQs and active quotes whose time has passed; returns (rfqs, quotes) closed.

    Rows another transaction holds are skipped (SKIP LOCKED): the accept or cancel holding
    them decides their fate, and the next run picks up what is still due. Safe to run twice:
    only rows still open or active are touched. Each batch of ``batch`` RFQs is one durable
    transaction, read and closed in a fixed number of queries plus one UPDATE per RFQ.
    """
    now = now or timezone.now()
    actor = Actor.system("rfq expiry sweep")
    rfqs_closed = quotes_closed = 0
    while True:
        with transaction.atomic(durable=True):
            rfqs = list(
                Rfq.objects.due(now)
                .select_related("firm", "requester")
                .for_update(skip_locked=True)[:batch]
            )
            stale = list(
                Quote.objects.due(now)
                .exclude(rfq_id__in=[r.pk for r in rfqs])
                .values_list("rfq_id", flat=True)[:batch]
            )
            locked = set(
                Rfq.objects.filter(pk__in=set(stale))
                .for_update(skip_locked=True)
                .values_list("pk", flat=True)
            )
            if not rfqs and not locked:
                return rfqs_closed, quotes_closed
            rfq_details(rfqs)
            closed = _by_rfq(
                _close_quotes([r.pk for r in rfqs], Quote.State.EXPIRED, "rfq_expired", now)
            )
            providers = liquidity_provider_ids() if any(r.to_all for r in rfqs) else []
            outbox, entries = Outbox(now), []
            for rfq in rfqs:
                rfq.save(update_fields=rfq.close(Rfq.State.EXPIRED, "expired", now))
                quotes = closed.get(rfq.pk, [])
                quotes_closed += len(quotes)
                entries.append(
                    AuditEntry("rfq.expired", actor, rfq, "", "", {"quotes_closed": len(quotes)})
                )
                outbox.rfq(rfq, "rfq.expired", rfq_maker_firm_ids(rfq, providers=providers))
                outbox.quotes(quotes, "quote.expired", requester=False)
            quotes = (
                quote_with_details(Quote.objects.filter(rfq_id__in=locked).due(now))
                .select_related("rfq")
                .close(Quote.State.EXPIRED, "expired", now)
            )
            quotes_closed += len(quotes)
            entries += [
                AuditEntry("quote.expired", actor, q, "", "", {"rfq_id": q.rfq_id}) for q in quotes
            ]
            outbox.quotes(quotes, "quote.expired")
            rfqs_closed += len(rfqs)
            audit_record_many(entries)
            outbox.append()


def firm_trading_stop(*, firm_id: int, reason: str) -> tuple[int, int]:
    """A firm was suspended or offboarded: cancel its open RFQs and its active quotes, so no
    maker keeps pricing a firm that cannot trade and no requester sees its quotes. Returns
    (rfqs, quotes) closed; a second run finds nothing. RFQs are locked in id order, as
    everywhere, in one durable transaction."""
    now = timezone.now()
    actor = Actor.system(f"firm {reason}")
    with transaction.atomic(durable=True):
        rfq_ids = sorted(
            set(Rfq.objects.filter(firm_id=firm_id).unclosed().values_list("pk", flat=True))
            | set(Quote.objects.filter(firm_id=firm_id).unclosed().values_list("rfq_id", flat=True))
        )
        locked = list(
            Rfq.objects.filter(pk__in=rfq_ids).select_related("firm", "requester").for_update()
        )
        cancelled = rfq_details(
            [rfq for rfq in locked if rfq.firm_id == firm_id and rfq.state == Rfq.State.OPEN]
        )
        closed = _by_rfq(
            _close_quotes([r.pk for r in cancelled], Quote.State.CANCELLED, "rfq_cancelled", now)
        )
        providers = liquidity_provider_ids() if any(r.to_all for r in cancelled) else []
        outbox, entries = Outbox(now), []
        for rfq in cancelled:
            rfq.save(update_fields=rfq.close(Rfq.State.CANCELLED, reason, now))
            outbox.rfq(rfq, "rfq.cancelled", rfq_maker_firm_ids(rfq, providers=providers))
            outbox.quotes(closed.get(rfq.pk, []), "quote.cancelled", requester=False)
            entries.append(AuditEntry("rfq.cancelled", actor, rfq, "", "", {"reason": reason}))
        own = (
            quote_with_details(Quote.objects.filter(firm_id=firm_id, rfq_id__in=rfq_ids))
            .select_related("rfq")
            .close(Quote.State.CANCELLED, reason, now)
        )
        outbox.quotes(own, "quote.cancelled")
        entries += [
            AuditEntry("quote.cancelled", actor, q, "", "", {"reason": reason}) for q in own
        ]
        if entries:
            audit_record_many(entries)
            outbox.append()
    return len(cancelled), len(own)
