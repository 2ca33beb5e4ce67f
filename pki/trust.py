"""The app's cached per-certificate trust decision (DESIGN.md, trust contract).

The decision for a client certificate (issued by us, inside its validity, not revoked, its
participant and firm active) is cached by SHA-256 fingerprint. Every status change forgets it
at once, in the process that made the change, so a revoked certificate is refused on the very
next request whatever any CRL or OCSP cache still says.
"""

from collections.abc import Iterable

from django.core.cache import cache

DECISION_PREFIX = "keyline:trust:v1:"


def decision_cache_key(fingerprint_sha256: str) -> str:
    return f"{DECISION_PREFIX}{fingerprint_sha256.lower()}"


def decisions_forget(fingerprints: Iterable[str]) -> None:
    keys = [decision_cache_key(fp) for fp in fingerprints]
    if keys:
        cache.delete_many(keys)
