"""RFQ services: create, cancel, quote, replace, accept, expire.

Every state change runs in one durable transaction under the RFQ's row lock (a quote is only
written while its RFQ is locked; several RFQs are locked in id order), checks its invariant
here and nowhere else, applies the models' transitions (``Rfq.close``, ``Quote.close``,
``Quote.objects…close``), writes its audit record with the caller's certificate serial, then
appends the events each desk should see (:mod:`rfq.events`). Errors carry FIX-inspired codes
(FIX 658 QuoteRequestRejectReason, 300 QuoteRejectReason) and change nothing.
"""

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from kernel.audit import Actor, AuditEntry, AuditRecord, audit_record, audit_record_many
from kernel.errors import Conflict, Invalid, NotFound, PermissionDenied
from kernel.models import Firm, Participant
from rfq.events import Draft, events_append
from rfq.models import (
    Audience,
    Instrument,
    Quote,
    QuoteLeg,
    Rfq,
    RfqCounterparty,
    RfqLeg,
    Side,
    Trade,
    TradeLeg,
    dec,
    opposite,
    preloaded,
)
from rfq.render import quote_render, rfq_render, trade_render
from rfq.selectors import (
    Viewer,
    instrument_list,
    is_uuid,
    quote_get,
    quote_with_details,
    rfq_get,
    rfq_with_details,
    trade_with_details,
)

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
        return Viewer.of(self.participant)

    @property
    def actor(self) -> Actor:
        return Actor(
            AuditRecord.ActorType.CERTIFICATE,
            self.serial,
            f"{self.participant.trader_id} ({self.serial})",
        )


# --- input shapes (validated for type and range by the API's serializers) --------------------


@dataclass(frozen=True)
class LegIn:
    instrument: str
    side: str
    ratio: Decimal = Decimal(1)


@dataclass(frozen=True)
class QuoteLegIn:
    leg_no: int
    bid_price: Decimal | None = None
    ask_price: Decimal | None = None


@dataclass(frozen=True)
class QuoteIn:
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
    found = {i.symbol: i for i in instrument_list(now).filter(symbol__in=symbols)}
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


def _maker_firm_ids(rfq: Rfq, named: list[int] | None = None) -> list[int]:
    """The liquidity-provider firms that may see the RFQ (and get its events)."""
    if named is None:
        named = list(RfqCounterparty.objects.filter(rfq=rfq).values_list("firm_id", flat=True))
    if not rfq.to_all:
        return named
    return list(
        Firm.objects.liquidity_providers().exclude(pk=rfq.firm_id).values_list("pk", flat=True)
    )


def _rfq_drafts(
    rfq: Rfq, type_: str, now: datetime, makers: list[int], *, detailed: bool = False
) -> list[Draft]:
    """The events of one RFQ for its requester's desk and the makers'. Built before the
    audit append: the audit and event locks are global, so nothing slow happens under them."""
    if not detailed:
        rfq = rfq_with_details(Rfq.objects.filter(pk=rfq.pk)).get()
    requester = Viewer(rfq.firm_id, 0, Audience.REQUESTER)
    drafts = [
        Draft(rfq.firm_id, Audience.REQUESTER, type_, {"rfq": rfq_render(rfq, requester, now)})
    ]
    if makers:
        as_maker = {"rfq": rfq_render(rfq, Viewer(makers[0], 0, Audience.MAKER), now)}
        drafts += [Draft(firm_id, Audience.MAKER, type_, as_maker) for firm_id in makers]
    return drafts


