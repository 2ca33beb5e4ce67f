"""Time-ordered UUIDs (RFC 9562 version 7): 48 bits of Unix milliseconds, then 74 random
bits. Python 3.11 has no ``uuid.uuid7``."""

import secrets
import time
import uuid


def uuid7() -> uuid.UUID:
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    value &= ~(0xF << 76)
    value |= 0x7 << 76  # version 7
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC 9562 variant
    return uuid.UUID(int=value)
