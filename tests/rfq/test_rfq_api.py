"""The RFQ API's behaviour: validation, idempotency, quoting, replacing, cancelling, accepting,
expiry, lists, audit, rate limits and the event feed.

Every refusal is asserted on its machine code and on what it did not write; every success on
exact values (decimals travel as JSON strings) and on its audit record.
"""

import re
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.throttling import SimpleRateThrottle

from kernel.audit import AuditRecord
from kernel.models import Firm
from rfq import services
from rfq.models import (
    Event,
    Instrument,
    Quote,
    QuoteLeg,
    Rfq,
    RfqCounterparty,
    RfqLeg,
    Trade,
    TradeLeg,
)
from rfq.reference import INSTRUMENTS, reference_forget
from rfq.tasks import rfq_expire_task
from tests.conftest import refused
from tests.factories import FirmFactory, random_lei
from tests.rfq.conftest import Desk, one_leg

pytestmark = pytest.mark.django_db

# --- helpers -----------------------------------------------------------------------------------


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def counts() -> dict:
    models = (Rfq, RfqLeg, RfqCounterparty, Quote, QuoteLeg, Trade, TradeLeg, Event, AuditRecord)
    return {m.__name__: m.objects.count() for m in models}


def caller(desk: Desk) -> services.Caller:
    return services.Caller(desk.participant, desk.certificate.serial)


def create(desk: Desk, body: dict, status: int = 201) -> dict:
    return ok(desk.post("rfqs/", body), status)


def quote(desk: Desk, rfq_id: str, body: dict, status: int = 201) -> dict:
    return ok(desk.post(f"rfqs/{rfq_id}/quotes/", body), status)


def accept(desk: Desk, rfq_id: str, quote_id: str, side: str = "buy", **extra):
    return desk.post(f"rfqs/{rfq_id}/accept/", {"quote_id": quote_id, "side": side, **extra})


def feed(desk: Desk, **params) -> list[dict]:
    return ok(desk.get("events/", since=0, limit=500, **params))["events"]


def audit_of(event: str, target_id: str) -> AuditRecord:
    return AuditRecord.objects.get(event=event, target_id=str(target_id))


def later(seconds: float):
    """Travel forward in time; the clock keeps ticking."""
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds), tick=True)


def spread(ratio: str = "1", quantity: str = "1", **extra) -> dict:
    """A call spread: buy the 100k call, sell ``ratio`` x the 110k call."""
    return {
        "legs": [
            {"instrument": "BTC-100000-C", "side": "buy"},
            {"instrument": "BTC-110000-C", "side": "sell", "ratio": ratio},
        ],
        "quantity": quantity,
        **extra,
    }


@pytest.fixture
def calls(instruments) -> dict[str, Instrument]:
    """The fixture's instruments and a second call (a call spread needs two)."""
    expiry = instruments["BTC-100000-C"].expiry
    instruments["BTC-110000-C"] = Instrument.objects.create(
        symbol="BTC-110000-C",
        kind="option",
        underlying="BTC",
        expiry=expiry,
        strike=Decimal(110000),
        option_type="call",
        quote_currency="BTC",
        tick_size=Decimal("0.0005"),
        min_size=Decimal("0.1"),
    )
    return instruments


# Leg prices for the spread: the package bid is +1 x leg-1 bid - ratio x leg-2 bid; same for ask.
SPREAD_LEGS = [
    {"leg_no": 1, "bid_price": "0.05", "ask_price": "0.056"},
    {"leg_no": 2, "bid_price": "0.021", "ask_price": "0.02"},
]


# --- creating an RFQ: validation --------------------------------------------------------------


def _legs(*symbols: str, side: str = "buy") -> list[dict]:
    return [{"instrument": s, "side": side} for s in symbols]


# name: (body(world), code). Every one is a 400 that writes nothing.
INVALID_CREATES = {
    "quantity_as_json_number": (lambda w: one_leg(1), "INVALID_REQUEST"),
    "quantity_as_json_float": (lambda w: one_leg(1.5), "INVALID_REQUEST"),
    "ratio_as_json_number": (
        lambda w: {"legs": [{**_legs("BTC-PERPETUAL")[0], "ratio": 1}], "quantity": "1"},
        "INVALID_REQUEST",
    ),
    "quantity_zero": (lambda w: one_leg("0"), "INVALID_REQUEST"),
    "quantity_negative": (lambda w: one_leg("-1"), "INVALID_REQUEST"),
    "quantity_not_a_number": (lambda w: one_leg("one"), "INVALID_REQUEST"),
    "no_legs": (lambda w: {"legs": [], "quantity": "1"}, "INVALID_REQUEST"),
    "unknown_side": (
        lambda w: {"legs": _legs("BTC-PERPETUAL", side="long"), "quantity": "1"},
        "INVALID_REQUEST",
    ),
    "client_rfq_id_bad_characters": (
        lambda w: one_leg("1", client_rfq_id="no spaces!"),
        "INVALID_REQUEST",
    ),
    "client_rfq_id_too_long": (lambda w: one_leg("1", client_rfq_id="x" * 33), "INVALID_REQUEST"),
    "duplicate_instrument": (
        lambda w: {
            "legs": [
                {"instrument": "BTC-PERPETUAL", "side": "buy"},
                {"instrument": "BTC-PERPETUAL", "side": "sell"},
            ],
            "quantity": "1",
        },
        "INVALID_LEGS",
    ),
    "quantity_not_a_multiple_of_min_size": (lambda w: one_leg("0.15"), "INVALID_QUANTITY"),
    "quantity_below_min_size": (lambda w: one_leg("0.05"), "INVALID_QUANTITY"),
    "leg_quantity_not_a_multiple_of_min_size": (
        lambda w: {
            "legs": [{"instrument": "ETH-PERPETUAL", "side": "buy", "ratio": "0.5"}],
            "quantity": "3",
        },
        "INVALID_QUANTITY",
    ),
    "unknown_instrument": (
        lambda w: {"legs": _legs("DOGE-PERPETUAL"), "quantity": "1"},
        "UNKNOWN_INSTRUMENT",
    ),
    "inactive_instrument": (
        lambda w: {"legs": _legs("BTC-DEAD"), "quantity": "1"},
        "UNKNOWN_INSTRUMENT",
    ),
    "expired_instrument": (
        lambda w: {"legs": _legs("BTC-PERPETUAL", "BTC-OLD"), "quantity": "1"},
        "UNKNOWN_INSTRUMENT",
    ),
    "expires_in_below_minimum": (lambda w: one_leg("1", expires_in=4), "INVALID_EXPIRY"),
    "expires_in_above_maximum": (lambda w: one_leg("1", expires_in=601), "INVALID_EXPIRY"),
    "counterparty_is_own_firm": (
        lambda w: one_leg("1", counterparties=[w["lp"].firm.lei, w["a"].firm.lei]),
        "SELF_TRADE",
    ),
    "counterparty_unknown_lei": (
        lambda w: one_leg("1", counterparties=[random_lei()]),
        "UNKNOWN_COUNTERPARTY",
    ),
    "counterparty_is_not_a_liquidity_provider": (
        lambda w: one_leg("1", counterparties=[w["b"].firm.lei]),
        "UNKNOWN_COUNTERPARTY",
    ),
    "counterparty_is_suspended": (
        lambda w: one_leg("1", counterparties=[w["suspended"].lei]),
        "UNKNOWN_COUNTERPARTY",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_CREATES))
def test_invalid_rfq_is_refused_with_its_code_and_writes_nothing(world, case):
    now = timezone.now()
    Instrument.objects.create(
        symbol="BTC-DEAD",
        kind="perpetual",
        underlying="BTC",
        tick_size=Decimal("0.5"),
        min_size=Decimal("0.1"),
        is_active=False,
    )
    Instrument.objects.create(
        symbol="BTC-OLD",
        kind="future",
        underlying="BTC",
        expiry=now - timedelta(minutes=1),
        tick_size=Decimal("0.5"),
        min_size=Decimal("0.1"),
    )
    world = {**world, "suspended": FirmFactory(role=Firm.Role.LIQUIDITY_PROVIDER)}
    world["suspended"].status = Firm.Status.SUSPENDED
    world["suspended"].save()
    body, code = INVALID_CREATES[case]
    before = counts()

    error = refused(world["a"].post("rfqs/", body(world)), 400, code)

    assert counts() == before
    if code == "INVALID_REQUEST":
        assert error["details"]["fields"]


