"""Who may see what: the one place the RFQ visibility rules live (docs/api.md, "Visibility").

A caller is a :class:`Viewer`: a firm and the desk its participant works on. A requester sees
its firm's RFQs, every quote on them and its firm's trades. A liquidity provider sees the RFQs
addressed to its firm (named, or sent to all) by other firms, only its firm's quotes, and the
trades its firm made. Nobody sees anything else, and what a viewer may not see does not exist
for it: every ``*_get`` raises the same 404 for missing and forbidden.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet, prefetch_related_objects

from kernel.errors import NotFound
from kernel.models import Participant
from rfq.models import (
    Audience,
    Event,
    Instrument,
    Lapsing,
    Quote,
    QuoteLeg,
    QuoteQuerySet,
    Rfq,
    RfqCounterparty,
    RfqLeg,
    RfqQuerySet,
    Trade,
    TradeLeg,
)
from rfq.pagination import Page, newest_first, paginate
from rfq.reference import liquidity_provider_ids


@dataclass(frozen=True)
class Viewer:
    """Who is looking: a firm and its desk (``participant_id`` 0 for the desk as a whole)."""

    firm_id: int
    participant_id: int
    audience: str  # Audience.REQUESTER or Audience.MAKER

    @classmethod
    def of(cls, participant: Participant) -> "Viewer":
        """The participant's view: its firm, seen from its desk."""
        audience = (
            Audience.REQUESTER if participant.role == Participant.Role.REQUESTER else Audience.MAKER
        )
        return cls(participant.firm_id, participant.pk, audience)

    @classmethod
    def desk(cls, firm_id: int, audience: str) -> "Viewer":
        """A firm's desk as a whole (what its event feed shows), no one participant."""
        return cls(firm_id, 0, audience)

    @property
    def is_requester(self) -> bool:
        """Whether this is a requester's desk (else a liquidity provider's)."""
        return self.audience == Audience.REQUESTER


def _addressed_to(firm_id: int) -> Q:
    named = RfqCounterparty.objects.filter(rfq=OuterRef("pk"), firm_id=firm_id)
    return (Q(to_all=True) | Q(Exists(named))) & ~Q(firm_id=firm_id)


def rfq_visible(viewer: Viewer) -> RfqQuerySet:
    """The RFQs the viewer may see: its firm's (a requester) or those addressed to its firm
    by another firm (a liquidity provider)."""
    if viewer.is_requester:
        return Rfq.objects.filter(firm_id=viewer.firm_id)
    return Rfq.objects.filter(_addressed_to(viewer.firm_id))


def _rfq_prefetches(counterparties: bool) -> "list[Prefetch[Any, Any, Any]]":
    prefetches: list[Prefetch[Any, Any, Any]] = [
        Prefetch("legs", queryset=RfqLeg.objects.select_related("instrument").order_by("leg_no"))
    ]
    if counterparties:
        prefetches.append(
            Prefetch(
                "counterparty_links",
                queryset=RfqCounterparty.objects.select_related("firm").order_by("firm__lei"),
            )
        )
    return prefetches


def rfq_with_details(queryset: RfqQuerySet, *, counterparties: bool = True) -> RfqQuerySet:
    """Everything the RFQ output renders, in a fixed number of queries (the counterparty
    list only for the requester's firm, the only one shown it)."""
    return queryset.select_related("firm", "requester").prefetch_related(
        *_rfq_prefetches(counterparties)
    )


def rfq_details(rfqs: list[Rfq], *, counterparties: bool = True) -> list[Rfq]:
    """Load onto RFQs already read with their firm and requester (:func:`rfq_lock`,
    :meth:`~rfq.models.RfqQuerySet.for_update` after ``select_related``) the rest of what
    :func:`rfq_with_details` loads: the legs with their instruments, and the counterparties.
    One query per relation for the whole list; returns the list."""
    prefetch_related_objects(rfqs, *_rfq_prefetches(counterparties))
    return rfqs


