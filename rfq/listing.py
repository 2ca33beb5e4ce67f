"""The RFQ list, answered from renderings this process made before.

An RFQ's rendering for one kind of viewer (its own firm, or a liquidity provider) changes only
when the RFQ closes (state, reason and time are written once, by ``close()``), when an open
RFQ's time passes (it then reads as expired), or when a firm it names is renamed. So a
rendering is kept in memory under ``(id, stored state, owner's view, reference generation)``:

- the page's ids come with their stored state from the database on every request, so a closed
  RFQ is never served from its open rendering, whichever process closed it;
- an open RFQ's rendering is used only before its ``expires_at``;
- the reference generation (:func:`rfq.reference.generation`) moves with every saved firm
  or instrument, in every process, so a renamed firm's old name is not served; and the
  cache is used only while this process hears those changes (subscribed).

A list request is then one query for the page (ids and states) when every rendering is known,
and the three row queries of :func:`rfq.selectors.rfq_page` for the ones that are not.
"""

from datetime import datetime
from uuid import UUID

from rfq import reference, shapes
from rfq.models import Rfq
from rfq.render import rfq_page_render, rfq_render
from rfq.selectors import RfqRow, Viewer, rfq_list, rfq_page

MAX_RENDERINGS = 20_000  # per process; cleared when full

# (id, stored state, owner's view, reference generation) -> (rendering, valid until).
_renderings: dict[tuple[UUID, str, bool, int], tuple[shapes.Rfq, datetime | None]] = {}


def _owner(viewer: Viewer, firm_id: int) -> bool:
    return viewer.is_requester and firm_id == viewer.firm_id


def rfq_list_answer(
    viewer: Viewer,
    *,
    now: datetime,
    state: str | None = None,
    role: str | None = None,
    cursor: str | None = None,
    limit: int,
) -> shapes.RfqPage:
    """The ``GET rfqs/`` answer: a page of RFQs as the viewer sees them at ``now`` (what
    :func:`rfq.selectors.rfq_list` selects, rendered by :func:`rfq.render.rfq_render`)."""
    page = rfq_list(viewer, now=now, state=state, role=role, cursor=cursor, limit=limit)
    usable = reference.cache_usable()
    generation = reference.generation()
    # A requester's desk sees only its own firm's RFQs (owner's view); a maker's never does.
    owner = viewer.is_requester
    results: dict[UUID, shapes.Rfq] = {}
    missing: list[UUID] = []
    for pk, stored_state in page.rows:
        hit = _renderings.get((pk, stored_state, owner, generation)) if usable else None
        if hit is not None and (hit[1] is None or now < hit[1]):
            results[pk] = hit[0]
        else:
            missing.append(pk)
    if missing:
        rows: list[RfqRow] = rfq_page(viewer, missing)
        for row in rows:
            rendering = rfq_render(row, viewer, now)
            results[row.id] = rendering
            if usable and _owner(viewer, row.firm_id) == owner:
                if len(_renderings) >= MAX_RENDERINGS:
                    _renderings.clear()
                valid_until = row.expires_at if row.state == Rfq.State.OPEN else None
                _renderings[(row.id, row.state, owner, generation)] = (rendering, valid_until)
    return rfq_page_render([results[pk] for pk, _ in page.rows if pk in results], page.next_cursor)


def renderings_reset() -> None:
    """Forget every rendering of this process (tests: rows of a rolled-back transaction)."""
    _renderings.clear()