def test_unknown_instruments_are_named_in_the_details(world):
    error = refused(
        world["a"].post(
            "rfqs/", {"legs": _legs("ZZZ-1", "BTC-PERPETUAL", "AAA-1"), "quantity": "1"}
        ),
        400,
        "UNKNOWN_INSTRUMENT",
    )
    assert error["details"] == {"instruments": ["AAA-1", "ZZZ-1"]}


def test_a_decimal_sent_as_a_json_number_is_refused_with_the_field_named(world):
    error = refused(world["a"].post("rfqs/", one_leg(2)), 400, "INVALID_REQUEST")
    assert list(error["details"]["fields"]) == ["quantity"]


def test_an_rfq_takes_1_to_20_legs(world):
    a = world["a"]
    Instrument.objects.bulk_create(
        Instrument(
            symbol=f"LEG-{n}",
            kind="perpetual",
            underlying="LEG",
            tick_size=Decimal("0.5"),
            min_size=Decimal("0.1"),
        )
        for n in range(21)
    )
    reference_forget(INSTRUMENTS)  # bulk_create sends no post_save
    twenty = create(a, {"legs": _legs(*[f"LEG-{n}" for n in range(20)]), "quantity": "1"})
    assert [leg["leg_no"] for leg in twenty["legs"]] == list(range(1, 21))
    before = counts()
    error = refused(
        a.post("rfqs/", {"legs": _legs(*[f"LEG-{n}" for n in range(21)]), "quantity": "1"}),
        400,
        "INVALID_REQUEST",
    )
    assert "legs" in error["details"]["fields"]
    assert counts() == before


@pytest.mark.parametrize("expires_in", [5, 600])
def test_rfq_expiry_bounds_are_inclusive(world, expires_in):
    rfq = create(world["a"], one_leg("1", expires_in=expires_in))
    created, expires = parse_datetime(rfq["created_at"]), parse_datetime(rfq["expires_at"])
    assert expires - created == timedelta(seconds=expires_in)


def test_created_rfq_renders_exact_values_as_strings(world):
    a, lp = world["a"], world["lp"]
    rfq = create(
        a,
        {
            "legs": [
                {"instrument": "BTC-PERPETUAL", "side": "buy"},
                {"instrument": "ETH-PERPETUAL", "side": "sell", "ratio": "10"},
            ],
            "quantity": "1.5",
            "counterparties": [lp.firm.lei],
            "client_rfq_id": "exact-1",
        },
    )
    assert rfq["state"] == "open"
    assert rfq["state_reason"] == ""
    assert rfq["quantity"] == "1.5"
    assert rfq["legs"] == [
        {
            "leg_no": 1,
            "instrument": "BTC-PERPETUAL",
            "side": "buy",
            "ratio": "1",
            "quantity": "1.5",
        },
        {
            "leg_no": 2,
            "instrument": "ETH-PERPETUAL",
            "side": "sell",
            "ratio": "10",
            "quantity": "15",
        },
    ]
    assert rfq["counterparties"] == [{"lei": lp.firm.lei, "legal_name": lp.firm.legal_name}]
    assert rfq["client_rfq_id"] == "exact-1"
    assert rfq["closed_at"] is None
    assert parse_datetime(rfq["expires_at"]) - parse_datetime(rfq["created_at"]) == timedelta(
        seconds=300
    )
    row = Rfq.objects.get(pk=rfq["id"])
    assert (row.quantity, row.to_all, row.certificate_serial) == (
        Decimal("1.5"),
        False,
        a.certificate.serial,
    )


# --- idempotency -------------------------------------------------------------------------------


def test_replaying_client_rfq_id_with_the_same_body_returns_the_original_and_writes_nothing(
    world,
):
    a, lp = world["a"], world["lp"]
    body = one_leg("2", counterparties=[lp.firm.lei], client_rfq_id="idem-1")
    first = create(a, body)
    before = counts()
    replay = create(a, body, status=200)
    assert replay["id"] == first["id"]
    assert replay == first
    # The same numbers written differently are the same request.
    assert create(a, {**body, "quantity": "2.00"}, status=200)["id"] == first["id"]
    assert counts() == before


def test_replaying_client_rfq_id_with_another_body_is_409_and_writes_nothing(world):
    a = world["a"]
    first = create(a, one_leg("2", client_rfq_id="idem-2"))
    before = counts()
    for other in (
        one_leg("3", client_rfq_id="idem-2"),
        one_leg("2", client_rfq_id="idem-2", anonymous=True),
        one_leg("2", client_rfq_id="idem-2", expires_in=60),
        one_leg("2", client_rfq_id="idem-2", counterparties=[world["lp"].firm.lei]),
    ):
        error = refused(a.post("rfqs/", other), 409, "DUPLICATE_CLIENT_ID")
        assert error["details"] == {"id": first["id"]}
    assert counts() == before


def test_client_rfq_id_is_scoped_to_the_firm(world, desk):
    a, b = world["a"], world["b"]
    mine = create(a, one_leg("1", client_rfq_id="shared-id"))
    theirs = create(b, one_leg("2", client_rfq_id="shared-id"))
    assert theirs["id"] != mine["id"]
    # A colleague at the same firm replays the firm's id.
    colleague = desk("requester", firm=a.firm)
    assert create(colleague, one_leg("1", client_rfq_id="shared-id"), 200)["id"] == mine["id"]