def rfq_get(viewer: Viewer, rfq_id: UUID | str, *, details: bool = False) -> Rfq:
    """The RFQ, if the viewer may see it; with ``details``, loaded as
    :func:`rfq_with_details` for this viewer. Raises ``NotFound`` (``UNKNOWN_RFQ``) for a
    missing, forbidden or malformed id alike."""
    if not is_uuid(rfq_id):
        # Checked before any query is built: a malformed id is a missing RFQ, not a 500.
        raise NotFound("UNKNOWN_RFQ", "No such RFQ.")
    queryset = rfq_visible(viewer).filter(pk=rfq_id)
    if details:
        queryset = rfq_with_details(queryset, counterparties=viewer.is_requester)
    rfq = queryset.first()
    if rfq is None:
        raise NotFound("UNKNOWN_RFQ", "No such RFQ.")
    return rfq


def rfq_lock(viewer: Viewer, rfq_id: UUID | str) -> Rfq:
    """The RFQ, if the viewer may see it, locked (its row only) to the end of the
    transaction, read with its firm and requester (:func:`rfq_details` adds the rest).
    Raises ``NotFound`` (``UNKNOWN_RFQ``) like :func:`rfq_get`."""
    if not is_uuid(rfq_id):
        raise NotFound("UNKNOWN_RFQ", "No such RFQ.")
    # The visibility check is a semi-join, not a join: nothing else is locked.
    visible = rfq_visible(viewer).filter(pk=rfq_id)
    rfq = (
        Rfq.objects.filter(pk__in=visible).select_related("firm", "requester").for_update().first()
    )
    if rfq is None:
        raise NotFound("UNKNOWN_RFQ", "No such RFQ.")
    return rfq


def rfq_maker_firm_ids(rfq: Rfq, *, providers: list[int] | None = None) -> list[int]:
    """The liquidity-provider firms that may see the RFQ, and get its events: the firms it
    names (read from its counterparty links, prefetched or not), or, sent to all, every
    liquidity provider but the requester's firm. ``providers`` is
    :func:`rfq.reference.liquidity_provider_ids` when the caller has read it already."""
    if not rfq.to_all:
        return [link.firm_id for link in rfq.counterparty_links.all()]
    if providers is None:
        providers = liquidity_provider_ids()
    return [firm_id for firm_id in providers if firm_id != rfq.firm_id]


def rfq_page_ids(
    viewer: Viewer, *, state: str | None, now: datetime, before: UUID | None, limit: int
) -> list[tuple[UUID, str]]:
    """Ids of the newest ``limit`` RFQs the viewer may see (below ``before``) whose state as
    the caller sees it (:meth:`~rfq.models.RfqQuerySet.with_effective_state`) is ``state``,
    newest first.

    For a maker, "sent to all, not by my firm" and "naming my firm" are two index-ordered
    queries (``rfq_to_all_id_idx``; ``rfq_counterparty_unique`` on (firm, rfq)), merged here:
    one query with ``to_all OR EXISTS(...)`` makes PostgreSQL read every counterparty row
    naming the firm on each page (60 ms at 1M RFQs, bench/bench_rfq.py)."""
    rfqs = Rfq.objects.with_effective_state(state, now)
    if before is not None:
        rfqs = rfqs.filter(pk__lt=before)
    if viewer.is_requester:
        queries = [rfqs.filter(firm_id=viewer.firm_id).order_by("-pk")]
    elif connection.vendor != "postgresql":
        queries = [rfqs.filter(_addressed_to(viewer.firm_id)).order_by("-pk")]
    else:
        queries = [
            rfqs.filter(to_all=True).exclude(firm_id=viewer.firm_id).order_by("-pk"),
            rfqs.filter(counterparty_links__firm_id=viewer.firm_id).order_by(
                "-counterparty_links__rfq_id"
            ),
        ]
    if len(queries) == 1:  # already in order: no merge (sorting UUIDs in Python is not free)
        return list(queries[0].values_list("pk", "state")[:limit])
    found: set[tuple[UUID, str]] = set()
    for query in queries:
        found.update(query.values_list("pk", "state")[:limit])
    return sorted(found, reverse=True)[:limit]


class _Related(list):
    """A list that answers ``.all()``, like the related manager rfq_render reads."""

    def all(self) -> "_Related":
        return self


@dataclass(frozen=True, slots=True)
class _Ref:
    """Just the fields rendering reads of an instrument, a firm or a participant."""

    symbol: str = ""
    lei: str = ""
    legal_name: str = ""
    trader_id: str = ""


@dataclass(frozen=True, slots=True)
class _LegRow:
    leg_no: int
    instrument: _Ref
    side: str
    ratio: Decimal


