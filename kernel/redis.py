"""One Redis client per process and purpose: the trust decision, the OCSP cache, the RFQ event
feed and rate limits all share this factory instead of keeping private client caches.

A client is made on first use for the ``REDIS_URL`` of the moment (tests change it) and kept;
its connection pool is thread-safe. Timeouts are short on purpose: every caller treats a Redis
error as a miss or fails open, so a slow Redis must not hold a request. ``None`` means the
process runs without Redis (the callers then use Django's cache or the database).
"""

from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

# A read on the request path waits at most this long (seconds).
SOCKET_TIMEOUT = 0.5
CONNECT_TIMEOUT = 0.5


@cache
def _client(url: str, socket_timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT
    )


def channel(name: str) -> str:
    """The pub/sub channel ``name`` for this deployment. Channels belong to the Redis server,
    not to one of its databases: deployments sharing a server, and parallel test processes,
    keep their messages apart with ``KEYLINE_REDIS_NAMESPACE``."""
    namespace: str = settings.KEYLINE_REDIS_NAMESPACE
    return f"{namespace}:{name}" if namespace else name


def redis_client(*, socket_timeout: float = SOCKET_TIMEOUT) -> redis.Redis | None:
    """The process's client for ``REDIS_URL`` (raw bytes, no decoding), or None without one."""
    url: str = settings.REDIS_URL
    return _client(url, socket_timeout) if url else None


@cache
def _async_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )


def async_redis_client() -> aioredis.Redis | None:
    """The asyncio twin of :func:`redis_client` (the ASGI OCSP responder), or None."""
    url: str = settings.REDIS_URL
    return _async_client(url) if url else None