def test_replaying_client_quote_id_returns_the_original_or_409(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    body = {"bid_price": "99999", "client_quote_id": "q-idem"}
    first = quote(lp, rfq["id"], body)
    before = counts()
    assert quote(lp, rfq["id"], body, status=200)["id"] == first["id"]
    error = refused(
        lp.post(f"rfqs/{rfq['id']}/quotes/", {**body, "bid_price": "99998"}),
        409,
        "DUPLICATE_CLIENT_ID",
    )
    assert error["details"] == {"id": first["id"]}
    assert counts() == before


# --- who may do what ---------------------------------------------------------------------------


def test_a_maker_cannot_create_rfqs(world):
    before = counts()
    refused(world["lp"].post("rfqs/", one_leg("1")), 403, "NOT_AUTHORIZED")
    assert counts() == before


def test_a_requester_cannot_quote(world):
    a = world["a"]
    rfq = create(a, one_leg("1"))
    before = counts()
    refused(a.post(f"rfqs/{rfq['id']}/quotes/", {"bid_price": "1"}), 403, "NOT_AUTHORIZED")
    refused(world["b"].post(f"rfqs/{rfq['id']}/quotes/", {"bid_price": "1"}), 403, "NOT_AUTHORIZED")
    assert counts() == before


# --- quotes ------------------------------------------------------------------------------------


def test_a_one_sided_quote_takes_the_rfq_quantity_by_default(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("2"))
    q = quote(lp, rfq["id"], {"bid_price": "99999.5", "client_quote_id": "one-sided"})
    assert q["state"] == "active"
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == (
        "99999.5",
        "2",
        None,
        None,
    )
    assert q["legs"] == [{"leg_no": 1, "bid_price": "99999.5", "ask_price": None}]
    assert q["maker"] == {"lei": lp.firm.lei, "legal_name": lp.firm.legal_name}
    assert q["client_quote_id"] == "one-sided"
    assert q["trader_id"] == lp.participant.trader_id
    assert (q["replaces"], q["replaced_by"]) == (None, None)
    assert parse_datetime(q["expires_at"]) - parse_datetime(q["created_at"]) == timedelta(
        seconds=60
    )


def test_a_two_way_quote_with_sizes(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("2"))
    q = quote(
        lp,
        rfq["id"],
        {"bid_price": "99999.5", "bid_size": "1.5", "ask_price": "100000", "ask_size": "0.5"},
    )
    assert (q["bid_price"], q["bid_size"], q["ask_price"], q["ask_size"]) == (
        "99999.5",
        "1.5",
        "100000",
        "0.5",
    )
    row = Quote.objects.get(pk=q["id"])
    assert (row.bid_price, row.ask_size, row.certificate_serial) == (
        Decimal("99999.5"),
        Decimal("0.5"),
        lp.certificate.serial,
    )


# name: (quote body, code); on a 1-lot BTC-PERPETUAL RFQ (tick 0.5, min size 0.1).
INVALID_QUOTES = {
    "crossed": ({"bid_price": "100001", "ask_price": "100000"}, "INVALID_PRICE"),
    "locked": ({"bid_price": "100000", "ask_price": "100000"}, "INVALID_PRICE"),
    "no_price": ({}, "INVALID_PRICE"),
    "size_without_price": ({"bid_size": "1", "ask_price": "100000"}, "INVALID_PRICE"),
    "bid_off_tick": ({"bid_price": "99999.25"}, "INVALID_PRICE"),
    "ask_off_tick": ({"bid_price": "99999", "ask_price": "100000.1"}, "INVALID_PRICE"),
    "zero_price": ({"bid_price": "0"}, "INVALID_PRICE"),
    "size_above_rfq_quantity": ({"bid_price": "99999", "bid_size": "1.1"}, "INVALID_QUANTITY"),
    "size_off_min_size": ({"ask_price": "100000", "ask_size": "0.55"}, "INVALID_QUANTITY"),
    "price_as_json_number": ({"bid_price": 99999}, "INVALID_REQUEST"),
    "expires_in_below_minimum": ({"bid_price": "99999", "expires_in": 9}, "INVALID_EXPIRY"),
    "expires_in_above_maximum": ({"bid_price": "99999", "expires_in": 121}, "INVALID_EXPIRY"),
    "legs_with_a_null_entry": ({"bid_price": "99999", "legs": [None]}, "INVALID_REQUEST"),
    "legs_on_a_one_leg_rfq_with_wrong_number": (
        {"bid_price": "99999", "legs": [{"leg_no": 2, "bid_price": "99999"}]},
        "INVALID_PRICE",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_QUOTES))
def test_invalid_quote_is_refused_with_its_code_and_writes_nothing(world, case):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    body, code = INVALID_QUOTES[case]
    before = counts()
    refused(lp.post(f"rfqs/{rfq['id']}/quotes/", body), 400, code)
    assert counts() == before


def test_tick_violation_names_the_leg_and_tick(world, calls):
    a, lp = world["a"], world["lp"]
    rfq = create(a, {"legs": _legs("BTC-100000-C"), "quantity": "1"})
    error = refused(
        lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "0.0502"}), 400, "INVALID_PRICE"
    )
    assert error["details"] == {"leg_no": 1, "side": "ask", "tick_size": "0.0005"}
    assert quote(lp, rfq["id"], {"ask_price": "0.0505"})["ask_price"] == "0.0505"


@pytest.mark.parametrize(
    ("ratio", "bid", "ask"), [("1", "0.029", "0.036"), ("2", "0.008", "0.016")]
)
def test_a_multi_leg_quote_prices_the_package_as_the_signed_sum_of_leg_prices(
    world, calls, ratio, bid, ask
):
    a, lp = world["a"], world["lp"]
    rfq = create(a, spread(ratio))
    q = quote(lp, rfq["id"], {"bid_price": bid, "ask_price": ask, "legs": SPREAD_LEGS})
    assert (q["bid_price"], q["ask_price"]) == (bid, ask)
    assert q["legs"] == SPREAD_LEGS


@pytest.mark.parametrize(
    ("ratio", "side", "body", "legs_total"),
    [
        ("1", "bid", {"bid_price": "0.0295", "ask_price": "0.036"}, "0.029"),
        ("1", "ask", {"bid_price": "0.029", "ask_price": "0.0355"}, "0.036"),
        ("2", "bid", {"bid_price": "0.0075", "ask_price": "0.016"}, "0.008"),
        ("2", "ask", {"bid_price": "0.008", "ask_price": "0.0165"}, "0.016"),
    ],
)
def test_a_multi_leg_quote_one_tick_off_its_legs_is_refused(
    world, calls, ratio, side, body, legs_total
):
    a, lp = world["a"], world["lp"]
    rfq = create(a, spread(ratio))
    before = counts()
    error = refused(
        lp.post(f"rfqs/{rfq['id']}/quotes/", {**body, "legs": SPREAD_LEGS}), 400, "INVALID_PRICE"
    )
    assert error["details"] == {"side": side, "legs_total": legs_total}
    assert counts() == before


@pytest.mark.parametrize(
    "body",
    [
        {"bid_price": "0.029"},  # no leg prices
        {"bid_price": "0.029", "legs": SPREAD_LEGS[:1]},  # a leg missing
        {"bid_price": "0.029", "legs": [SPREAD_LEGS[0], SPREAD_LEGS[0]]},  # a leg twice
        # A leg without the bid the package has.
        {"bid_price": "0.029", "legs": [SPREAD_LEGS[0], {"leg_no": 2, "ask_price": "0.02"}]},
    ],
)
def test_a_multi_leg_quote_needs_one_price_per_leg_and_side(world, calls, body):
    a, lp = world["a"], world["lp"]
    rfq = create(a, spread())
    before = counts()
    refused(lp.post(f"rfqs/{rfq['id']}/quotes/", body), 400, "INVALID_PRICE")
    assert counts() == before


@pytest.mark.parametrize("expires_in", [10, 120])
def test_quote_expiry_bounds_are_inclusive(world, expires_in):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"bid_price": "99999", "expires_in": expires_in})
    assert parse_datetime(q["expires_at"]) - parse_datetime(q["created_at"]) == timedelta(
        seconds=expires_in
    )


