"""How an RFQ, a quote, a trade, an instrument or an event looks to one viewer: the API's
responses and the event feed use these same functions, so a field hidden from a viewer is
hidden everywhere, and each shape is built in one place. They only format: what they are given
is already loaded (nothing here queries), and states are the models' (``effective_state``).

Each function returns one shape of :mod:`rfq.shapes`, the definitions the OpenAPI schema is
generated from; mypy checks every key and value against them. No response body of the API is
built anywhere else.

Rules: client ids go only to their owner; an anonymous RFQ hides the requester's firm from
makers; a trade's sides are the viewer's own. Decimals are strings, times UTC ISO 8601.
"""

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol, TypeVar, cast, overload

from pki.authentication import ApiPrincipal
from rfq import shapes
from rfq.models import Event, Instrument, Quote, Rfq, Trade, dec, opposite
from rfq.pagination import Page
from rfq.selectors import RfqRow, Viewer

T = TypeVar("T")
R = TypeVar("R")


@overload
def ts(value: datetime) -> str: ...
@overload
def ts(value: None) -> None: ...
@overload
def ts(value: datetime | None) -> str | None: ...
def ts(value: datetime | None) -> str | None:
    """A time as the API writes it: UTC, ISO 8601, milliseconds, ``Z``; ``None`` stays."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Firm(Protocol):
    """What rendering reads of a firm: a model, or a list row's reference."""

    @property
    def lei(self) -> str: ...

    @property
    def legal_name(self) -> str: ...


def _firm(firm: _Firm) -> shapes.Firm:
    return {"lei": firm.lei, "legal_name": firm.legal_name}


def rfq_render(rfq: Rfq | RfqRow, viewer: Viewer, now: datetime) -> shapes.Rfq:
    """An RFQ (a model read with :func:`~rfq.selectors.rfq_with_details`, or a list row) as
    ``viewer`` sees it at ``now``."""
    owner = viewer.is_requester and rfq.firm_id == viewer.firm_id
    state, reason = rfq.effective_state(now)
    legs = list(rfq.legs.all())
    data: shapes.Rfq = {
        "id": str(rfq.id),
        "state": state,
        "state_reason": reason,
        "quantity": dec(rfq.quantity),
        "legs": [
            {
                "leg_no": leg.leg_no,
                "instrument": leg.instrument.symbol,
                "side": leg.side,
                "ratio": dec(leg.ratio),
                "quantity": dec(leg.ratio * rfq.quantity),
            }
            for leg in legs
        ],
        "anonymous": rfq.anonymous,
        "requester": None if (rfq.anonymous and not owner) else _firm(rfq.firm),
        "created_at": ts(rfq.created_at),
        "expires_at": ts(rfq.expires_at),
        "closed_at": ts(rfq.closed_at),
    }
    if owner:
        data["client_rfq_id"] = rfq.client_rfq_id or None
        data["trader_id"] = rfq.requester.trader_id
        data["counterparties"] = [_firm(link.firm) for link in rfq.counterparty_links.all()]
    return data


def quote_render(quote: Quote, viewer: Viewer, now: datetime) -> shapes.Quote:
    """A quote (read with :func:`~rfq.selectors.quote_with_details`) as ``viewer`` sees it
    at ``now``."""
    owner = not viewer.is_requester and quote.firm_id == viewer.firm_id
    state, reason = quote.effective_state(now)
    replaced_by = getattr(quote, "replaced_by", None)
    data: shapes.Quote = {
        "id": str(quote.id),
        "rfq_id": str(quote.rfq_id),
        "state": state,
        "state_reason": reason,
        "maker": _firm(quote.firm),
        "bid_price": dec(quote.bid_price),
        "bid_size": dec(quote.bid_size),
        "ask_price": dec(quote.ask_price),
        "ask_size": dec(quote.ask_size),
        "legs": [
            {"leg_no": leg.leg_no, "bid_price": dec(leg.bid_price), "ask_price": dec(leg.ask_price)}
            for leg in quote.legs.all()
        ],
        "replaces": str(quote.replaces_id) if quote.replaces_id else None,
        "replaced_by": str(replaced_by.id) if replaced_by else None,
        "created_at": ts(quote.created_at),
        "expires_at": ts(quote.expires_at),
        "closed_at": ts(quote.closed_at),
    }
    if owner:
        data["client_quote_id"] = quote.client_quote_id or None
        data["trader_id"] = quote.maker.trader_id
    return data