def _quote_drafts(
    quotes: list[Quote], type_: str, now: datetime, *, requester: bool = True
) -> list[Draft]:
    drafts = []
    for quote in quote_with_details(
        Quote.objects.filter(pk__in=[q.pk for q in quotes])
    ).select_related("rfq"):
        maker = Viewer(quote.firm_id, 0, Audience.MAKER)
        drafts.append(
            Draft(quote.firm_id, Audience.MAKER, type_, {"quote": quote_render(quote, maker, now)})
        )
        if requester:
            owner = Viewer(quote.rfq.firm_id, 0, Audience.REQUESTER)
            drafts.append(
                Draft(
                    quote.rfq.firm_id,
                    Audience.REQUESTER,
                    type_,
                    {"quote": quote_render(quote, owner, now)},
                )
            )
    return drafts


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
    """Open an RFQ. Returns ``(rfq, created)``: replaying a ``client_rfq_id`` with the same
    body returns the original (``created`` False), with another body raises 409
    DUPLICATE_CLIENT_ID; concurrent replays create one RFQ (the unique constraint decides)."""
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
        existing = Rfq.objects.filter(firm=firm, client_rfq_id=client_rfq_id).first()
        if existing is not None:
            return _replayed(existing, request_hash, "client_rfq_id"), False

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
        existing = Rfq.objects.get(firm=firm, client_rfq_id=client_rfq_id)
        return _replayed(existing, request_hash, "client_rfq_id"), False
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
    rfq.firm, rfq.requester = firm, caller.participant
    preloaded(rfq, legs=leg_rows, counterparty_links=links)
    drafts = _rfq_drafts(
        rfq, "rfq.created", now, _maker_firm_ids(rfq, [f.pk for f in named]), detailed=True
    )
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
    events_append(drafts)
    return rfq, True


def _replayed(existing: Rfq | Quote, request_hash: str, field: str):
    if existing.request_hash != request_hash:
        raise Conflict(
            "DUPLICATE_CLIENT_ID",
            f"This {field} was already used with a different request.",
            {"id": str(existing.pk)},
        )
    return existing


def _close_quotes(rfq: Rfq, state: str, reason: str, now: datetime) -> list[Quote]:
    return Quote.objects.filter(rfq=rfq).close(state, reason, now)