def test_a_quote_never_outlives_its_rfq(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1", expires_in=30))
    q = quote(lp, rfq["id"], {"bid_price": "99999", "expires_in": 120})
    assert q["expires_at"] == rfq["expires_at"]
    assert Quote.objects.get(pk=q["id"]).expires_at == Rfq.objects.get(pk=rfq["id"]).expires_at


def test_quoting_a_closed_rfq_is_refused(world):
    a, lp = world["a"], world["lp"]
    cancelled = create(a, one_leg("1"))
    ok(a.post(f"rfqs/{cancelled['id']}/cancel/"))
    lapsing = create(a, one_leg("1", expires_in=5))
    before = counts()
    refused(lp.post(f"rfqs/{cancelled['id']}/quotes/", {"bid_price": "1"}), 409, "RFQ_NOT_OPEN")
    with later(6):
        refused(lp.post(f"rfqs/{lapsing['id']}/quotes/", {"bid_price": "1"}), 409, "RFQ_EXPIRED")
    assert counts() == before


# --- replace and cancel ------------------------------------------------------------------------


def test_replacing_a_quote_makes_a_new_one_and_marks_the_old_replaced(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    old = quote(lp, rfq["id"], {"bid_price": "99999", "client_quote_id": "v1"})
    new = ok(
        lp.post(f"quotes/{old['id']}/replace/", {"bid_price": "99999.5", "client_quote_id": "v2"}),
        201,
    )
    assert new["id"] != old["id"]
    assert (new["state"], new["bid_price"], new["replaces"], new["replaced_by"]) == (
        "active",
        "99999.5",
        old["id"],
        None,
    )
    assert new["client_quote_id"] == "v2"
    was = ok(lp.get(f"quotes/{old['id']}/"))
    assert (was["state"], was["state_reason"], was["replaced_by"]) == (
        "replaced",
        "replaced",
        new["id"],
    )
    assert was["closed_at"] is not None
    # The requester sees the same chain.
    by_id = {q["id"]: q for q in ok(a.get(f"rfqs/{rfq['id']}/quotes/"))["results"]}
    assert by_id[old["id"]]["replaced_by"] == new["id"]
    assert by_id[new["id"]]["replaces"] == old["id"]
    # Both desks learn of it.
    for desk in (a, lp):
        tail = [(e["type"], e["data"]["quote"]["id"]) for e in feed(desk)[-2:]]
        assert tail == [("quote.replaced", old["id"]), ("quote.created", new["id"])]
    record = audit_of("quote.replaced", new["id"])
    assert record.actor_id == lp.certificate.serial
    assert record.details["replaces"] == old["id"]


def test_replaying_a_replace_returns_the_replacement_it_made(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    old = quote(lp, rfq["id"], {"bid_price": "99999"})
    body = {"bid_price": "99999.5", "client_quote_id": "repl-1"}
    new = ok(lp.post(f"quotes/{old['id']}/replace/", body), 201)
    before = counts()
    assert ok(lp.post(f"quotes/{old['id']}/replace/", body))["id"] == new["id"]
    refused(
        lp.post(f"quotes/{old['id']}/replace/", {**body, "bid_price": "99998"}),
        409,
        "DUPLICATE_CLIENT_ID",
    )
    assert counts() == before


def test_replacing_a_replaced_quote_is_409_quote_not_active(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    old = quote(lp, rfq["id"], {"bid_price": "99999"})
    ok(lp.post(f"quotes/{old['id']}/replace/", {"bid_price": "99999.5"}), 201)
    before = counts()
    error = refused(
        lp.post(f"quotes/{old['id']}/replace/", {"bid_price": "99998"}), 409, "QUOTE_NOT_ACTIVE"
    )
    assert error["details"] == {"state": "replaced"}
    assert counts() == before


def test_an_invalid_replacement_leaves_the_old_quote_active(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    old = quote(lp, rfq["id"], {"bid_price": "99999"})
    before = counts()
    refused(
        lp.post(f"quotes/{old['id']}/replace/", {"bid_price": "100001", "ask_price": "100000"}),
        400,
        "INVALID_PRICE",
    )
    assert counts() == before
    assert ok(lp.get(f"quotes/{old['id']}/"))["state"] == "active"


def test_cancelling_a_quote(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"bid_price": "99999"})
    cancelled = ok(lp.post(f"quotes/{q['id']}/cancel/"))
    assert (cancelled["id"], cancelled["state"], cancelled["state_reason"]) == (
        q["id"],
        "cancelled",
        "cancelled_by_maker",
    )
    assert audit_of("quote.cancelled", q["id"]).actor_id == lp.certificate.serial
    before = counts()
    refused(lp.post(f"quotes/{q['id']}/cancel/"), 409, "QUOTE_NOT_ACTIVE")
    refused(lp.post(f"quotes/{q['id']}/replace/", {"bid_price": "1"}), 409, "QUOTE_NOT_ACTIVE")
    refused(accept(a, rfq["id"], q["id"], "sell"), 409, "QUOTE_NOT_ACTIVE")
    assert counts() == before
    assert [e["type"] for e in feed(a)][-1] == "quote.cancelled"


def test_cancel_all_on_one_rfq_then_everywhere(world):
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    first, second = create(a, one_leg("1")), create(a, one_leg("1"))
    on_first = quote(lp, first["id"], {"bid_price": "99999"})
    on_second = quote(lp, second["id"], {"ask_price": "100000"})
    also_second = quote(lp, second["id"], {"ask_price": "100001"})
    already = quote(lp, second["id"], {"ask_price": "100002"})
    ok(lp.post(f"quotes/{already['id']}/cancel/"))
    theirs = quote(other_lp, first["id"], {"bid_price": "99998"})

    assert ok(lp.post("quotes/cancel-all/", {"rfq_id": first["id"]})) == {
        "cancelled": [on_first["id"]]
    }
    assert Quote.objects.get(pk=on_second["id"]).state == "active"
    everywhere = ok(lp.post("quotes/cancel-all/"))
    assert sorted(everywhere["cancelled"]) == sorted([on_second["id"], also_second["id"]])
    assert ok(lp.post("quotes/cancel-all/")) == {"cancelled": []}

    states = dict(Quote.objects.values_list("pk", "state"))
    assert {str(k): v for k, v in states.items()} == {
        on_first["id"]: "cancelled",
        on_second["id"]: "cancelled",
        also_second["id"]: "cancelled",
        already["id"]: "cancelled",
        theirs["id"]: "active",
    }
    assert Quote.objects.get(pk=on_second["id"]).state_reason == "cancel_all"
    for q in (on_first, on_second, also_second):
        record = audit_of("quote.cancelled", q["id"])
        assert record.actor_id == lp.certificate.serial
        assert record.details["cancel_all"] is True


def test_cancel_all_on_an_unknown_rfq_is_404(world):
    refused(
        world["lp"].post("quotes/cancel-all/", {"rfq_id": str(uuid.uuid4())}), 404, "UNKNOWN_RFQ"
    )
    refused(world["lp"].post("quotes/cancel-all/", {"rfq_id": "nope"}), 400, "INVALID_REQUEST")


def test_cancelling_an_rfq_closes_its_quotes(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"bid_price": "99999"})
    cancelled = ok(a.post(f"rfqs/{rfq['id']}/cancel/"))
    assert (cancelled["state"], cancelled["state_reason"]) == (
        "cancelled",
        "cancelled_by_requester",
    )
    assert ok(lp.get(f"quotes/{q['id']}/"))["state_reason"] == "rfq_cancelled"
    assert audit_of("rfq.cancelled", rfq["id"]).actor_id == a.certificate.serial
    assert [e["type"] for e in feed(lp)][-2:] == ["rfq.cancelled", "quote.cancelled"]
    before = counts()
    refused(a.post(f"rfqs/{rfq['id']}/cancel/"), 409, "RFQ_NOT_OPEN")
    assert counts() == before


# --- accept ------------------------------------------------------------------------------------


def test_accepting_a_side_the_quote_lacks_is_quote_side_unavailable(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    bid_only = quote(lp, rfq["id"], {"bid_price": "99999"})
    before = counts()
    error = refused(accept(a, rfq["id"], bid_only["id"], "buy"), 409, "QUOTE_SIDE_UNAVAILABLE")
    assert error["details"] == {"side": "buy"}
    ask_only = quote(lp, rfq["id"], {"ask_price": "100000"})
    refused(accept(a, rfq["id"], ask_only["id"], "sell"), 409, "QUOTE_SIDE_UNAVAILABLE")
    assert Trade.objects.count() == before["Trade"]
    assert Rfq.objects.get(pk=rfq["id"]).state == "open"


@pytest.mark.parametrize(
    ("side", "limit_price", "price"),
    [("buy", "99999.5", "100000"), ("sell", "99999.5", "99999")],
)
def test_a_limit_price_worse_than_the_quote_is_price_limit_exceeded(
    world, side, limit_price, price
):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"bid_price": "99999", "ask_price": "100000"})
    before = counts()
    error = refused(
        accept(a, rfq["id"], q["id"], side, limit_price=limit_price), 409, "PRICE_LIMIT_EXCEEDED"
    )
    assert error["details"] == {"price": price, "limit_price": limit_price}
    assert counts() == before
    # At the limit exactly, it trades.
    trade = ok(accept(a, rfq["id"], q["id"], side, limit_price=price), 201)
    assert trade["price"] == price


def test_a_partial_accept_trades_ratio_times_quantity_on_each_leg(world, calls):
    a, lp = world["a"], world["lp"]
    rfq = create(a, spread("2", "3"))
    q = quote(lp, rfq["id"], {"bid_price": "0.008", "ask_price": "0.016", "legs": SPREAD_LEGS})
    trade = ok(accept(a, rfq["id"], q["id"], "buy", quantity="1.5"), 201)
    assert (trade["side"], trade["quantity"], trade["price"], trade["role"]) == (
        "buy",
        "1.5",
        "0.016",
        "requester",
    )
    assert trade["legs"] == [
        {
            "leg_no": 1,
            "instrument": "BTC-100000-C",
            "side": "buy",
            "quantity": "1.5",
            "price": "0.056",
        },
        {
            "leg_no": 2,
            "instrument": "BTC-110000-C",
            "side": "sell",
            "quantity": "3",
            "price": "0.02",
        },
    ]
    maker = ok(lp.get(f"trades/{trade['id']}/"))
    assert (maker["side"], maker["role"]) == ("sell", "maker")
    assert [(leg["side"], leg["quantity"]) for leg in maker["legs"]] == [
        ("sell", "1.5"),
        ("buy", "3"),
    ]
    assert ok(a.get(f"rfqs/{rfq['id']}/"))["state"] == "filled"


def test_selling_the_package_flips_every_leg_and_trades_at_the_leg_bids(world, calls):
    a, lp = world["a"], world["lp"]
    rfq = create(a, spread("2", "3"))
    q = quote(lp, rfq["id"], {"bid_price": "0.008", "ask_price": "0.016", "legs": SPREAD_LEGS})
    trade = ok(accept(a, rfq["id"], q["id"], "sell"), 201)
    assert (trade["side"], trade["quantity"], trade["price"]) == ("sell", "3", "0.008")
    assert trade["legs"] == [
        {
            "leg_no": 1,
            "instrument": "BTC-100000-C",
            "side": "sell",
            "quantity": "3",
            "price": "0.05",
        },
        {
            "leg_no": 2,
            "instrument": "BTC-110000-C",
            "side": "buy",
            "quantity": "6",
            "price": "0.021",
        },
    ]
    maker = ok(lp.get(f"trades/{trade['id']}/"))
    assert maker["side"] == "buy"
    assert [leg["side"] for leg in maker["legs"]] == ["buy", "sell"]
    legs = list(TradeLeg.objects.filter(trade_id=trade["id"]).values_list("side", "quantity"))
    assert legs == [("sell", Decimal(3)), ("buy", Decimal(6))]


@pytest.mark.parametrize(
    "quantity",
    ["2.5", "0.05", "1.25"],  # above the quote's size, below min size, not a multiple of it
)
def test_an_accept_quantity_must_fit_the_quote_and_the_legs(world, quantity):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("2"))
    q = quote(lp, rfq["id"], {"ask_price": "100000"})
    before = counts()
    refused(accept(a, rfq["id"], q["id"], "buy", quantity=quantity), 400, "INVALID_QUANTITY")
    assert counts() == before


def test_exactly_one_accept_per_rfq(world):
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    rfq = create(a, one_leg("1"))
    first = quote(lp, rfq["id"], {"ask_price": "100000"})
    second = quote(other_lp, rfq["id"], {"ask_price": "100000.5"})
    trade = ok(accept(a, rfq["id"], first["id"]), 201)
    record = audit_of("trade.executed", trade["id"])
    assert record.actor_id == a.certificate.serial
    assert record.details["maker_serial"] == lp.certificate.serial
    assert record.details["quotes_traded_away"] == [second["id"]]
    before = counts()
    for q in (first, second):
        error = refused(accept(a, rfq["id"], q["id"]), 409, "RFQ_NOT_OPEN")
        assert error["details"] == {"state": "filled"}
    assert counts() == before
    assert ok(other_lp.get(f"quotes/{second['id']}/"))["state"] == "traded_away"
    assert ok(lp.get(f"quotes/{first['id']}/"))["state"] == "accepted"


def test_accepting_on_a_cancelled_rfq_is_rfq_not_open(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"ask_price": "100000"})
    ok(a.post(f"rfqs/{rfq['id']}/cancel/"))
    before = counts()
    error = refused(accept(a, rfq["id"], q["id"]), 409, "RFQ_NOT_OPEN")
    assert error["details"] == {"state": "cancelled"}
    assert counts() == before