def trade_render(trade: Trade, viewer: Viewer) -> shapes.Trade:
    """A trade (read with :func:`~rfq.selectors.trade_with_details`) from ``viewer``'s
    side."""
    as_requester = viewer.is_requester
    data: shapes.Trade = {
        "id": str(trade.id),
        "rfq_id": str(trade.rfq_id),
        "quote_id": str(trade.quote_id),
        "role": "requester" if as_requester else "maker",
        "side": trade.side if as_requester else opposite(trade.side),
        "quantity": dec(trade.quantity),
        "price": dec(trade.price),
        "legs": [
            {
                "leg_no": leg.leg_no,
                "instrument": leg.instrument.symbol,
                "side": leg.side if as_requester else opposite(leg.side),
                "quantity": dec(leg.quantity),
                "price": dec(leg.price),
            }
            for leg in trade.legs.all()
        ],
        # Post-trade, both firms are disclosed to each other (settlement needs it), also for
        # an anonymous RFQ: anonymity is pre-trade (FIX PreTradeAnonymity 1091).
        "requester": _firm(trade.requester_firm),
        "maker": _firm(trade.maker_firm),
        "created_at": ts(trade.created_at),
        "trader_id": (trade.requester if as_requester else trade.maker).trader_id,
    }
    if as_requester:
        data["client_rfq_id"] = trade.rfq.client_rfq_id or None
    else:
        data["client_quote_id"] = trade.quote.client_quote_id or None
    return data


def instrument_render(instrument: Instrument) -> shapes.Instrument:
    """An instrument of the reference data (the same for every viewer)."""
    return {
        "symbol": instrument.symbol,
        "kind": instrument.kind,
        "underlying": instrument.underlying,
        "quote_currency": instrument.quote_currency,
        "expiry": ts(instrument.expiry),
        "strike": dec(instrument.strike),
        "option_type": instrument.option_type or None,
        "tick_size": dec(instrument.tick_size),
        "min_size": dec(instrument.min_size),
    }


def event_render(event: Event) -> shapes.Event:
    """An event of the feed, for the long-poll answer and the SSE stream alike (its ``data``
    was rendered for its desk, by the functions above, when it was appended)."""
    return {
        "seq": event.seq,
        "type": event.type,
        "created_at": ts(event.created_at),
        "data": cast("shapes.RfqData | shapes.QuoteData | shapes.TradeData", event.data),
    }


def events_render(events: list[Event], since: int) -> shapes.Events:
    """A long-poll's answer: the events, and where the next call resumes."""
    return {
        "events": [event_render(e) for e in events],
        "next_since": events[-1].seq if events else since,
    }


def instruments_render(instruments: Iterable[Instrument]) -> shapes.InstrumentList:
    """The reference data's list."""
    return {"results": [instrument_render(i) for i in instruments]}


def rfq_page_render(results: list[shapes.Rfq], next_cursor: str | None) -> shapes.RfqPage:
    """A page of RFQs (each rendered by :func:`rfq_render`) and the cursor of the next."""
    return {"results": results, "next_cursor": next_cursor}


def quote_page_render(page: Page[Quote], viewer: Viewer, now: datetime) -> shapes.QuotePage:
    """A page of quotes and the cursor of the next."""
    return {
        "results": _rows(page, lambda q: quote_render(q, viewer, now)),
        "next_cursor": page.next_cursor,
    }


def trade_page_render(page: Page[Trade], viewer: Viewer) -> shapes.TradePage:
    """A page of trades and the cursor of the next."""
    return {
        "results": _rows(page, lambda t: trade_render(t, viewer)),
        "next_cursor": page.next_cursor,
    }


def _rows(page: Page[T], render: Callable[[T], R]) -> list[R]:
    return [render(row) for row in page.rows]


def cancelled_render(quotes: Iterable[Quote]) -> shapes.CancelAll:
    """A cancel-all's answer: the ids of the quotes it cancelled."""
    return {"cancelled": [str(q.pk) for q in quotes]}


def whoami_render(principal: ApiPrincipal, now: datetime) -> shapes.WhoAmI:
    """Who the platform takes the caller for: firm, participant, and the certificate."""
    participant = principal.participant
    firm = participant.firm
    not_after = principal.not_after
    if not_after is None:  # never: every certificate the venue issues has a not_after
        raise TypeError("the trusted certificate has no not_after")
    return {
        "firm": {"legal_name": firm.legal_name, "lei": firm.lei, "role": firm.role},
        "participant": {
            "trader_id": participant.trader_id,
            "name": participant.name,
            "role": participant.role,
            "san_uri": participant.san_uri,
        },
        "certificate": {
            "serial": principal.serial,
            "fingerprint_sha256": principal.decision.fingerprint_sha256,
            "not_after": ts(not_after),
            "days_to_expiry": (not_after - now).days,
        },
        "checked_at": ts(now),
    }
