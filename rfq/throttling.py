"""Rate limits per client certificate (not per address: the certificate is the identity).

Each view names a scope; ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` sets its rate. A refusal
is 429 ``RATE_LIMITED`` with ``Retry-After``.

With Redis the count is a fixed window: one pipelined ``INCR`` + ``EXPIRE`` on the raw client
(one round trip; DRF's own throttle reads and rewrites a list of timestamps through Django's
cache, which builds a Redis client per call). A fixed window admits up to twice the rate across
a window's edge, which is acceptable for a protective limit. Without Redis, DRF's sliding log
in the (database) cache.
"""

import logging
import time

import redis
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle
from rest_framework.views import APIView

from kernel.redis import redis_client

logger = logging.getLogger(__name__)


class CertificateRateThrottle(SimpleRateThrottle):
    # Set by SimpleRateThrottle.__init__ from the rate (None without one); the stubs omit them.
    num_requests: int | None
    duration: int | None

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        serial = getattr(request.user, "serial", None)
        if not serial:
            return None  # unauthenticated requests never get this far
        return f"keyline:throttle:{self.scope}:{serial}"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def allow_request(self, request: Request, view: APIView) -> bool:
        # The limits protect the venue; they must not take it down. If the shared cache is
        # unreachable the request goes on (logged) rather than failing with a 500.
        client = redis_client() if self.rate is not None else None
        limit, duration = self.num_requests, self.duration  # both set when the rate is
        if client is not None and limit is not None and duration is not None:
            return self._allow_fixed_window(client, request, view, limit, duration)
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("rate limit %s unchecked: no cache", self.scope, exc_info=True)
            return True

    def _allow_fixed_window(
        self, client: redis.Redis, request: Request, view: APIView, limit: int, duration: int
    ) -> bool:
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // duration)
        name = f"{key}:{window}"
        try:
            pipe = client.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, duration + 1)
            count, _ = pipe.execute()
        except redis.RedisError:
            logger.warning("rate limit %s unchecked: no cache", self.scope, exc_info=True)
            return True
        if count <= limit:
            return True
        self._retry_after = (window + 1) * duration - now
        return False

    def throttle_success(self) -> bool:
        # DRF keeps the log for exactly one window, but the database cache rounds an expiry down
        # to the whole second: a 1 s log vanished at the next second boundary, however new its
        # entries (a fixed window in effect, and a query count that depended on the clock). Kept
        # a second longer; allow_request drops the entries older than the window itself.
        # (DRF counts only under a rate, so the duration is set.)
        duration = self.duration or 0
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, duration + 1)
        return True

    def wait(self) -> float | None:
        retry_after = getattr(self, "_retry_after", None)
        return retry_after if retry_after is not None else super().wait()


def throttles(scope: str) -> list[type[BaseThrottle]]:
    """``throttle_classes`` for a view: one certificate-keyed limit with this scope."""

    class Scoped(CertificateRateThrottle):
        def __init__(self) -> None:
            super().__init__(scope)

    Scoped.__name__ = f"CertificateRateThrottle_{scope}"
    return [Scoped]