def test_accepting_a_quote_of_another_rfq_is_unknown_quote(world):
    a, lp = world["a"], world["lp"]
    rfq, other = create(a, one_leg("1")), create(a, one_leg("1"))
    q = quote(lp, other["id"], {"ask_price": "100000"})
    refused(accept(a, rfq["id"], q["id"]), 404, "UNKNOWN_QUOTE")
    refused(accept(a, rfq["id"], str(uuid.uuid4())), 404, "UNKNOWN_QUOTE")


def test_accepting_an_expired_quote_is_quote_expired(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"ask_price": "100000", "expires_in": 10})
    before = counts()
    with later(11):
        error = refused(accept(a, rfq["id"], q["id"]), 409, "QUOTE_EXPIRED")
        assert error["details"] == {"state": "expired"}
        assert ok(lp.get(f"quotes/{q['id']}/"))["state"] == "expired"
        refused(lp.post(f"quotes/{q['id']}/cancel/"), 409, "QUOTE_EXPIRED")
    assert counts() == before


def test_accepting_on_an_expired_rfq_is_rfq_expired(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1", expires_in=5))
    q = quote(lp, rfq["id"], {"ask_price": "100000"})
    before = counts()
    with later(6):
        error = refused(accept(a, rfq["id"], q["id"]), 409, "RFQ_EXPIRED")
        assert error["details"] == {"state": "expired"}
        refused(a.post(f"rfqs/{rfq['id']}/cancel/"), 409, "RFQ_EXPIRED")
    assert counts() == before


@pytest.mark.parametrize("what", ["firm suspended", "trader disabled"])
def test_accepting_a_quote_of_an_unavailable_maker_is_counterparty_unavailable(
    world, django_capture_on_commit_callbacks, what
):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    q = quote(lp, rfq["id"], {"ask_price": "100000"})
    with django_capture_on_commit_callbacks(execute=True):
        if what == "firm suspended":
            lp.firm.status = Firm.Status.SUSPENDED
            lp.firm.save()
        else:
            lp.participant.is_active = False
            lp.participant.save()
    before = counts()
    # A suspended firm's quotes are cancelled at once (rfq.signals); a disabled trader's
    # quote stays, and accept refuses it.
    code = "QUOTE_NOT_ACTIVE" if what == "firm suspended" else "COUNTERPARTY_UNAVAILABLE"
    refused(accept(a, rfq["id"], q["id"]), 409, code)
    assert counts() == before
    assert Rfq.objects.get(pk=rfq["id"]).state == "open"
    # The maker's own certificate is refused as well.
    assert lp.get("rfqs/").status_code == 403


# --- audit -------------------------------------------------------------------------------------


def test_every_action_is_audited_with_the_callers_certificate_serial(world, desk):
    a, lp = world["a"], world["lp"]
    colleague = desk("maker", firm=lp.firm)  # another certificate of the same firm
    rfq = create(a, one_leg("1"))
    spare = create(a, one_leg("1"))
    q1 = quote(lp, rfq["id"], {"ask_price": "100000"})
    q2 = ok(colleague.post(f"quotes/{q1['id']}/replace/", {"ask_price": "100000.5"}), 201)
    q3 = quote(colleague, spare["id"], {"bid_price": "99999"})
    ok(lp.post(f"quotes/{q3['id']}/cancel/"))
    ok(a.post(f"rfqs/{spare['id']}/cancel/"))
    trade = ok(accept(a, rfq["id"], q2["id"]), 201)

    expected = [
        ("rfq.created", rfq["id"], a),
        ("rfq.created", spare["id"], a),
        ("quote.created", q1["id"], lp),
        ("quote.replaced", q2["id"], colleague),
        ("quote.created", q3["id"], colleague),
        ("quote.cancelled", q3["id"], lp),
        ("rfq.cancelled", spare["id"], a),
        ("trade.executed", trade["id"], a),
    ]
    records = list(AuditRecord.objects.filter(event__regex=r"^(rfq|quote|trade)\.").order_by("id"))
    assert [(r.event, r.target_id, r.actor_type, r.actor_id) for r in records] == [
        (event, target, "certificate", who.certificate.serial) for event, target, who in expected
    ]
    assert records[0].details["client_rfq_id"] == ""
    assert Decimal(records[-1].details["price"]) == Decimal("100000.5")


# --- lists -------------------------------------------------------------------------------------


def test_state_filter_lists_an_open_rfq_past_its_time_as_expired(world):
    a, lp = world["a"], world["lp"]
    open_ = create(a, one_leg("1"))
    filled = create(a, one_leg("1"))
    ok(accept(a, filled["id"], quote(lp, filled["id"], {"ask_price": "100000"})["id"]), 201)
    cancelled = create(a, one_leg("1"))
    ok(a.post(f"rfqs/{cancelled['id']}/cancel/"))
    swept = create(a, one_leg("1", expires_in=5))
    lapsing = create(a, one_leg("1", expires_in=10))
    assert services.rfq_expire_due(now=timezone.now() + timedelta(seconds=7)) == (1, 0)

    def listed(desk, **params):
        return [(r["id"], r["state"]) for r in ok(desk.get("rfqs/", **params))["results"]]

    with later(11):
        assert Rfq.objects.get(pk=lapsing["id"]).state == "open"  # the sweep has not run
        for desk in (a, lp):
            assert listed(desk, state="open") == [(open_["id"], "open")]
            assert listed(desk, state="expired") == [
                (lapsing["id"], "expired"),
                (swept["id"], "expired"),
            ]
            assert listed(desk, state="filled") == [(filled["id"], "filled")]
            assert listed(desk, state="cancelled") == [(cancelled["id"], "cancelled")]
            assert [i for i, _ in listed(desk)] == [
                lapsing["id"],
                swept["id"],
                cancelled["id"],
                filled["id"],
                open_["id"],
            ]
        refused(a.get("rfqs/", state="lost"), 400, "INVALID_REQUEST")
        assert listed(a, role="maker") == []
        assert len(listed(a, role="requester")) == 5


def test_cursor_pagination_walks_every_rfq_once_newest_first(world):
    a, lp = world["a"], world["lp"]
    created = [create(a, one_leg("1"))["id"] for _ in range(7)]
    for desk in (a, lp):
        seen, cursor, pages = [], None, []
        while True:
            params = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
            page = ok(desk.get("rfqs/", **params))
            pages.append(len(page["results"]))
            seen += [r["id"] for r in page["results"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == [3, 3, 1]
        assert seen == list(reversed(created))


def test_quote_and_trade_lists_paginate_too(world):
    a, lp = world["a"], world["lp"]
    rfq = create(a, one_leg("1"))
    quotes = [quote(lp, rfq["id"], {"bid_price": f"{99990 + n}"})["id"] for n in range(3)]
    first = ok(a.get(f"rfqs/{rfq['id']}/quotes/", limit=2))
    assert [q["id"] for q in first["results"]] == quotes[::-1][:2]
    rest = ok(a.get(f"rfqs/{rfq['id']}/quotes/", limit=2, cursor=first["next_cursor"]))
    assert ([q["id"] for q in rest["results"]], rest["next_cursor"]) == ([quotes[0]], None)
    trades = []
    for _ in range(3):
        r = create(a, one_leg("1"))
        trades.append(
            ok(accept(a, r["id"], quote(lp, r["id"], {"ask_price": "1"})["id"]), 201)["id"]
        )
    first = ok(lp.get("trades/", limit=2))
    rest = ok(lp.get("trades/", limit=2, cursor=first["next_cursor"]))
    assert [t["id"] for t in first["results"] + rest["results"]] == trades[::-1]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("path", ["rfqs/", "rfqs/{rfq}/quotes/", "trades/"])
@pytest.mark.parametrize("cursor", ["not-a-cursor", "AAAA", "!!!!"])
def test_a_cursor_we_did_not_issue_is_invalid_cursor(world, path, cursor):
    a = world["a"]
    rfq = create(a, one_leg("1"))
    refused(a.get(path.format(rfq=rfq["id"]), cursor=cursor), 400, "INVALID_CURSOR")


@pytest.mark.parametrize("limit", [0, 201, "x"])
def test_a_page_size_out_of_range_is_invalid_request(world, limit):
    refused(world["a"].get("rfqs/", limit=limit), 400, "INVALID_REQUEST")


def _multi_leg_trade(a: Desk, lp: Desk, n: int) -> None:
    rfq, _ = services.rfq_create(
        caller=caller(a),
        legs=[services.LegIn("BTC-PERPETUAL", "buy"), services.LegIn("BTC-FUT", "buy")],
        quantity=Decimal(1),
        counterparties=[lp.firm.lei],
        client_rfq_id=f"n{n}",
    )
    legs = (
        services.QuoteLegIn(1, ask_price=Decimal(100000)),
        services.QuoteLegIn(2, ask_price=Decimal(100500)),
    )
    q, _ = services.quote_create(
        caller=caller(lp),
        rfq_id=rfq.pk,
        data=services.QuoteIn(ask_price=Decimal(200500), legs=legs),
    )
    services.rfq_accept(caller=caller(a), rfq_id=rfq.pk, quote_id=q.pk, side="buy")


# Reads that are not the list's own: the certificate's trust decision comes from the
# database whenever its cache entry is missing, and whether it is depends on the machine (a
# Redis read that times out under load is a miss, by design), not on the rows.
NOT_THE_LISTS = re.compile(r'\bFROM "(pki_certificate|keyline_cache)"')


def _query_count(desk: Desk, path: str, rows: int) -> int:
    """The queries of one list request, the trust decision and the cache left out."""
    desk.get(path)  # warm the trust decision and the rate-limit entry
    with CaptureQueriesContext(connection) as queries:
        response = desk.get(path, limit=50)
    assert len(ok(response)["results"]) == rows
    return sum(1 for q in queries.captured_queries if not NOT_THE_LISTS.search(q["sql"]))


def test_list_query_counts_do_not_grow_with_the_rows(world):
    # Without Redis the trust decisions and rate logs are rows of the database cache, which
    # culls (extra queries on a write) once it holds more than its MAX_ENTRIES; rows left by
    # earlier transactional tests must not decide that.
    cache.clear()
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    target = create(a, one_leg("1", counterparties=[lp.firm.lei, other_lp.firm.lei]))["id"]

    def add_quotes(n: int) -> None:
        for i in range(n):
            maker = lp if i % 2 else other_lp
            q, _ = services.quote_create(
                caller=caller(maker),
                rfq_id=target,
                data=services.QuoteIn(bid_price=Decimal(99000 + i)),
            )
            if i % 3 == 0:
                services.quote_replace(
                    caller=caller(maker),
                    quote_id=q.pk,
                    data=services.QuoteIn(bid_price=Decimal(98000 + i)),
                )

    def add_trades(n: int, start: int) -> None:
        for i in range(n):
            _multi_leg_trade(a, lp, start + i)

    add_quotes(2)  # 2 quotes, 1 of them replaced: 3 rows
    add_trades(2, 0)  # and 2 more RFQs
    small = {
        "rfqs/": _query_count(a, "rfqs/", 3),
        "maker rfqs/": _query_count(lp, "rfqs/", 3),
        "quotes": _query_count(a, f"rfqs/{target}/quotes/", 3),
        "maker quotes": _query_count(lp, f"rfqs/{target}/quotes/", 1),
        "trades/": _query_count(a, "trades/", 2),
        "maker trades/": _query_count(lp, "trades/", 2),
    }
    add_quotes(9)
    add_trades(10, 2)
    large = {
        "rfqs/": _query_count(a, "rfqs/", 13),
        "maker rfqs/": _query_count(lp, "rfqs/", 13),
        "quotes": _query_count(a, f"rfqs/{target}/quotes/", 15),
        "maker quotes": _query_count(lp, f"rfqs/{target}/quotes/", 6),
        "trades/": _query_count(a, "trades/", 12),
        "maker trades/": _query_count(lp, "trades/", 12),
    }
    assert large == small


def _reads(desk: Desk, path: str, body: dict | None = None) -> tuple[dict, Counter]:
    """POST, and count the SELECTs of the request by the table they read (their first FROM;
    the cache and the trust decision left out)."""
    desk.get("whoami/")  # warm the trust decision and the rate-limit entry
    with CaptureQueriesContext(connection) as queries:
        response = desk.post(path, body)
    tables = Counter()
    for query in queries.captured_queries:
        match = re.search(r'\bFROM "(\w+)"', query["sql"])
        if query["sql"].lstrip().upper().startswith("SELECT") and match:
            tables[match.group(1)] += 1
    return response.json(), tables


def test_a_write_reads_nothing_back_it_wrote_and_the_view_renders_what_it_got(world, calls):
    # The service returns its objects loaded as the API renders them, builds what it created
    # in memory, and the view renders that: no read-back, no second load, however many legs.
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    body = spread(counterparties=[lp.firm.lei, other_lp.firm.lei])
    rfq, reads = _reads(a, "rfqs/", body)
    assert rfq["state"] == "open"
    assert reads["rfq_rfq"] == reads["rfq_rfqleg"] == reads["rfq_rfqcounterparty"] == 0

    legs = [{"leg_no": 1, "ask_price": "0.05"}, {"leg_no": 2, "ask_price": "0.02"}]
    first, reads = _reads(lp, f"rfqs/{rfq['id']}/quotes/", {"ask_price": "0.03", "legs": legs})
    assert first["state"] == "active"
    # The RFQ locked once, its legs once; the new quote never read.
    assert (reads["rfq_rfq"], reads["rfq_rfqleg"], reads["rfq_quote"]) == (1, 1, 0)
    assert reads["rfq_quoteleg"] == 0

    legs = [{"leg_no": 1, "ask_price": "0.045"}, {"leg_no": 2, "ask_price": "0.02"}]
    second, reads = _reads(
        lp, f"quotes/{first['id']}/replace/", {"ask_price": "0.025", "legs": legs}
    )
    assert second["replaces"] == first["id"]
    # The old quote found, then locked with what its event renders; its legs once.
    assert (reads["rfq_rfq"], reads["rfq_quote"], reads["rfq_quoteleg"]) == (1, 2, 1)
    losing = quote(other_lp, rfq["id"], {"ask_price": "0.025", "legs": legs})

    trade, reads = _reads(a, f"rfqs/{rfq['id']}/accept/", {"quote_id": second["id"], "side": "buy"})
    assert [leg["price"] for leg in trade["legs"]] == ["0.045", "0.02"]
    assert reads["rfq_trade"] == reads["rfq_tradeleg"] == 0
    assert (reads["rfq_rfq"], reads["rfq_rfqleg"], reads["rfq_rfqcounterparty"]) == (1, 1, 1)
    # The accepted quote locked, then the one traded away; the legs of each once.
    assert (reads["rfq_quote"], reads["rfq_quoteleg"]) == (2, 2)
    assert ok(other_lp.get(f"quotes/{losing['id']}/"))["state"] == "traded_away"

    spare = create(a, one_leg("1", counterparties=[lp.firm.lei]))
    q = quote(lp, spare["id"], {"bid_price": "99999"})
    cancelled, reads = _reads(lp, f"quotes/{q['id']}/cancel/")
    assert cancelled["state"] == "cancelled"
    assert (reads["rfq_rfq"], reads["rfq_quote"], reads["rfq_quoteleg"]) == (1, 2, 1)
    cancelled, reads = _reads(a, f"rfqs/{spare['id']}/cancel/")
    assert cancelled["state"] == "cancelled"
    assert (reads["rfq_rfq"], reads["rfq_rfqleg"], reads["rfq_rfqcounterparty"]) == (1, 1, 1)


# --- expiry ------------------------------------------------------------------------------------


def _expiry_world(world) -> dict:
    a, lp = world["a"], world["lp"]
    short = create(a, one_leg("1", expires_in=5))
    long = create(a, one_leg("1"))
    filled = create(a, one_leg("1", expires_in=5))
    return {
        "short": short,
        "short_quote": quote(lp, short["id"], {"bid_price": "99999"}),
        "long": long,
        "lapsed_quote": quote(lp, long["id"], {"bid_price": "99999", "expires_in": 10}),
        "live_quote": quote(lp, long["id"], {"bid_price": "99999", "expires_in": 60}),
        "filled": filled,
        "trade": ok(
            accept(a, filled["id"], quote(lp, filled["id"], {"ask_price": "1"})["id"]), 201
        ),
    }


def _assert_expired(world, objs: dict, events_before: dict) -> None:
    a, lp = world["a"], world["lp"]
    states = {
        name: (obj.state, obj.state_reason)
        for name, obj in (
            ("short", Rfq.objects.get(pk=objs["short"]["id"])),
            ("short_quote", Quote.objects.get(pk=objs["short_quote"]["id"])),
            ("long", Rfq.objects.get(pk=objs["long"]["id"])),
            ("lapsed_quote", Quote.objects.get(pk=objs["lapsed_quote"]["id"])),
            ("live_quote", Quote.objects.get(pk=objs["live_quote"]["id"])),
            ("filled", Rfq.objects.get(pk=objs["filled"]["id"])),
        )
    }
    assert states == {
        "short": ("expired", "expired"),
        "short_quote": ("expired", "rfq_expired"),
        "long": ("open", ""),
        "lapsed_quote": ("expired", "expired"),
        "live_quote": ("active", ""),
        "filled": ("filled", "accepted"),
    }
    new_a = [(e["type"], e["data"]) for e in feed(a)][events_before["a"] :]
    new_lp = [(e["type"], e["data"]) for e in feed(lp)][events_before["lp"] :]
    assert sorted((t, next(iter(d.values()))["id"]) for t, d in new_a) == sorted(
        [("rfq.expired", objs["short"]["id"]), ("quote.expired", objs["lapsed_quote"]["id"])]
    )
    assert sorted((t, next(iter(d.values()))["id"]) for t, d in new_lp) == sorted(
        [
            ("rfq.expired", objs["short"]["id"]),
            ("quote.expired", objs["short_quote"]["id"]),
            ("quote.expired", objs["lapsed_quote"]["id"]),
        ]
    )
    assert all(next(iter(d.values()))["state"] == "expired" for _, d in new_a + new_lp), (
        "events render the closed state"
    )
    system = AuditRecord.objects.filter(event__in=["rfq.expired", "quote.expired"])
    assert sorted((r.event, r.target_id, r.actor_type) for r in system) == sorted(
        [
            ("rfq.expired", objs["short"]["id"], "system"),
            ("quote.expired", objs["lapsed_quote"]["id"], "system"),
        ]
    )


def test_the_expiry_sweep_closes_what_is_due_once(world):
    objs = _expiry_world(world)
    before = {"a": len(feed(world["a"])), "lp": len(feed(world["lp"]))}
    assert services.rfq_expire_due(now=timezone.now() + timedelta(seconds=3)) == (0, 0)
    assert services.rfq_expire_due(now=timezone.now() + timedelta(seconds=11)) == (1, 2)
    _assert_expired(world, objs, before)
    after = counts()
    assert services.rfq_expire_due(now=timezone.now() + timedelta(seconds=11)) == (0, 0)
    assert counts() == after


def test_the_expiry_task_runs_the_sweep_and_is_idempotent(world):
    objs = _expiry_world(world)
    before = {"a": len(feed(world["a"])), "lp": len(feed(world["lp"]))}
    with later(11):
        rfq_expire_task.delay()
        _assert_expired(world, objs, before)
        after = counts()
        rfq_expire_task.delay()
        assert counts() == after
    assert rfq_expire_task.apply().get() == (0, 0)


# --- rate limits -------------------------------------------------------------------------------


def test_rfq_creation_is_rate_limited_per_certificate(world, desk, monkeypatch):
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "rfq_create": "2/min"},
    )
    cache.clear()
    a = world["a"]
    create(a, one_leg("1"))
    create(a, one_leg("1"))
    before = counts()
    response = a.post("rfqs/", one_leg("1"))
    refused(response, 429, "RATE_LIMITED")
    assert 0 < int(response["Retry-After"]) <= 60
    assert counts() == before
    # Another scope of the same certificate, and another certificate of the same firm, are not.
    ok(a.get("rfqs/"))
    create(desk("requester", firm=a.firm), one_leg("1"))


def test_the_rate_log_without_redis_still_counts_across_a_second_boundary(world, monkeypatch):
    """DRF's sliding log in the database cache, which rounds an expiry down to the second:
    requests just before a whole second still count just after it."""
    from rfq import throttling

    monkeypatch.setattr(throttling, "redis_client", lambda: None)
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "read": "2/s"},
    )
    cache.clear()
    a = world["a"]
    with time_machine.travel(int(time.time()) + 2.9, tick=False) as traveller:
        ok(a.get("rfqs/"))
        ok(a.get("rfqs/"))
        traveller.shift(0.2)  # past the second boundary, still within the window
        refused(a.get("rfqs/"), 429, "RATE_LIMITED")
        traveller.shift(1)
        ok(a.get("rfqs/"))


