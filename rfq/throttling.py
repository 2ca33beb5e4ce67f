"""Rate limits per client certificate (not per address: the certificate is the identity).

Each view names a scope; ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` sets its rate. A refusal
is 429 ``rate_limited`` with ``Retry-After``.
"""

import logging

from rest_framework.throttling import SimpleRateThrottle

logger = logging.getLogger(__name__)


class CertificateRateThrottle(SimpleRateThrottle):
    def get_cache_key(self, request, view):
        serial = getattr(request.user, "serial", None)
        if not serial:
            return None  # unauthenticated requests never get this far
        return f"keyline:throttle:{self.scope}:{serial}"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def allow_request(self, request, view) -> bool:
        # The limits protect the venue; they must not take it down. If the shared cache is
        # unreachable the request goes on (logged) rather than failing with a 500.
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("rate limit %s unchecked: no cache", self.scope, exc_info=True)
            return True


def throttles(scope: str):
    """``throttle_classes`` for a view: one certificate-keyed limit with this scope."""

    class Scoped(CertificateRateThrottle):
        def __init__(self) -> None:
            super().__init__(scope)

    Scoped.__name__ = f"CertificateRateThrottle_{scope}"
    return [Scoped]