@dataclass(frozen=True, slots=True)
class _LinkRow:
    firm: _Ref


@dataclass(slots=True)
class RfqRow(Lapsing):
    """An RFQ as the list renders it, read as plain rows (no model instances)."""

    State = Rfq.State
    LIVE = Rfq.LIVE
    id: UUID
    firm_id: int
    state: str
    state_reason: str
    quantity: Decimal
    anonymous: bool
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    client_rfq_id: str
    firm: _Ref
    requester: _Ref
    legs: _Related
    counterparty_links: _Related


def rfq_page(viewer: Viewer, ids: list[UUID]) -> list[RfqRow]:
    """The RFQs with these ids, newest first, for rendering, in three queries of plain rows:
    the RFQs (with firm and requester), their legs, and (for the requester's desk, the only
    one shown them) the counterparties. Model instances cost most of a 50-row page's time."""
    if not ids:
        return []
    legs: dict[UUID, _Related] = {pk: _Related() for pk in ids}
    for rfq_id, leg_no, symbol, side, ratio in (
        RfqLeg.objects.filter(rfq_id__in=ids)
        .order_by("rfq_id", "leg_no")
        .values_list("rfq_id", "leg_no", "instrument__symbol", "side", "ratio")
    ):
        legs[rfq_id].append(_LegRow(leg_no, _Ref(symbol=symbol), side, ratio))
    links: dict[UUID, _Related] = {pk: _Related() for pk in ids}
    if viewer.is_requester:
        for rfq_id, lei, name in (
            RfqCounterparty.objects.filter(rfq_id__in=ids)
            .order_by("firm__lei")
            .values_list("rfq_id", "firm__lei", "firm__legal_name")
        ):
            links[rfq_id].append(_LinkRow(_Ref(lei=lei, legal_name=name)))
    rows = Rfq.objects.filter(pk__in=ids).order_by("-pk").values_list(
        "id", "firm_id", "state", "state_reason", "quantity", "anonymous", "created_at",
        "expires_at", "closed_at", "client_rfq_id", "firm__lei", "firm__legal_name",
        "requester__trader_id",
    )  # fmt: skip
    return [
        RfqRow(
            *row[:10],
            firm=_Ref(lei=row[10], legal_name=row[11]),
            requester=_Ref(trader_id=row[12]),
            legs=legs[row[0]],
            counterparty_links=links[row[0]],
        )
        for row in rows
    ]


def rfq_list(
    viewer: Viewer,
    *,
    now: datetime,
    state: str | None = None,
    role: str | None = None,
    cursor: str | None = None,
    limit: int,
) -> Page[tuple[UUID, str]]:
    """A page of the RFQs the viewer may see, newest first, as ``(id, stored state)`` pairs,
    filtered by state as callers see states; :func:`rfq_page` reads the rows to render
    (``rfq.listing`` renders only those it has not rendered before). ``role`` other than the
    viewer's own desk is an empty page (whatever the cursor). Raises ``Invalid``
    (``INVALID_CURSOR``) for a cursor we did not issue."""
    if role and role != viewer.audience:
        return Page([], None)
    return paginate(
        lambda before, n: rfq_page_ids(viewer, state=state, now=now, before=before, limit=n),
        cursor=cursor,
        limit=limit,
        key=lambda row: row[0],
    )


def quote_visible(viewer: Viewer) -> QuoteQuerySet:
    """The quotes the viewer may see: every quote on its firm's RFQs (a requester), its own
    firm's quotes (a liquidity provider)."""
    if viewer.is_requester:
        return Quote.objects.filter(rfq__firm_id=viewer.firm_id)
    return Quote.objects.filter(firm_id=viewer.firm_id)


QUOTE_RELATED = ("firm", "maker", "replaced_by")


def _quote_legs() -> Prefetch:
    return Prefetch("legs", queryset=QuoteLeg.objects.order_by("leg_no"))


def quote_with_details(queryset: QuoteQuerySet) -> QuoteQuerySet:
    """Everything the quote output renders: two queries however many quotes."""
    return queryset.select_related(*QUOTE_RELATED).prefetch_related(_quote_legs())