# --- the event feed ----------------------------------------------------------------------------


def test_events_resume_from_since_with_limit_and_next_since(world):
    a = world["a"]
    ids = [create(a, one_leg("1"))["id"] for _ in range(3)]
    page = ok(a.get("events/", since=0, limit=2))
    assert [e["data"]["rfq"]["id"] for e in page["events"]] == ids[:2]
    seqs = [e["seq"] for e in page["events"]]
    assert seqs == sorted(seqs)
    assert page["next_since"] == seqs[-1]
    rest = ok(a.get("events/", since=page["next_since"], limit=2))
    assert [e["data"]["rfq"]["id"] for e in rest["events"]] == ids[2:]
    assert rest["events"][0]["seq"] > seqs[-1]
    assert rest["events"][0]["type"] == "rfq.created"
    assert parse_datetime(rest["events"][0]["created_at"]) is not None
    empty = ok(a.get("events/", since=rest["next_since"]))
    assert empty == {"events": [], "next_since": rest["next_since"]}


@pytest.mark.parametrize(
    "params", [{"since": -1}, {"limit": 0}, {"limit": 501}, {"wait": 26}, {"wait": "soon"}]
)
def test_events_parameters_out_of_range_are_invalid_request(world, params):
    refused(world["a"].get("events/", **params), 400, "INVALID_REQUEST")