@transaction.atomic(durable=True)
def rfq_cancel(*, caller: Caller, rfq_id: UUID | str) -> Rfq:
    """Cancel an open RFQ of the caller's firm; its active quotes close with it."""
    _require(caller, Audience.REQUESTER)
    now = timezone.now()
    rfq = rfq_get(caller.viewer, rfq_id, for_update=True)
    _require_open(rfq, now)
    rfq.save(update_fields=rfq.close(Rfq.State.CANCELLED, "cancelled_by_requester", now))
    closed = _close_quotes(rfq, Quote.State.CANCELLED, "rfq_cancelled", now)
    drafts = _rfq_drafts(rfq, "rfq.cancelled", now, _maker_firm_ids(rfq)) + _quote_drafts(
        closed, "quote.cancelled", now, requester=False
    )
    audit_record(event="rfq.cancelled", actor=caller.actor, target=rfq, quotes_closed=len(closed))
    events_append(drafts)
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
) -> tuple[dict, list[QuoteLeg], datetime]:
    """Check a quote against its RFQ; returns (quote fields, leg rows, expires_at)."""
    cfg = settings.KEYLINE_RFQ
    expires_in = cfg["QUOTE_EXPIRY_DEFAULT"] if data.expires_in is None else data.expires_in
    if not cfg["QUOTE_EXPIRY_MIN"] <= expires_in <= cfg["QUOTE_EXPIRY_MAX"]:
        raise Invalid(
            "INVALID_EXPIRY",
            f"expires_in must be {cfg['QUOTE_EXPIRY_MIN']}-{cfg['QUOTE_EXPIRY_MAX']} seconds.",
        )
    rfq_legs = list(rfq.legs.select_related("instrument").order_by("leg_no"))
    fields: dict[str, Decimal | None] = {}
    sides = []
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
        sides.append(side)
    if not sides:
        raise Invalid("INVALID_PRICE", "A quote needs a bid, an ask or both.")
    if len(sides) == 2 and fields["bid_price"] >= fields["ask_price"]:
        raise Invalid("INVALID_PRICE", "The bid must be below the ask.")

    leg_prices: dict[int, dict[str, Decimal | None]] = {
        leg.leg_no: {"bid": None, "ask": None} for leg in rfq_legs
    }
    if data.legs is None:
        if len(rfq_legs) > 1:
            raise Invalid("INVALID_PRICE", "A multi-leg quote needs a price for every leg.")
        leg = rfq_legs[0]
        sign = 1 if leg.side == Side.BUY else -1
        for side in sides:
            leg_prices[1][side] = fields[f"{side}_price"] / (sign * leg.ratio)
    else:
        given = {leg.leg_no: leg for leg in data.legs}
        if len(given) != len(data.legs) or set(given) != set(leg_prices):
            raise Invalid(
                "INVALID_PRICE",
                f"Give each leg 1-{len(rfq_legs)} exactly once.",
                {"legs": sorted(given)},
            )
        for side in ("bid", "ask"):
            for leg_no, leg in given.items():
                price = getattr(leg, f"{side}_price")
                if side in sides and price is None:
                    raise Invalid("INVALID_PRICE", f"Leg {leg_no} has no {side}_price.")
                if side not in sides and price is not None:
                    raise Invalid("INVALID_PRICE", f"Leg {leg_no} prices a {side} the quote lacks.")
                leg_prices[leg_no][side] = price
    for side in sides:
        total = ZERO
        for leg in rfq_legs:
            price = leg_prices[leg.leg_no][side]
            tick = leg.instrument.tick_size
            if price <= ZERO or price >= LIMIT or not _multiple_of(price, tick):
                raise Invalid(
                    "INVALID_PRICE",
                    f"Leg {leg.leg_no} {side} {dec(price)} must be positive and a multiple of "
                    f"the tick size {dec(tick)} of {leg.instrument.symbol}.",
                    {"leg_no": leg.leg_no, "side": side, "tick_size": dec(tick)},
                )
            total += (1 if leg.side == Side.BUY else -1) * leg.ratio * price
        if total != fields[f"{side}_price"]:
            raise Invalid(
                "INVALID_PRICE",
                f"The {side}_price {dec(fields[f'{side}_price'])} does not equal the sum of "
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


def _quote_insert(
    *, caller: Caller, rfq: Rfq, data: QuoteIn, now: datetime, replaces: Quote | None = None
) -> tuple[Quote, bool]:
    request_hash = _quote_hash(rfq.pk, data, replaces.pk if replaces else None)
    if data.client_quote_id:
        existing = Quote.objects.filter(
            firm_id=caller.viewer.firm_id, client_quote_id=data.client_quote_id
        ).first()
        if existing is not None:
            return _replayed(existing, request_hash, "client_quote_id"), False
    _require_open(rfq, now)
    fields, leg_rows, expires_at = _validate_quote(rfq, data, now)
    try:
        with transaction.atomic():
            quote = Quote.objects.create(
                rfq=rfq,
                firm_id=caller.viewer.firm_id,
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
        existing = Quote.objects.get(
            firm_id=caller.viewer.firm_id, client_quote_id=data.client_quote_id
        )
        return _replayed(existing, request_hash, "client_quote_id"), False
    for row in leg_rows:
        row.quote = quote
    QuoteLeg.objects.bulk_create(leg_rows)
    return quote, True


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
    """Quote an open RFQ addressed to the caller's firm. ``client_quote_id`` replays like
    ``client_rfq_id``. The quote expires ``expires_in`` seconds from now, never after the RFQ."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    rfq = rfq_get(caller.viewer, rfq_id, for_update=True)
    quote, created = _quote_insert(caller=caller, rfq=rfq, data=data, now=now)
    if created:
        drafts = _quote_drafts([quote], "quote.created", now)
        _audit_quote("quote.created", caller, quote)
        events_append(drafts)
    return quote, created


def _locked_own_quote(caller: Caller, quote_id: UUID | str, now: datetime) -> tuple[Rfq, Quote]:
    quote = quote_get(caller.viewer, quote_id)
    rfq = Rfq.objects.select_for_update().get(pk=quote.rfq_id)
    quote = Quote.objects.select_for_update().get(pk=quote.pk)
    _require_active(quote, now)
    return rfq, quote


def _require_active(quote: Quote, now: datetime) -> None:
    state, _ = quote.effective_state(now)
    if state == Quote.State.EXPIRED:
        raise Conflict("QUOTE_EXPIRED", "The quote has expired.", {"state": state})
    if state != Quote.State.ACTIVE:
        raise Conflict("QUOTE_NOT_ACTIVE", f"The quote is {state}.", {"state": state})


@transaction.atomic(durable=True)
def quote_replace(*, caller: Caller, quote_id: UUID | str, data: QuoteIn) -> tuple[Quote, bool]:
    """Replace an active quote of the caller's firm: a new quote, the old one ``replaced``."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    # The RFQ's lock first, then the replay check: a retry that waited behind its own first
    # attempt must find the replacement it made, not a quote that is now "replaced".
    old = quote_get(caller.viewer, quote_id)
    list(Rfq.objects.select_for_update().filter(pk=old.rfq_id).values_list("pk"))
    if data.client_quote_id:
        existing = Quote.objects.filter(
            firm_id=caller.viewer.firm_id, client_quote_id=data.client_quote_id
        ).first()
        if existing is not None:
            return _replayed(
                existing, _quote_hash(old.rfq_id, data, old.pk), "client_quote_id"
            ), False
    rfq, old = _locked_own_quote(caller, quote_id, now)
    new, _ = _quote_insert(caller=caller, rfq=rfq, data=data, now=now, replaces=old)
    old.save(update_fields=old.close(Quote.State.REPLACED, "replaced", now))
    drafts = _quote_drafts([old], "quote.replaced", now) + _quote_drafts(
        [new], "quote.created", now
    )
    _audit_quote("quote.replaced", caller, new, replaces=old.pk)
    events_append(drafts)
    return new, True


@transaction.atomic(durable=True)
def quote_cancel(*, caller: Caller, quote_id: UUID | str) -> Quote:
    _require(caller, Audience.MAKER)
    now = timezone.now()
    _, quote = _locked_own_quote(caller, quote_id, now)
    quote.save(update_fields=quote.close(Quote.State.CANCELLED, "cancelled_by_maker", now))
    drafts = _quote_drafts([quote], "quote.cancelled", now)
    audit_record(event="quote.cancelled", actor=caller.actor, target=quote, rfq_id=quote.rfq_id)
    events_append(drafts)
    return quote


@transaction.atomic(durable=True)
def quote_cancel_all(*, caller: Caller, rfq_id: UUID | str | None = None) -> list[Quote]:
    """Cancel every active quote of the caller's firm (on one RFQ, or everywhere). RFQs are
    locked in id order, so this never deadlocks with an accept."""
    _require(caller, Audience.MAKER)
    now = timezone.now()
    active = Quote.objects.filter(firm_id=caller.viewer.firm_id).active(now)
    if rfq_id is not None:
        active = active.filter(rfq_id=rfq_get(caller.viewer, rfq_id).pk)
    rfq_ids = sorted(set(active.values_list("rfq_id", flat=True)))
    list(Rfq.objects.filter(pk__in=rfq_ids).for_update().values_list("pk"))
    quotes = active.filter(rfq_id__in=rfq_ids).close(Quote.State.CANCELLED, "cancel_all", now)
    if not quotes:
        return []
    drafts = _quote_drafts(quotes, "quote.cancelled", now)
    audit_record_many(
        [
            AuditEntry(
                "quote.cancelled", caller.actor, q, "", "", {"rfq_id": q.rfq_id, "cancel_all": True}
            )
            for q in quotes
        ]
    )
    events_append(drafts)
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
    """Take one active quote on an open RFQ of the caller's firm. Exactly one accept per RFQ
    can succeed, whatever the concurrency: the RFQ row lock serialises them, and the trade's
    one-to-one key on the RFQ backs it. Every other quote closes as ``traded_away``."""
    _require(caller, Audience.REQUESTER)
    now = timezone.now()
    rfq = rfq_get(caller.viewer, rfq_id, for_update=True)
    _require_open(rfq, now)
    quote = (
        Quote.objects.select_for_update().filter(pk=quote_id, rfq=rfq).first()
        if is_uuid(quote_id)
        else None
    )
    if quote is None:
        raise NotFound("UNKNOWN_QUOTE", "No such quote on this RFQ.")
    _require_active(quote, now)
    if quote.firm_id == rfq.firm_id:
        raise Conflict("SELF_TRADE", "A firm cannot trade with itself.")
    maker = Participant.objects.select_related("firm").get(pk=quote.maker_id)
    if not (maker.is_active and maker.firm.is_active):
        raise Conflict("COUNTERPARTY_UNAVAILABLE", "The quoting firm cannot trade now.")
    # The requester buys the package at the ask or sells it at the bid.
    price, size = (
        (quote.ask_price, quote.ask_size) if side == Side.BUY else (quote.bid_price, quote.bid_size)
    )
    if price is None:
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
    rfq_legs = list(rfq.legs.select_related("instrument").order_by("leg_no"))
    if quantity is None:
        quantity = size
    elif not ZERO < quantity <= size:
        raise Invalid("INVALID_QUANTITY", f"quantity must be more than 0 and at most {dec(size)}.")
    _check_leg_quantities([(leg.instrument, leg.ratio) for leg in rfq_legs], quantity)

    trade = Trade.objects.create(
        rfq=rfq,
        quote=quote,
        requester_firm_id=rfq.firm_id,
        requester=caller.participant,
        requester_serial=caller.serial,
        maker_firm_id=quote.firm_id,
        maker_id=quote.maker_id,
        maker_serial=quote.certificate_serial,
        side=side,
        quantity=quantity,
        price=price,
        created_at=now,
    )
    quote_legs = {leg.leg_no: leg for leg in quote.legs.all()}
    TradeLeg.objects.bulk_create(
        TradeLeg(
            trade=trade,
            leg_no=leg.leg_no,
            instrument=leg.instrument,
            side=leg.side if side == Side.BUY else opposite(leg.side),
            quantity=leg.ratio * quantity,
            price=quote_legs[leg.leg_no].ask_price
            if side == Side.BUY
            else quote_legs[leg.leg_no].bid_price,
        )
        for leg in rfq_legs
    )
    quote.save(update_fields=quote.close(Quote.State.ACCEPTED, "accepted", now))
    losers = _close_quotes(rfq, Quote.State.TRADED_AWAY, "traded_away", now)
    rfq.save(update_fields=rfq.close(Rfq.State.FILLED, "accepted", now))
    trade = trade_with_details(Trade.objects.filter(pk=trade.pk)).get()
    drafts = [
        Draft(
            rfq.firm_id,
            Audience.REQUESTER,
            "trade.created",
            {"trade": trade_render(trade, Viewer(rfq.firm_id, 0, Audience.REQUESTER))},
        ),
        Draft(
            quote.firm_id,
            Audience.MAKER,
            "trade.created",
            {"trade": trade_render(trade, Viewer(quote.firm_id, 0, Audience.MAKER))},
        ),
    ]
    drafts += _quote_drafts([quote], "quote.accepted", now, requester=False)
    drafts += _quote_drafts(losers, "quote.traded_away", now, requester=False)
    drafts += _rfq_drafts(rfq, "rfq.filled", now, _maker_firm_ids(rfq))
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
    events_append(drafts)
    return trade


# --- expiry ------------------------------------------------------------------------------------


def rfq_expire_due(*, now: datetime | None = None, batch: int = 500) -> tuple[int, int]:
    """Close open RFQs and active quotes whose time has passed; returns (rfqs, quotes) closed.

    Rows another transaction holds are skipped (SKIP LOCKED): the accept or cancel holding
    them decides their fate, and the next run picks up what is still due. Safe to run twice:
    only rows still open or active are touched.
    """
    now = now or timezone.now()
    actor = Actor.system("rfq expiry sweep")
    rfqs_closed = quotes_closed = 0
    while True:
        with transaction.atomic(durable=True):
            rfqs = list(Rfq.objects.due(now).for_update(skip_locked=True)[:batch])
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
            entries, drafts = [], []
            for rfq in rfqs:
                rfq.save(update_fields=rfq.close(Rfq.State.EXPIRED, "expired", now))
                closed = _close_quotes(rfq, Quote.State.EXPIRED, "rfq_expired", now)
                quotes_closed += len(closed)
                entries.append(
                    AuditEntry("rfq.expired", actor, rfq, "", "", {"quotes_closed": len(closed)})
                )
                drafts += _rfq_drafts(rfq, "rfq.expired", now, _maker_firm_ids(rfq))
                drafts += _quote_drafts(closed, "quote.expired", now, requester=False)
            quotes = (
                Quote.objects.filter(rfq_id__in=locked)
                .due(now)
                .close(Quote.State.EXPIRED, "expired", now)
            )
            quotes_closed += len(quotes)
            entries += [
                AuditEntry("quote.expired", actor, q, "", "", {"rfq_id": q.rfq_id}) for q in quotes
            ]
            drafts += _quote_drafts(quotes, "quote.expired", now)
            rfqs_closed += len(rfqs)
            audit_record_many(entries)
            events_append(drafts)


def firm_trading_stop(*, firm_id: int, reason: str) -> tuple[int, int]:
    """A firm was suspended or offboarded: cancel its open RFQs and its active quotes, so no
    maker keeps pricing a firm that cannot trade and no requester sees its quotes. Returns
    (rfqs, quotes) closed. RFQs are locked in id order, as everywhere."""
    now = timezone.now()
    actor = Actor.system(f"firm {reason}")
    with transaction.atomic(durable=True):
        rfq_ids = sorted(
            set(Rfq.objects.filter(firm_id=firm_id).unclosed().values_list("pk", flat=True))
            | set(Quote.objects.filter(firm_id=firm_id).unclosed().values_list("rfq_id", flat=True))
        )
        locked = list(Rfq.objects.filter(pk__in=rfq_ids).for_update())
        entries, drafts, closed_rfqs, closed_quotes = [], [], 0, []
        for rfq in locked:
            if rfq.firm_id == firm_id and rfq.state == Rfq.State.OPEN:
                rfq.save(update_fields=rfq.close(Rfq.State.CANCELLED, reason, now))
                quotes = _close_quotes(rfq, Quote.State.CANCELLED, "rfq_cancelled", now)
                drafts += _rfq_drafts(rfq, "rfq.cancelled", now, _maker_firm_ids(rfq))
                drafts += _quote_drafts(quotes, "quote.cancelled", now, requester=False)
                entries.append(AuditEntry("rfq.cancelled", actor, rfq, "", "", {"reason": reason}))
                closed_rfqs += 1
        own = Quote.objects.filter(firm_id=firm_id, rfq_id__in=rfq_ids).close(
            Quote.State.CANCELLED, reason, now
        )
        closed_quotes = own
        drafts += _quote_drafts(own, "quote.cancelled", now)
        entries += [
            AuditEntry("quote.cancelled", actor, q, "", "", {"reason": reason}) for q in own
        ]
        if entries:
            audit_record_many(entries)
            events_append(drafts)
    return closed_rfqs, len(closed_quotes)
