"""The RFQ list from renderings kept in memory (rfq.listing): never stale, never another
viewer's rendering."""

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kernel.models import Firm
from rfq import listing, reference
from tests.conftest import wait_subscribed
from tests.rfq.conftest import one_leg

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _subscribed():
    """The renderings are kept only while the process hears reference changes."""
    reference.cache_usable()  # starts the subscriber
    wait_subscribed(reference._near)


def _list(desk, **params) -> list[dict]:
    response = desk.get("rfqs/", **params)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_a_page_seen_before_costs_one_query(world):
    for _ in range(3):
        assert world["a"].post("rfqs/", one_leg()).status_code == 201
    first = _list(world["a"])
    with CaptureQueriesContext(connection) as queries:
        again = _list(world["a"])
    assert again == first
    page_queries = [q for q in queries if "rfq_rfq" in q["sql"] or "rfq_rfqleg" in q["sql"]]
    assert len(page_queries) == 1, [q["sql"][:80] for q in page_queries]


def test_a_cancelled_rfq_is_listed_as_cancelled_at_once(world):
    rfq = world["a"].post("rfqs/", one_leg()).json()
    assert [r["state"] for r in _list(world["a"])] == ["open"]
    assert _list(world["lp"])[0]["state"] == "open"
    assert world["a"].post(f"rfqs/{rfq['id']}/cancel/").status_code == 200
    assert [r["state"] for r in _list(world["a"])] == ["cancelled"]
    assert _list(world["lp"])[0]["state"] == "cancelled"


def test_an_open_rfq_reads_as_expired_once_its_time_passes(world):
    rfq = world["a"].post("rfqs/", one_leg(expires_in=5)).json()
    assert _list(world["a"])[0]["state"] == "open"
    with time_machine.travel(timezone.now() + timedelta(seconds=6)):
        listed = _list(world["a"])[0]
    assert (listed["id"], listed["state"]) == (rfq["id"], "expired")


def test_the_owners_rendering_never_reaches_a_maker(world):
    world["a"].post("rfqs/", one_leg(anonymous=True, client_rfq_id="mine-1"))
    owner = _list(world["a"])[0]
    assert owner["client_rfq_id"] == "mine-1"
    assert owner["requester"]["lei"] == world["a"].firm.lei
    maker = _list(world["lp"])[0]
    assert maker["requester"] is None
    assert "client_rfq_id" not in maker
    assert "trader_id" not in maker
    assert "counterparties" not in maker


def test_a_renamed_firm_is_listed_under_its_new_name(world):
    world["a"].post("rfqs/", one_leg())
    assert _list(world["lp"])[0]["requester"]["legal_name"] == world["a"].firm.legal_name
    firm = Firm.objects.get(pk=world["a"].firm.pk)
    firm.legal_name = "Renamed Holdings Ltd"
    firm.save()
    assert _list(world["lp"])[0]["requester"]["legal_name"] == "Renamed Holdings Ltd"


def test_renderings_are_bounded(world, monkeypatch):
    monkeypatch.setattr(listing, "MAX_RENDERINGS", 2)
    for _ in range(3):
        world["a"].post("rfqs/", one_leg())
    assert len(_list(world["a"])) == 3
    assert 1 <= len(listing._renderings) <= 2