def test_events_with_wait_0_return_at_once_and_a_wait_holds(world):
    a = world["a"]
    started = time.monotonic()
    assert ok(a.get("events/", wait=0))["events"] == []
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    assert ok(a.get("events/", wait=0.3))["events"] == []
    assert time.monotonic() - started >= 0.3


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_is_woken_by_a_new_event(world):
    a, lp = world["a"], world["lp"]
    since = ok(lp.get("events/"))["next_since"]
    result: dict = {}

    def poll() -> None:
        try:
            started = time.monotonic()
            result["response"] = lp.get("events/", since=since, wait=5)
            result["returned"] = time.monotonic()
            result["elapsed"] = result["returned"] - started
        finally:
            connections.close_all()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)  # let it start waiting
    posted = time.monotonic()
    rfq = create(a, one_leg("1", counterparties=[lp.firm.lei]))
    thread.join(timeout=10)
    assert not thread.is_alive()

    body = ok(result["response"])
    assert [(e["type"], e["data"]["rfq"]["id"]) for e in body["events"]] == [
        ("rfq.created", rfq["id"])
    ]
    # It was holding when the RFQ was posted, and the commit woke it well before its 5 s.
    assert result["returned"] >= posted
    assert result["returned"] - posted < 2.0, result["returned"] - posted
    assert result["elapsed"] < 4.0, result["elapsed"]


