"""Rate limits per client certificate (not per address: the certificate is the identity).

One throttle class for every view, as DRF's ``ScopedRateThrottle``: a view names its scope
(``throttle_scope``, and ``throttle_scopes`` per method where a method differs), and
``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` sets the scope's rate. A refusal is 429
``RATE_LIMITED`` with ``Retry-After``. Time is read through DRF's ``timer`` hook.

With Redis the count is a fixed window: one pipelined ``INCR`` + ``EXPIRE`` on the raw client
(one round trip; DRF's own throttle reads and rewrites a list of timestamps through Django's
cache, which builds a Redis client per call). A fixed window admits up to twice the rate across
a window's edge, which is acceptable for a protective limit. Without Redis, DRF's sliding log
in the (database) cache.
"""

import logging

import redis
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from kernel.redis import redis_client

logger = logging.getLogger(__name__)


def throttle_scope(view: APIView, request: Request) -> str | None:
    """The scope ``view`` limits ``request`` under: its method's (``throttle_scopes``), else the
    view's (``throttle_scope``); ``None`` is no limit."""
    scopes: dict[str, str] = getattr(view, "throttle_scopes", {})
    method = request.method or ""
    return scopes.get(method) or getattr(view, "throttle_scope", None)


class CertificateRateThrottle(SimpleRateThrottle):
    # Set from the rate in allow_request (None without one); the stubs omit them.
    num_requests: int | None
    duration: int | None

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        serial = getattr(request.user, "serial", None)
        if not serial:
            return None  # unauthenticated requests never get this far
        return f"keyline:throttle:{self.scope}:{serial}"

    def __init__(self) -> None:
        # The rate depends on the view, so it is read in allow_request (as ScopedRateThrottle).
        pass

    def allow_request(self, request: Request, view: APIView) -> bool:
        scope = throttle_scope(view, request)
        if scope is None:
            return True
        self.scope = scope
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
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
        now = self.timer()
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
