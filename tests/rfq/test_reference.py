"""Reference data in process memory (rfq.reference): served without SQL while subscribed, and
forgotten by every save, in this process at once and in the others by a published message."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kernel.models import Firm
from kernel.redis import channel, redis_client
from rfq import reference
from tests.conftest import refused, wait_subscribed
from tests.rfq.conftest import one_leg

pytestmark = pytest.mark.django_db


def _subscribed() -> None:
    reference._subscriber.ensure_started()
    wait_subscribed(reference._near)


def test_instruments_and_providers_come_from_memory_once_read(world):
    _subscribed()
    assert world["a"].post("rfqs/", one_leg()).status_code == 201  # reads and keeps them
    with CaptureQueriesContext(connection) as queries:
        found = reference.instruments_tradable({"BTC-PERPETUAL", "NOPE"}, timezone.now())
        providers = reference.liquidity_provider_ids()
    assert list(found) == ["BTC-PERPETUAL"]
    assert set(providers) >= {world["lp"].firm.pk, world["other_lp"].firm.pk}
    assert len(queries) == 0


def test_a_retired_instrument_is_refused_on_the_next_request(world, instruments):
    _subscribed()
    assert world["a"].post("rfqs/", one_leg()).status_code == 201
    instrument = instruments["BTC-PERPETUAL"]
    instrument.refresh_from_db()
    instrument.is_active = False
    instrument.save()  # forgets at once in this process; the others on commit
    refused(world["a"].post("rfqs/", one_leg()), 400, "UNKNOWN_INSTRUMENT")


def test_a_newly_approved_provider_receives_the_next_rfq_sent_to_all(world, desk):
    _subscribed()
    assert world["a"].post("rfqs/", one_leg()).status_code == 201
    newcomer = desk("maker")  # a new approved LP firm, saved
    created = world["a"].post("rfqs/", one_leg())
    assert created.status_code == 201
    assert newcomer.firm.pk in reference.liquidity_provider_ids()
    feed = newcomer.get("events/", since=0).json()["events"]
    assert [e["data"]["rfq"]["id"] for e in feed] == [created.json()["id"]]


def test_a_suspended_provider_leaves_the_audience(world):
    _subscribed()
    assert world["lp"].firm.pk in reference.liquidity_provider_ids()
    firm = Firm.objects.get(pk=world["lp"].firm.pk)
    firm.status = Firm.Status.SUSPENDED
    firm.save()
    assert firm.pk not in reference.liquidity_provider_ids()


def test_another_processs_change_reaches_this_processs_memory_within_50_ms(world):
    _subscribed()
    reference.liquidity_provider_ids()
    assert reference._near.get(reference.PROVIDERS) is not None
    started = time.monotonic()
    redis_client().publish(channel(reference.REFERENCE_CHANNEL), reference.PROVIDERS)
    while reference._near.get(reference.PROVIDERS) is not None:
        assert time.monotonic() - started < 0.05, "not forgotten within 50 ms"
        time.sleep(0.001)


def test_another_deployments_messages_on_the_same_redis_server_are_not_heard(world):
    """Channels belong to the Redis server: a deployment (here, another test process) with
    another namespace publishes on another channel."""
    _subscribed()
    reference.liquidity_provider_ids()
    generation = reference.generation()
    redis_client().publish(reference.REFERENCE_CHANNEL, reference.PROVIDERS)  # no namespace
    time.sleep(0.05)
    assert reference.generation() == generation
    assert reference._near.get(reference.PROVIDERS) is not None