def quote_details(quotes: list[Quote]) -> list[Quote]:
    """Load the legs onto quotes read with :data:`QUOTE_RELATED` (:func:`quote_lock`), which
    completes them as :func:`quote_with_details` would. One query; returns the list."""
    prefetch_related_objects(quotes, _quote_legs())
    return quotes


def quote_get(viewer: Viewer, quote_id: UUID | str, *, details: bool = False) -> Quote:
    """The quote, if the viewer may see it; with ``details``, as :func:`quote_with_details`.
    Raises ``NotFound`` (``UNKNOWN_QUOTE``) for a missing, forbidden or malformed id alike."""
    queryset = quote_visible(viewer)
    if details:
        queryset = quote_with_details(queryset)
    quote = queryset.filter(pk=quote_id).first() if is_uuid(quote_id) else None
    if quote is None:
        raise NotFound("UNKNOWN_QUOTE", "No such quote.")
    return quote


def quote_lock(queryset: QuoteQuerySet) -> Quote | None:
    """The first quote of ``queryset``, locked (its row only) to the end of the transaction
    and read with :data:`QUOTE_RELATED` and its maker's firm (:func:`quote_details` adds the
    legs); ``None`` if there is none. Take its RFQ's lock first."""
    return (
        queryset.select_related(*QUOTE_RELATED, "maker__firm")
        .select_for_update(of=("self",))
        .first()
    )


def quote_list(
    viewer: Viewer, rfq_id: UUID | str, *, cursor: str | None = None, limit: int
) -> Page[Quote]:
    """A page of the quotes on one RFQ that the viewer may see, newest first, with details.
    Raises ``NotFound`` (``UNKNOWN_RFQ``) as :func:`rfq_get`, then ``Invalid``
    (``INVALID_CURSOR``) for a cursor we did not issue."""
    rfq = rfq_get(viewer, rfq_id)
    quotes = quote_with_details(quote_visible(viewer).filter(rfq=rfq))
    return paginate(newest_first(quotes), cursor=cursor, limit=limit)


def trade_visible(viewer: Viewer) -> QuerySet[Trade]:
    """The trades the viewer's firm made on the viewer's side."""
    if viewer.is_requester:
        return Trade.objects.filter(requester_firm_id=viewer.firm_id)
    return Trade.objects.filter(maker_firm_id=viewer.firm_id)


def trade_with_details(queryset: QuerySet[Trade]) -> QuerySet[Trade]:
    """Everything the trade output renders: two queries however many trades."""
    return queryset.select_related(
        "rfq", "quote", "requester_firm", "maker_firm", "requester", "maker"
    ).prefetch_related(
        Prefetch("legs", queryset=TradeLeg.objects.select_related("instrument").order_by("leg_no"))
    )


def trade_get(viewer: Viewer, trade_id: UUID | str) -> Trade:
    """The trade with details, if the viewer's firm made it on the viewer's side. Raises
    ``NotFound`` (``UNKNOWN_TRADE``) for a missing, forbidden or malformed id alike."""
    trade = (
        trade_with_details(trade_visible(viewer)).filter(pk=trade_id).first()
        if is_uuid(trade_id)
        else None
    )
    if trade is None:
        raise NotFound("UNKNOWN_TRADE", "No such trade.")
    return trade


def trade_list(viewer: Viewer, *, cursor: str | None = None, limit: int) -> Page[Trade]:
    """A page of the viewer's trades, newest first, with details. Raises ``Invalid``
    (``INVALID_CURSOR``) for a cursor we did not issue."""
    trades = trade_with_details(trade_visible(viewer))
    return paginate(newest_first(trades), cursor=cursor, limit=limit)


def event_feed(viewer: Viewer, *, since: int) -> QuerySet[Event]:
    """The viewer's desk's events after ``since``, in sequence (commit) order."""
    return Event.objects.filter(
        firm_id=viewer.firm_id, audience=viewer.audience, seq__gt=since
    ).order_by("seq")


def instrument_list(now: datetime) -> QuerySet[Instrument]:
    """Tradable instruments (active and not expired), by symbol."""
    return Instrument.objects.tradable(now).order_by("symbol")


def is_uuid(value: UUID | str) -> bool:
    """Whether ``value`` is a UUID or its text (any other id is unknown, not an error)."""
    if isinstance(value, UUID):
        return True
    try:
        UUID(str(value))
    except ValueError:
        return False
    return True
