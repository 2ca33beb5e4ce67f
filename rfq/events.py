"""The event feed: what each firm's desk learns, in commit order, resumable with ``since=``.

A service names what changed (:class:`Outbox`: this RFQ was cancelled, these quotes traded
away, this trade was made) and the outbox renders each event as its desk sees the object
(:mod:`rfq.render`, as the API does), before the service's audit record; the service then
appends them in its own transaction (:meth:`Outbox.append`), after the audit record, so the two
global locks are always taken in the same order (audit head, then event head) and nothing
slow happens under them. After the commit a Redis publish wakes long-polling readers at once;
without Redis they poll the database every ``POLL_INTERVAL``.
"""

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from kernel.redis import channel, redis_client
from rfq.models import Audience, Event, EventHead, EventType, Quote, Rfq, Trade
from rfq.render import quote_render, rfq_render, trade_render
from rfq.selectors import Viewer, event_feed

logger = logging.getLogger(__name__)

CHANNEL = "keyline:rfq:events"
POLL_INTERVAL = 0.1  # seconds, without Redis


@dataclass(frozen=True)
class Draft:
    """One event, rendered for one firm's desk, not yet given its sequence number."""

    firm_id: int
    audience: str
    type: str
    data: dict[str, Any]

    def __post_init__(self) -> None:
        if self.type not in EventType.values:
            raise ValueError(f"not an event type: {self.type!r} (rfq.models.EventType)")


class Outbox:
    """The events of one change, rendered for each desk as they are added (the objects must
    be loaded as the API renders them: ``rfq.selectors.*_with_details``), stored together by
    :meth:`append`. Events keep the order they were added in."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.drafts: list[Draft] = []

    def rfq(self, rfq: Rfq, type_: str, makers: list[int]) -> None:
        """``type_`` for the RFQ's requester desk and for the desks of ``makers`` (the firms
        that may see it: ``rfq.selectors.rfq_maker_firm_ids``)."""
        requester = Viewer.desk(rfq.firm_id, Audience.REQUESTER)
        self.drafts.append(
            Draft(
                rfq.firm_id,
                Audience.REQUESTER,
                type_,
                {"rfq": rfq_render(rfq, requester, self.now)},
            )
        )
        if makers:
            # A maker's view of an RFQ does not depend on which maker looks.
            data = {"rfq": rfq_render(rfq, Viewer.desk(makers[0], Audience.MAKER), self.now)}
            self.drafts += [Draft(firm_id, Audience.MAKER, type_, data) for firm_id in makers]

    def quotes(self, quotes: Iterable[Quote], type_: str, *, requester: bool = True) -> None:
        """``type_`` for each quote's maker desk and, with ``requester``, for its RFQ's
        requester desk (``quote.rfq`` must be loaded then)."""
        for quote in quotes:
            maker = Viewer.desk(quote.firm_id, Audience.MAKER)
            self.drafts.append(
                Draft(
                    quote.firm_id,
                    Audience.MAKER,
                    type_,
                    {"quote": quote_render(quote, maker, self.now)},
                )
            )
            if requester:
                owner = Viewer.desk(quote.rfq.firm_id, Audience.REQUESTER)
                self.drafts.append(
                    Draft(
                        owner.firm_id,
                        Audience.REQUESTER,
                        type_,
                        {"quote": quote_render(quote, owner, self.now)},
                    )
                )

    def trade(self, trade: Trade, type_: str = "trade.created") -> None:
        """``type_`` for both firms' desks, each from its own side."""
        for firm_id, audience in (
            (trade.requester_firm_id, Audience.REQUESTER),
            (trade.maker_firm_id, Audience.MAKER),
        ):
            data = {"trade": trade_render(trade, Viewer.desk(firm_id, audience))}
            self.drafts.append(Draft(firm_id, audience, type_, data))

    def append(self) -> int:
        """Store the events (:func:`events_append`); returns the last sequence number."""
        return events_append(self.drafts)


