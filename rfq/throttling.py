"""Rate limits per client certificate (not per address: the certificate is the identity).

Each view names a scope; ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` sets its rate. A refusal
is 429 ``rate_limited`` with ``Retry-After``.
"""

from rest_framework.throttling import SimpleRateThrottle


class CertificateRateThrottle(SimpleRateThrottle):
    def get_cache_key(self, request, view):
        serial = getattr(request.user, "serial", None)
        if not serial:
            return None  # unauthenticated requests never get this far
        return f"keyline:throttle:{self.scope}:{serial}"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()


def throttles(scope: str):
    """``throttle_classes`` for a view: one certificate-keyed limit with this scope."""

    class Scoped(CertificateRateThrottle):
        def __init__(self) -> None:
            super().__init__(scope)

    Scoped.__name__ = f"CertificateRateThrottle_{scope}"
    return [Scoped]
