"""The event feed under concurrent writers: a reader following ``since=`` never sees a higher
number before a lower one, so it never skips an event, however the writers' commits interleave."""

import random
import threading
import time

import pytest
from django.db import connection, transaction

from kernel.models import Firm
from rfq.events import Draft, events_append
from rfq.models import Audience, Event
from rfq.selectors import Viewer, event_feed
from tests.factories import FirmFactory
from tests.servers import NEEDS_POSTGRES

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason=NEEDS_POSTGRES),
    pytest.mark.django_db(transaction=True),
]

WRITERS, APPENDS = 6, 25


def test_a_reader_never_skips_an_event_of_concurrent_writers(cas):
    firm = FirmFactory(role=Firm.Role.LIQUIDITY_PROVIDER)
    other = FirmFactory(role=Firm.Role.LIQUIDITY_PROVIDER)
    viewer = Viewer.desk(firm.pk, Audience.MAKER)
    errors: list[BaseException] = []
    writing = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)  # noqa: S311 - timing jitter, not a secret
        try:
            for i in range(APPENDS):
                with transaction.atomic():
                    events_append(
                        [
                            Draft(firm.pk, Audience.MAKER, "rfq.created", {"w": n, "i": i}),
                            Draft(other.pk, Audience.MAKER, "rfq.created", {"w": n, "i": i}),
                        ]
                    )
                    # Hold the transaction open a while: commits land out of start order.
                    time.sleep(rng.random() * 0.004)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    seen: list[int] = []

    def reader() -> None:
        cursor = 0
        try:
            while True:
                # Read the flag before the feed: once the writers are done, one empty read
                # after that means everything committed has been read.
                finished = not writing.is_set()
                batch = list(event_feed(viewer, since=cursor)[:50])
                for event in batch:
                    assert event.seq > cursor
                    seen.append(event.seq)
                    cursor = event.seq
                if finished and not batch:
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    writing.set()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    follower = threading.Thread(target=reader)
    follower.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    writing.clear()
    follower.join(60)
    assert errors == []
    stored = list(Event.objects.filter(firm=firm).order_by("seq").values_list("seq", flat=True))
    assert len(stored) == WRITERS * APPENDS
    # Everything committed was handed to the follower, once, in order: nothing skipped.
    assert seen == stored