def events_append(drafts: list[Draft]) -> int:
    """Give each draft the next sequence number and store it, in the caller's transaction.
    Returns the last sequence number (0 when there was nothing to append)."""
    if not drafts:
        return 0
    now = timezone.now()
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            seq = _append_in_one_statement(drafts, now)
        else:
            last = _advance_head(len(drafts))
            seq = last - len(drafts)
            rows = []
            for draft in drafts:
                seq += 1
                rows.append(
                    Event(
                        seq=seq,
                        firm_id=draft.firm_id,
                        audience=draft.audience,
                        type=draft.type,
                        data=draft.data,
                        created_at=now,
                    )
                )
            Event.objects.bulk_create(rows)
    transaction.on_commit(lambda: _publish(seq))
    return seq


def _append_in_one_statement(drafts: list[Draft], now: datetime) -> int:
    """PostgreSQL: move the head and insert the events in one statement (one round trip while
    the head's row lock is held, to the commit). Returns the last sequence number."""
    head = connection.ops.quote_name(EventHead._meta.db_table)
    events = connection.ops.quote_name(Event._meta.db_table)
    sql = f"""
        WITH head AS (UPDATE {head} SET seq = seq + %(n)s WHERE id = 1 RETURNING seq)
        INSERT INTO {events} (seq, firm_id, audience, type, data, created_at)
        SELECT head.seq - %(n)s + d.ord, d.firm_id, d.audience, d.type, d.data, %(now)s
        FROM head, unnest(
            %(firms)s::bigint[], %(audiences)s::text[], %(types)s::text[], %(data)s::jsonb[]
        ) WITH ORDINALITY AS d(firm_id, audience, type, data, ord)
        RETURNING seq
    """  # noqa: S608 - the table names are ours
    params: dict[str, Any] = {
        "n": len(drafts),
        "now": now,
        "firms": [d.firm_id for d in drafts],
        "audiences": [d.audience for d in drafts],
        "types": [d.type for d in drafts],
        "data": [Jsonb(d.data) for d in drafts],
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if rows:
        return max(int(r[0]) for r in rows)
    # The first append ever (or after a test's flush): no head to move yet.
    EventHead.objects.bulk_create([EventHead(pk=1, seq=0)], ignore_conflicts=True)
    return _append_in_one_statement(drafts, now)


def _advance_head(count: int) -> int:
    """Move the event head ``count`` numbers on and return the new last number, in one
    statement: the UPDATE takes the head's row lock, held until the caller's commit."""
    table = connection.ops.quote_name(EventHead._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET seq = seq + %s WHERE id = 1 RETURNING seq", [count])  # noqa: S608 - the table name is ours
        row = cursor.fetchone()
    if row is not None:
        return int(row[0])
    # The first append ever (or after a test's flush): create the head, then move it.
    EventHead.objects.bulk_create([EventHead(pk=1, seq=0)], ignore_conflicts=True)
    return _advance_head(count)


def _publish(seq: int) -> None:
    client = redis_client()
    if client is None:
        return
    try:
        client.publish(channel(CHANNEL), str(seq))
    except redis.RedisError:
        # Readers still poll the database once a second while they wait.
        logger.warning("could not publish event %s to Redis", seq, exc_info=True)


def events_wait(viewer: Viewer, *, since: int, wait: float, limit: int) -> list[Event]:
    """Events after ``since`` for the viewer, waiting up to ``wait`` seconds for the first
    one. Subscribes before the first read, so an event committed in between still wakes us."""
    deadline = time.monotonic() + wait
    # Pub/sub reads wait up to a second (below), longer than the default read timeout.
    client = redis_client(socket_timeout=1) if wait > 0 else None
    pubsub = None
    if client is not None:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel(CHANNEL))
        except redis.RedisError:
            logger.warning("event wake-ups unavailable; polling", exc_info=True)
            pubsub = None
    try:
        while True:
            events = list(event_feed(viewer, since=since)[:limit])
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            if pubsub is None:
                time.sleep(min(POLL_INTERVAL, remaining))
                continue
            try:
                # Any publish wakes every reader; one indexed query tells each whether it
                # was for them. Re-read at least once a second in case a publish was lost.
                pubsub.get_message(timeout=min(1.0, remaining))
            except redis.RedisError:
                pubsub = None
    finally:
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                pubsub.close()


def events_latest() -> int:
    """The sequence number of the newest event (0 before the first)."""
    head = EventHead.objects.filter(pk=1).first()
    return head.seq if head else 0