@pytest.mark.django_db(transaction=True)
def test_a_long_poll_outlived_by_its_certificate_hands_over_nothing(world):
    from kernel.audit import Actor
    from pki.revocation import certificate_revoke

    a, lp = world["a"], world["lp"]
    since = ok(lp.get("events/"))["next_since"]
    result: dict = {}

    def poll() -> None:
        try:
            result["response"] = lp.get("events/", since=since, wait=5)
        finally:
            connections.close_all()

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)  # waiting, already authenticated
    certificate_revoke(certificate=lp.certificate, reason="keyCompromise", actor=Actor.system("t"))
    create(a, one_leg("1", counterparties=[lp.firm.lei]))  # wakes the poll
    thread.join(timeout=10)
    assert not thread.is_alive()
    response = result["response"]
    assert response.status_code == 401, response.content
    assert response.json()["code"] == "CERTIFICATE_REVOKED"
    # Refused as authentication refuses: audited with the certificate's serial.
    refusal = AuditRecord.objects.filter(event="api.authentication_refused").latest("id")
    assert refusal.actor_id == lp.certificate.serial
    assert refusal.details["code"] == "CERTIFICATE_REVOKED"


@pytest.mark.parametrize(
    ("ratio", "quantity"),
    [("9999999999999999", "9999999999999999.99999999"), ("100000000", "100000000.1")],
)
def test_leg_quantity_beyond_numeric_24_8_is_refused(world, ratio, quantity):
    body = {
        "legs": [{"instrument": "BTC-PERPETUAL", "side": "buy", "ratio": ratio}],
        "quantity": quantity,
    }
    response = world["a"].post("rfqs/", body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_QUANTITY"


def test_derived_leg_price_beyond_numeric_24_8_is_refused(world):
    a, lp = world["a"], world["lp"]
    rfq = a.post(
        "rfqs/",
        {
            "legs": [{"instrument": "BTC-PERPETUAL", "side": "buy", "ratio": "0.00000001"}],
            "quantity": "10000000",
        },
    ).json()
    response = lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "9999999999999999"})
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_PRICE"


def test_a_quote_leg_listed_twice_is_400_not_500(world):
    a, lp = world["a"], world["lp"]
    rfq = a.post(
        "rfqs/",
        {
            "legs": [
                {"instrument": "BTC-PERPETUAL", "side": "buy"},
                {"instrument": "BTC-FUT", "side": "sell"},
            ],
            "quantity": "1",
        },
    ).json()
    body = {"bid_price": "2", "legs": [{"leg_no": 1, "bid_price": "2"}, {"leg_no": 1}]}
    response = lp.post(f"rfqs/{rfq['id']}/quotes/", body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "INVALID_PRICE"


def test_suspending_a_firm_cancels_its_open_rfqs_and_active_quotes(
    world, django_capture_on_commit_callbacks
):
    from kernel.models import Firm

    a, lp, other = world["a"], world["lp"], world["other_lp"]
    rfq = create(a, one_leg("1", counterparties=[lp.firm.lei, other.firm.lei]))
    kept = create(a, one_leg("2", counterparties=[other.firm.lei]))
    lp_quote = ok(lp.post(f"rfqs/{rfq['id']}/quotes/", {"bid_price": "1", "ask_price": "2"}), 201)
    other_quote = ok(other.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "3"}), 201)

    with django_capture_on_commit_callbacks(execute=True):
        lp.firm.status = Firm.Status.SUSPENDED
        lp.firm.save()
    assert Quote.objects.get(pk=lp_quote["id"]).state_reason == "firm_suspended"
    assert Quote.objects.get(pk=other_quote["id"]).state == "active"
    assert Rfq.objects.get(pk=rfq["id"]).state == "open"

    with django_capture_on_commit_callbacks(execute=True):
        a.firm.status = Firm.Status.OFFBOARDED
        a.firm.save()
    assert {r.state_reason for r in Rfq.objects.filter(pk__in=[rfq["id"], kept["id"]])} == {
        "firm_offboarded"
    }
    assert Quote.objects.get(pk=other_quote["id"]).state == "cancelled"
    types = set(Event.objects.filter(firm=other.firm).values_list("type", flat=True))
    assert {"rfq.cancelled", "quote.cancelled"} <= types
