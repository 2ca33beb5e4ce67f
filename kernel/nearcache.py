"""A cache in process memory ("near" cache) that is trusted only while invalidations reach it.

Redis holds the shared answers (trust decisions, OCSP responses); a process may keep copies in
memory if, and only if, it hears every invalidation: whoever forgets a key in Redis also
publishes it on a channel, and each process's subscription drops it from memory. Three rules
keep a forgotten answer from being served:

- memory is used only while the subscription is up; when it drops, memory is cleared and
  bypassed until the subscription is back (and cleared again then);
- an answer fetched from Redis or the database is kept only if no invalidation arrived while
  it was being fetched (the caller reads :meth:`NearCache.generation` first);
- entries live at most ``ttl`` seconds.

The subscription runs where the process runs its own work: a daemon thread for the WSGI
workers (:class:`ThreadSubscriber`), a task on the event loop for the ASGI OCSP responder
(``pki.ocsp_asgi``). Both drive the same :class:`NearCache`.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis
from django.conf import settings

from kernel.redis import channel, redis_client

logger = logging.getLogger(__name__)

V = TypeVar("V")

# How long a lost subscription is noticed at the latest: the subscriber pings Redis when the
# channel is idle and gives up on a connection that has not answered for this long.
SUBSCRIPTION_TIMEOUT = 2.0


class NearCache(Generic[V]):
    """Values by key in this process's memory, used only while subscribed (see the module)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.entries: dict[str, tuple[float, V]] = {}
        self.subscribed = False
        self.invalidations = 0  # bumped by every invalidation and every loss of subscription
        self._lock = threading.Lock()

    def generation(self) -> int:
        """Read before fetching a value; pass to :meth:`put` with it."""
        return self.invalidations

    def get(self, key: str, valid: Callable[[V], bool] | None = None) -> V | None:
        """The value, if subscribed, younger than the TTL and ``valid`` (when given)."""
        if not self.subscribed:
            return None
        entry = self.entries.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if time.monotonic() - stored_at > self.ttl or (valid is not None and not valid(value)):
            self.entries.pop(key, None)
            return None
        return value

    def put(self, key: str, value: V, generation: int) -> None:
        """Keep ``value`` unless an invalidation arrived since ``generation`` was read: it
        might be the one that removed it."""
        with self._lock:
            if not self.subscribed or self.invalidations != generation:
                return
            if len(self.entries) >= self.max_entries:
                self.entries.clear()
            self.entries[key] = (time.monotonic(), value)

    def forget(self, keys: list[str]) -> None:
        """Drop ``keys`` (an invalidation message, or this process's own forget)."""
        with self._lock:
            self.invalidations += 1
            for key in keys:
                self.entries.pop(key, None)

    def up(self) -> None:
        """The subscription is (back) in place: start from empty memory."""
        with self._lock:
            self.invalidations += 1
            self.entries.clear()
            self.subscribed = True

    def down(self) -> None:
        """The subscription is lost: memory is cleared and bypassed until :meth:`up`."""
        with self._lock:
            self.subscribed = False
            self.invalidations += 1
            self.entries.clear()


class _Caches:
    """Several near caches driven by one subscription, as one."""

    def __init__(self, caches: tuple["NearCache[Any]", ...]) -> None:
        self.caches = caches

    def up(self) -> None:
        for cache in self.caches:
            cache.up()

    def down(self) -> None:
        for cache in self.caches:
            cache.down()

    def forget(self, keys: list[str]) -> None:
        for cache in self.caches:
            cache.forget(keys)


class ThreadSubscriber:
    """Keeps near caches subscribed to a Redis channel from a daemon thread of this process
    (started on first use, and again in a forked child: gunicorn forks its workers). A message
    is a newline-separated list of keys to forget, from every cache of the channel."""

    def __init__(self, channel: str, *caches: "NearCache[Any]") -> None:
        self.near = _Caches(caches)
        self.base_channel = channel
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def ensure_started(self) -> None:
        """Start the subscriber thread unless this process already runs it (cheap to call on
        every request). Without ``REDIS_URL`` nothing starts and memory stays unused."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        url: str = settings.REDIS_URL
        if not url:
            return
        with self._start_lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            # A forked child inherits the parent's memory, but not its thread or its messages.
            self.near.down()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, args=(url,), name=f"near-cache:{self.channel}", daemon=True
            )
            self._thread.start()

    @property
    def channel(self) -> str:
        """The channel as this deployment names it (``kernel.redis.channel``)."""
        return channel(self.base_channel)

    @property
    def client_name(self) -> str:
        """The subscriber connection's name in Redis (``CLIENT LIST``): channel and process."""
        return f"keyline-near:{self.channel}:{os.getpid()}".replace(" ", "_")

    def _run(self, url: str) -> None:
        while True:
            client = redis.Redis.from_url(
                url,
                socket_timeout=SUBSCRIPTION_TIMEOUT,
                socket_connect_timeout=1,
                health_check_interval=1,
                client_name=self.client_name,
            )
            try:
                # TYPEHINT NOTE: redis-py types Redis.pubsub loosely (untyped in its stubs).
                with client.pubsub() as pubsub:  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self.channel)
                    while True:
                        # Wakes at least every second; the health check pings an idle channel,
                        # and a connection silent for SUBSCRIPTION_TIMEOUT raises.
                        message = pubsub.get_message(timeout=1.0)
                        if message is None:
                            continue
                        if message["type"] == "subscribe":
                            self.near.up()
                        elif message["type"] == "message":
                            self.near.forget(message["data"].decode().split("\n"))
            except Exception:
                logger.warning(
                    "near cache %s: subscription lost; memory off", self.channel, exc_info=True
                )
            finally:
                self.near.down()
                client.close()
            time.sleep(1)


def forget_everywhere(name: str, keys: list[str], *caches: "NearCache[Any]") -> None:
    """Drop ``keys`` from this process's ``caches`` at once and publish them on channel ``name`` for
    every other process. Raises when Redis is unavailable (the caller decides; the entries
    then live at most their TTL, and only while the other processes are subscribed)."""
    if not keys:
        return
    for cache in caches:
        cache.forget(keys)
    client = redis_client()
    if client is not None:
        client.publish(channel(name), "\n".join(keys))
