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
from uuid import UUID

from django.db import connection
from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from kernel.errors import NotFound
from kernel.models import Participant
from rfq.models import (
    Audience,
    Event,
    Instrument,
    Lapsing,
    Quote,
    QuoteLeg,
    Rfq,
    RfqCounterparty,
    RfqLeg,
    Trade,
    TradeLeg,
)


@dataclass(frozen=True)
class Viewer:
    firm_id: int
    participant_id: int
    audience: str  # Audience.REQUESTER or Audience.MAKER

    @classmethod
    def of(cls, participant: Participant) -> "Viewer":
        audience = (
            Audience.REQUESTER if participant.role == Participant.Role.REQUESTER else Audience.MAKER
        )
        return cls(participant.firm_id, participant.pk, audience)

    @property
    def is_requester(self) -> bool:
        return self.audience == Audience.REQUESTER


def _addressed_to(firm_id: int) -> Q:
    named = RfqCounterparty.objects.filter(rfq=OuterRef("pk"), firm_id=firm_id)
    return (Q(to_all=True) | Q(Exists(named))) & ~Q(firm_id=firm_id)


def rfq_visible(viewer: Viewer) -> QuerySet[Rfq]:
    if viewer.is_requester:
        return Rfq.objects.filter(firm_id=viewer.firm_id)
    return Rfq.objects.filter(_addressed_to(viewer.firm_id))


def rfq_with_details(queryset: QuerySet[Rfq], *, counterparties: bool = True) -> QuerySet[Rfq]:
    """Everything the RFQ output renders, in a fixed number of queries (the counterparty
    list only for the requester's firm, the only one shown it)."""
    queryset = queryset.select_related("firm", "requester").prefetch_related(
        Prefetch("legs", queryset=RfqLeg.objects.select_related("instrument").order_by("leg_no"))
    )
    if counterparties:
        queryset = queryset.prefetch_related(
            Prefetch(
                "counterparty_links",
                queryset=RfqCounterparty.objects.select_related("firm").order_by("firm__lei"),
            )
        )
    return queryset


def rfq_page_ids(
    viewer: Viewer, *, state: str | None, now: datetime, before: UUID | None, limit: int
) -> list[UUID]:
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
    ids: set[UUID] = set()
    for query in queries:
        ids.update(query.values_list("pk", flat=True)[:limit])
    return sorted(ids, reverse=True)[:limit]


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


def rfq_get(viewer: Viewer, rfq_id: UUID | str, *, for_update: bool = False) -> Rfq:
    if not is_uuid(rfq_id):
        # Checked before any query is built: a malformed id is a missing RFQ, not a 500.
        raise NotFound("UNKNOWN_RFQ", "No such RFQ.")
    queryset = rfq_visible(viewer)
    if for_update:
        # Lock only the RFQ row: the visibility check is a semi-join, not a join.
        queryset = Rfq.objects.select_for_update().filter(pk__in=queryset.filter(pk=rfq_id))
    rfq = queryset.filter(pk=rfq_id).first()
    if rfq is None:
        raise NotFound("UNKNOWN_RFQ", "No such RFQ.")
    return rfq


def quote_visible(viewer: Viewer) -> QuerySet[Quote]:
    if viewer.is_requester:
        return Quote.objects.filter(rfq__firm_id=viewer.firm_id)
    return Quote.objects.filter(firm_id=viewer.firm_id)


def quote_with_details(queryset: QuerySet[Quote]) -> QuerySet[Quote]:
    return queryset.select_related("firm", "maker", "replaced_by").prefetch_related(
        Prefetch("legs", queryset=QuoteLeg.objects.order_by("leg_no"))
    )


def quote_get(viewer: Viewer, quote_id: UUID | str) -> Quote:
    quote = quote_visible(viewer).filter(pk=quote_id).first() if is_uuid(quote_id) else None
    if quote is None:
        raise NotFound("UNKNOWN_QUOTE", "No such quote.")
    return quote


def trade_visible(viewer: Viewer) -> QuerySet[Trade]:
    if viewer.is_requester:
        return Trade.objects.filter(requester_firm_id=viewer.firm_id)
    return Trade.objects.filter(maker_firm_id=viewer.firm_id)


def trade_with_details(queryset: QuerySet[Trade]) -> QuerySet[Trade]:
    return queryset.select_related(
        "rfq", "quote", "requester_firm", "maker_firm", "requester", "maker"
    ).prefetch_related(
        Prefetch("legs", queryset=TradeLeg.objects.select_related("instrument").order_by("leg_no"))
    )


def event_feed(viewer: Viewer, *, since: int) -> QuerySet[Event]:
    return Event.objects.filter(
        firm_id=viewer.firm_id, audience=viewer.audience, seq__gt=since
    ).order_by("seq")


def instrument_list(now: datetime) -> QuerySet[Instrument]:
    """Tradable instruments (active and not expired), by symbol."""
    return Instrument.objects.tradable(now).order_by("symbol")


def is_uuid(value: UUID | str) -> bool:
    if isinstance(value, UUID):
        return True
    try:
        UUID(str(value))
    except ValueError:
        return False
    return True
