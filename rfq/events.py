"""The event feed: what each firm's desk learns, in commit order, resumable with ``since=``.

Services append events inside their own transaction (:func:`events_append`), after their
audit record, so the two global locks are always taken in the same order (audit head, then
event head). After the commit a Redis publish wakes long-polling readers at once; without
Redis they poll the database every ``POLL_INTERVAL``.
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from rfq.models import Event, EventHead
from rfq.selectors import Viewer, event_feed

logger = logging.getLogger(__name__)

CHANNEL = "keyline:rfq:events"
POLL_INTERVAL = 0.1  # seconds, without Redis


@dataclass(frozen=True)
class Draft:
    firm_id: int
    audience: str
    type: str
    data: dict[str, Any]


def events_append(drafts: list[Draft]) -> int:
    """Give each draft the next sequence number and store it, in the caller's transaction.
    Returns the last sequence number (0 when there was nothing to append)."""
    if not drafts:
        return 0
    with transaction.atomic(savepoint=False):
        head = EventHead.objects.select_for_update().filter(pk=1).first()
        if head is None:
            EventHead.objects.bulk_create([EventHead(pk=1, seq=0)], ignore_conflicts=True)
            head = EventHead.objects.select_for_update().get(pk=1)
        now, seq = timezone.now(), head.seq
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
        EventHead.objects.filter(pk=1).update(seq=seq)
    transaction.on_commit(lambda: _publish(seq))
    return seq


_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis | None:
    """The raw Redis client of this process (None without REDIS_URL): event wake-ups, rate
    limits and stream slots."""
    url = settings.REDIS_URL
    if not url:
        return None
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=0.5)
    return _clients[url]


def _publish(seq: int) -> None:
    client = redis_client()
    if client is None:
        return
    try:
        client.publish(CHANNEL, str(seq))
    except redis.RedisError:
        # Readers still poll the database once a second while they wait.
        logger.warning("could not publish event %s to Redis", seq, exc_info=True)


def events_wait(viewer: Viewer, *, since: int, wait: float, limit: int) -> list[Event]:
    """Events after ``since`` for the viewer, waiting up to ``wait`` seconds for the first
    one. Subscribes before the first read, so an event committed in between still wakes us."""
    deadline = time.monotonic() + wait
    client = redis_client() if wait > 0 else None
    pubsub = None
    if client is not None:
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
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
    head = EventHead.objects.filter(pk=1).first()
    return head.seq if head else 0
