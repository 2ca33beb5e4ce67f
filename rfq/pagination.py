"""Keyset pagination, newest first, for every list of the API.

Ids are time-ordered UUIDs (UUIDv7), so "the rows below the cursor's id" is one index range
however deep the page. A cursor is the last id of a page, base64url without padding: opaque to
callers, and the same encoding for every list.
"""

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, TypeVar
from uuid import UUID

from django.db.models import Model, QuerySet

from kernel.errors import Invalid

T = TypeVar("T")
M = TypeVar("M", bound=Model)

# fetch(before, n): the newest n rows whose id is below ``before`` (all rows when None).
Fetch = Callable[[UUID | None, int], Iterable[Any]]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its rows, and the cursor of the next page (``None``: the last)."""

    rows: list[T]
    next_cursor: str | None


def cursor_encode(value: UUID) -> str:
    """The cursor that continues after ``value``."""
    return base64.urlsafe_b64encode(value.bytes).rstrip(b"=").decode()


def cursor_decode(cursor: str | None) -> UUID | None:
    """The id a cursor continues after (``None`` for no cursor). Raises ``Invalid``
    (``INVALID_CURSOR``) for anything :func:`cursor_encode` did not make."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (binascii.Error, ValueError) as exc:
        raise Invalid("INVALID_CURSOR", "This cursor was not issued by us.") from exc


def paginate(
    fetch: Fetch, *, cursor: str | None, limit: int, key: Callable[[Any], UUID] = attrgetter("pk")
) -> Page[Any]:
    """One page of at most ``limit`` rows after ``cursor``, and the cursor of the next page
    (``None`` on the last). ``fetch`` is asked for one row more than the page, which tells
    whether there is a next page; ``key`` gives a row's id. Raises ``Invalid``
    (``INVALID_CURSOR``) as :func:`cursor_decode`."""
    rows = list(fetch(cursor_decode(cursor), limit + 1))
    more, rows = len(rows) > limit, rows[:limit]
    return Page(rows, cursor_encode(key(rows[-1])) if more else None)


def newest_first(queryset: QuerySet[M]) -> Callable[[UUID | None, int], list[M]]:
    """The :data:`Fetch` of a queryset: ``id < before``, newest first."""

    def fetch(before: UUID | None, n: int) -> list[M]:
        rows = queryset if before is None else queryset.filter(pk__lt=before)
        return list(rows.order_by("-pk")[:n])

    return fetch
