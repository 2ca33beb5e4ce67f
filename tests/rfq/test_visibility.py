"""Who sees what (docs/api.md, "Visibility"): every endpoint against every kind of caller.

Callers: requester A (owns the RFQs), requester B (another client firm), the invited LP (named
counterparty) and an uninvited LP. What a caller may not see does not exist for it: a
forbidden object answers exactly like a random UUID (same status, code, message, details),
and a refused call changes nothing. Fields that belong to one side (client ids, trader ids,
the counterparty list, the requester of an anonymous RFQ) never reach the other, neither in
the API responses nor in the event feed.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from kernel.audit import AuditRecord
from kernel.models import Firm
from rfq.models import Event, Quote, Rfq, Trade
from rfq.services import rfq_expire_due
from tests.conftest import refused
from tests.factories import FirmFactory
from tests.rfq.conftest import Desk, one_leg

pytestmark = pytest.mark.django_db

CALLERS = ["a", "b", "lp", "other_lp"]


# --- helpers -----------------------------------------------------------------------------------


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def without_request_id(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "request_id"}


def call(desk: Desk, method: str, path: str, body: dict | None = None):
    return desk.get(path) if method == "GET" else desk.post(path, body)


def events(desk: Desk) -> list[dict]:
    return ok(desk.get("events/", since=0, limit=500))["events"]


def everything_seen(desk: Desk, *, rfq_ids=(), quote_ids=(), trade_ids=()) -> str:
    """One JSON text of all a desk can read: lists, details and its whole event feed."""
    seen = [
        desk.get("rfqs/", limit=200).json(),
        desk.get("trades/", limit=200).json(),
        events(desk),
    ]
    seen += [desk.get(f"rfqs/{i}/").json() for i in rfq_ids]
    seen += [desk.get(f"rfqs/{i}/quotes/").json() for i in rfq_ids]
    seen += [desk.get(f"quotes/{i}/").json() for i in quote_ids]
    seen += [desk.get(f"trades/{i}/").json() for i in trade_ids]
    return json.dumps(seen)


def quoted(value: str) -> str:
    """How a string value appears in a JSON text (so "trader-1" never matches "trader-12")."""
    return json.dumps(value)


def snapshot() -> dict:
    return {
        "rfqs": sorted(Rfq.objects.values_list("pk", "state")),
        "quotes": sorted(Quote.objects.values_list("pk", "state")),
        "trades": Trade.objects.count(),
        "events": Event.objects.count(),
        "audit": AuditRecord.objects.count(),
    }


@dataclass
class Scene:
    desks: dict[str, Desk]
    rfq: str  # open, addressed to the invited LP only, with one active quote
    quote: str
    filled_rfq: str  # filled: the invited LP's quote was accepted by A
    filled_quote: str
    trade: str


@pytest.fixture
def scene(world) -> Scene:
    a, lp = world["a"], world["lp"]
    rfq = ok(
        a.post("rfqs/", one_leg("1", counterparties=[lp.firm.lei], client_rfq_id="vis-open")), 201
    )
    quote = ok(
        lp.post(
            f"rfqs/{rfq['id']}/quotes/",
            {"bid_price": "99999.5", "ask_price": "100000", "client_quote_id": "vis-q"},
        ),
        201,
    )
    filled = ok(
        a.post("rfqs/", one_leg("2", counterparties=[lp.firm.lei], client_rfq_id="vis-filled")),
        201,
    )
    filled_quote = ok(lp.post(f"rfqs/{filled['id']}/quotes/", {"ask_price": "100000.5"}), 201)
    trade = ok(
        a.post(f"rfqs/{filled['id']}/accept/", {"quote_id": filled_quote["id"], "side": "buy"}),
        201,
    )
    return Scene(world, rfq["id"], quote["id"], filled["id"], filled_quote["id"], trade["id"])


# --- the matrix --------------------------------------------------------------------------------

QUOTE_BODY = {"bid_price": "99998", "ask_price": "100002"}

# name: (method, path, body, code for a missing object, {caller: expected status})
# 404 answers carry the endpoint's UNKNOWN_* code; 403 answers NOT_AUTHORIZED (the caller's
# desk may never do this, whatever the id: the check comes before any lookup).
ENDPOINTS = {
    "GET rfqs/{id}/": (
        "GET", "rfqs/{rfq}/", None, "UNKNOWN_RFQ",
        {"a": 200, "b": 404, "lp": 200, "other_lp": 404},
    ),
    "GET rfqs/{id}/quotes/": (
        "GET", "rfqs/{rfq}/quotes/", None, "UNKNOWN_RFQ",
        {"a": 200, "b": 404, "lp": 200, "other_lp": 404},
    ),
    "GET quotes/{id}/": (
        "GET", "quotes/{quote}/", None, "UNKNOWN_QUOTE",
        {"a": 200, "b": 404, "lp": 200, "other_lp": 404},
    ),
    "GET trades/{id}/": (
        "GET", "trades/{trade}/", None, "UNKNOWN_TRADE",
        {"a": 200, "b": 404, "lp": 200, "other_lp": 404},
    ),
    "POST rfqs/{id}/cancel/": (
        "POST", "rfqs/{rfq}/cancel/", {}, "UNKNOWN_RFQ",
        {"a": 200, "b": 404, "lp": 403, "other_lp": 403},
    ),
    "POST rfqs/{id}/quotes/": (
        "POST", "rfqs/{rfq}/quotes/", QUOTE_BODY, "UNKNOWN_RFQ",
        {"a": 403, "b": 403, "lp": 201, "other_lp": 404},
    ),
    "POST rfqs/{id}/accept/": (
        "POST", "rfqs/{rfq}/accept/", {"quote_id": "{quote}", "side": "buy"}, "UNKNOWN_RFQ",
        {"a": 201, "b": 404, "lp": 403, "other_lp": 403},
    ),
    "POST quotes/{id}/replace/": (
        "POST", "quotes/{quote}/replace/", QUOTE_BODY, "UNKNOWN_QUOTE",
        {"a": 403, "b": 403, "lp": 201, "other_lp": 404},
    ),
    "POST quotes/{id}/cancel/": (
        "POST", "quotes/{quote}/cancel/", {}, "UNKNOWN_QUOTE",
        {"a": 403, "b": 403, "lp": 200, "other_lp": 404},
    ),
    "POST quotes/cancel-all/ rfq_id": (
        "POST", "quotes/cancel-all/", {"rfq_id": "{rfq}"}, "UNKNOWN_RFQ",
        {"a": 403, "b": 403, "lp": 200, "other_lp": 404},
    ),
}  # fmt: skip


def _fill(template, ids: dict):
    if template is None:
        return None
    if isinstance(template, str):
        return template.format(**ids)
    return {k: _fill(v, ids) for k, v in template.items()}


def _assert_refused_like_a_missing_object(
    desk: Desk, caller: str, endpoint: str, status: int, code: str, ids: dict
) -> None:
    method, path, body, _, _ = ENDPOINTS[endpoint]
    where = f"{endpoint} as {caller}"
    before = snapshot()
    forbidden = call(desk, method, _fill(path, ids), _fill(body, ids))
    assert forbidden.status_code == status, (where, forbidden.content)
    assert forbidden.json()["code"] == code, (where, forbidden.json())
    assert snapshot() == before, f"{where}: a refused call wrote something"
    # The same call on an object that does not exist answers exactly the same...
    random = dict(ids)
    for key in ids:
        if "{" + key + "}" in json.dumps([path, body]):
            random[key] = str(uuid.uuid4())
    missing = call(desk, method, _fill(path, random), _fill(body, random))
    assert missing.status_code == status, (where, missing.content)
    assert without_request_id(missing.json()) == without_request_id(forbidden.json()), where
    # ...and so does a malformed id in the path.
    malformed = {k: ("not-a-uuid" if "{" + k + "}" in path else v) for k, v in random.items()}
    if "not-a-uuid" in _fill(path, malformed):
        response = call(desk, method, _fill(path, malformed), _fill(body, malformed))
        assert response.status_code == status, (where, response.content)
        assert without_request_id(response.json()) == without_request_id(forbidden.json()), where
    assert snapshot() == before, where


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_endpoint_answers_each_caller_as_the_visibility_rules_say(scene, endpoint):
    """Refused callers first (each must change nothing), then the allowed ones: for a POST
    only one caller may act, so it goes last."""
    method, path, body, missing_code, expected = ENDPOINTS[endpoint]
    ids = {"rfq": scene.rfq, "quote": scene.quote, "trade": scene.trade}
    for caller in sorted(CALLERS, key=lambda c: expected[c] < 400):
        status, desk = expected[caller], scene.desks[caller]
        if status >= 400:
            code = "NOT_AUTHORIZED" if status == 403 else missing_code
            _assert_refused_like_a_missing_object(desk, caller, endpoint, status, code, ids)
            continue
        response = call(desk, method, _fill(path, ids), _fill(body, ids))
        assert response.status_code == status, (endpoint, caller, response.content)
        data = response.json()
        if path == "rfqs/{rfq}/quotes/" and method == "GET":
            assert [q["id"] for q in data["results"]] == [scene.quote], caller
        elif method == "GET":
            assert data["id"] == ids[path.split("/")[0].rstrip("s")], caller


# What each caller finds in the lists and its event feed (scene attribute names).
LISTED = {
    "a": {
        "rfqs/": {"rfq", "filled_rfq"},
        "trades/": {"trade"},
        "events/": [
            ("rfq.created", "rfq"),
            ("quote.created", "quote"),
            ("rfq.created", "filled_rfq"),
            ("quote.created", "filled_quote"),
            ("trade.created", "trade"),
            ("rfq.filled", "filled_rfq"),
        ],
    },
    "b": {"rfqs/": set(), "trades/": set(), "events/": []},
    "lp": {
        "rfqs/": {"rfq", "filled_rfq"},
        "trades/": {"trade"},
        "events/": [
            ("rfq.created", "rfq"),
            ("quote.created", "quote"),
            ("rfq.created", "filled_rfq"),
            ("quote.created", "filled_quote"),
            ("trade.created", "trade"),
            ("quote.accepted", "filled_quote"),
            ("rfq.filled", "filled_rfq"),
        ],
    },
    "other_lp": {"rfqs/": set(), "trades/": set(), "events/": []},
}


@pytest.mark.parametrize("caller", CALLERS)
def test_lists_and_event_feed_show_each_caller_only_its_own(scene, caller):
    desk, expected = scene.desks[caller], LISTED[caller]
    for path in ("rfqs/", "trades/"):
        listed = {r["id"] for r in ok(desk.get(path))["results"]}
        assert listed == {getattr(scene, name) for name in expected[path]}, path
    feed = events(desk)
    got = [(e["type"], e["data"][e["type"].split(".")[0]]["id"]) for e in feed]
    assert got == [(type_, getattr(scene, name)) for type_, name in expected["events/"]]


def test_cancel_all_without_rfq_id_cancels_only_the_callers_own_quotes(scene):
    other_lp = scene.desks["other_lp"]
    assert ok(other_lp.post("quotes/cancel-all/")) == {"cancelled": []}
    assert Quote.objects.get(pk=scene.quote).state == Quote.State.ACTIVE
    assert ok(scene.desks["lp"].post("quotes/cancel-all/")) == {"cancelled": [scene.quote]}


# --- RFQs sent to all liquidity providers -------------------------------------------------------


def test_rfq_to_all_reaches_every_lp_firm_but_not_the_requesters_own_lp_desk(world, desk):
    a, b, lp, other_lp = world["a"], world["b"], world["lp"], world["other_lp"]
    both = FirmFactory(role=Firm.Role.BOTH)
    both_requester, both_lp = desk("requester", firm=both), desk("maker", firm=both)

    own = ok(both_requester.post("rfqs/", one_leg("1")), 201)
    assert own["counterparties"] == []
    for maker in (lp, other_lp):
        assert ok(maker.get(f"rfqs/{own['id']}/"))["id"] == own["id"]
        assert [r["id"] for r in ok(maker.get("rfqs/"))["results"]] == [own["id"]]
        assert [(e["type"], e["data"]["rfq"]["id"]) for e in events(maker)] == [
            ("rfq.created", own["id"])
        ]
    # The requester's own firm's LP desk: as if it did not exist.
    random_404 = refused(both_lp.get(f"rfqs/{uuid.uuid4()}/"), 404, "UNKNOWN_RFQ")
    own_404 = refused(both_lp.get(f"rfqs/{own['id']}/"), 404, "UNKNOWN_RFQ")
    assert without_request_id(own_404) == without_request_id(random_404)
    assert ok(both_lp.get("rfqs/"))["results"] == []
    refused(both_lp.post(f"rfqs/{own['id']}/quotes/", QUOTE_BODY), 404, "UNKNOWN_RFQ")
    assert events(both_lp) == []
    # Requesters of other firms never see it either.
    for requester in (a, b):
        refused(requester.get(f"rfqs/{own['id']}/"), 404, "UNKNOWN_RFQ")
        assert events(requester) == []

    # Another firm's RFQ to all does reach the "both" firm's LP desk, not its requester desk.
    theirs = ok(a.post("rfqs/", one_leg("1")), 201)
    assert ok(both_lp.get(f"rfqs/{theirs['id']}/"))["id"] == theirs["id"]
    ok(both_lp.post(f"rfqs/{theirs['id']}/quotes/", QUOTE_BODY), 201)
    refused(both_requester.get(f"rfqs/{theirs['id']}/"), 404, "UNKNOWN_RFQ")
    assert [e["data"]["rfq"]["id"] for e in events(both_requester)] == [own["id"]]


def test_rfq_to_all_does_not_reach_a_suspended_lp_firm(world, desk):
    a = world["a"]
    suspended = desk("maker")
    suspended.firm.status = Firm.Status.SUSPENDED
    suspended.firm.save()
    ok(a.post("rfqs/", one_leg("1")), 201)
    assert not Event.objects.filter(firm=suspended.firm).exists()


# --- quotes are their maker's ------------------------------------------------------------------


def test_a_maker_sees_only_its_own_quotes_and_the_requester_sees_all(world):
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    rfq = ok(a.post("rfqs/", one_leg("1")), 201)
    mine = ok(lp.post(f"rfqs/{rfq['id']}/quotes/", {"bid_price": "99990"}), 201)
    theirs = ok(other_lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "100010"}), 201)

    assert [q["id"] for q in ok(lp.get(f"rfqs/{rfq['id']}/quotes/"))["results"]] == [mine["id"]]
    assert [q["id"] for q in ok(other_lp.get(f"rfqs/{rfq['id']}/quotes/"))["results"]] == [
        theirs["id"]
    ]
    assert {q["id"] for q in ok(a.get(f"rfqs/{rfq['id']}/quotes/"))["results"]} == {
        mine["id"],
        theirs["id"],
    }
    random_404 = without_request_id(
        refused(lp.get(f"quotes/{uuid.uuid4()}/"), 404, "UNKNOWN_QUOTE")
    )
    assert without_request_id(lp.get(f"quotes/{theirs['id']}/").json()) == random_404
    refused(lp.post(f"quotes/{theirs['id']}/replace/", QUOTE_BODY), 404, "UNKNOWN_QUOTE")
    refused(lp.post(f"quotes/{theirs['id']}/cancel/"), 404, "UNKNOWN_QUOTE")
    assert ok(lp.post("quotes/cancel-all/", {"rfq_id": rfq["id"]})) == {"cancelled": [mine["id"]]}
    assert Quote.objects.get(pk=theirs["id"]).state == Quote.State.ACTIVE

    quote_events = [e["data"]["quote"]["id"] for e in events(lp) if "quote" in e["data"]]
    assert set(quote_events) == {mine["id"]}
    quote_events = [e["data"]["quote"]["id"] for e in events(other_lp) if "quote" in e["data"]]
    assert quote_events == [theirs["id"]]
    assert {e["data"]["quote"]["id"] for e in events(a) if e["type"] == "quote.created"} == {
        mine["id"],
        theirs["id"],
    }


def test_the_losing_maker_learns_nothing_about_the_winner(world):
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    rfq = ok(a.post("rfqs/", one_leg("1")), 201)
    win = ok(lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "100000"}), 201)
    lose = ok(other_lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "100010"}), 201)
    trade = ok(a.post(f"rfqs/{rfq['id']}/accept/", {"quote_id": win["id"], "side": "buy"}), 201)

    assert ok(other_lp.get(f"quotes/{lose['id']}/"))["state"] == "traded_away"
    assert ok(other_lp.get("trades/"))["results"] == []
    refused(other_lp.get(f"trades/{trade['id']}/"), 404, "UNKNOWN_TRADE")
    seen = everything_seen(other_lp, rfq_ids=[rfq["id"]], quote_ids=[lose["id"]])
    for secret in (win["id"], trade["id"], lp.firm.lei, lp.firm.legal_name, "100000"):
        assert quoted(secret) not in seen, secret


# --- fields that belong to one side -------------------------------------------------------------


def test_client_ids_trader_ids_and_counterparties_reach_only_their_owner(world):
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    rfq = ok(
        a.post(
            "rfqs/",
            one_leg("1", counterparties=[lp.firm.lei, other_lp.firm.lei], client_rfq_id="A-rfq-1"),
        ),
        201,
    )
    quote = ok(
        lp.post(
            f"rfqs/{rfq['id']}/quotes/",
            {"bid_price": "99999", "ask_price": "100000", "client_quote_id": "LP-quote-1"},
        ),
        201,
    )

    # The requester's own view.
    mine = ok(a.get(f"rfqs/{rfq['id']}/"))
    assert mine["client_rfq_id"] == "A-rfq-1"
    assert mine["trader_id"] == a.participant.trader_id
    assert mine["counterparties"] == sorted(
        [
            {"lei": lp.firm.lei, "legal_name": lp.firm.legal_name},
            {"lei": other_lp.firm.lei, "legal_name": other_lp.firm.legal_name},
        ],
        key=lambda f: f["lei"],
    )
    assert ok(a.get("rfqs/"))["results"][0] == mine
    [created] = [e for e in events(a) if e["type"] == "rfq.created"]
    assert created["data"]["rfq"]["client_rfq_id"] == "A-rfq-1"
    assert created["data"]["rfq"]["trader_id"] == a.participant.trader_id
    assert created["data"]["rfq"]["counterparties"] == mine["counterparties"]

    # The maker's view of the RFQ: none of the requester's fields.
    for view in (
        ok(lp.get(f"rfqs/{rfq['id']}/")),
        ok(lp.get("rfqs/"))["results"][0],
        *[e["data"]["rfq"] for e in events(lp) if "rfq" in e["data"]],
    ):
        assert view["id"] == rfq["id"]
        assert {"client_rfq_id", "trader_id", "counterparties"}.isdisjoint(view), view

    # The quote: its client id and trader only to the maker, in the API and the events.
    theirs = ok(lp.get(f"quotes/{quote['id']}/"))
    assert theirs["client_quote_id"] == "LP-quote-1"
    assert theirs["trader_id"] == lp.participant.trader_id
    [created] = [e for e in events(lp) if e["type"] == "quote.created"]
    assert created["data"]["quote"] == {**theirs, "state": "active"}
    for view in (
        ok(a.get(f"quotes/{quote['id']}/")),
        ok(a.get(f"rfqs/{rfq['id']}/quotes/"))["results"][0],
        *[e["data"]["quote"] for e in events(a) if "quote" in e["data"]],
    ):
        assert view["id"] == quote["id"]
        assert view["maker"] == {"lei": lp.firm.lei, "legal_name": lp.firm.legal_name}
        assert {"client_quote_id", "trader_id"}.isdisjoint(view), view

    # After the trade each side sees its own client id and trader, never the other's.
    trade = ok(a.post(f"rfqs/{rfq['id']}/accept/", {"quote_id": quote["id"], "side": "sell"}), 201)
    as_requester = ok(a.get(f"trades/{trade['id']}/"))
    assert as_requester["client_rfq_id"] == "A-rfq-1"
    assert as_requester["trader_id"] == a.participant.trader_id
    assert "client_quote_id" not in as_requester
    as_maker = ok(lp.get(f"trades/{trade['id']}/"))
    assert as_maker["client_quote_id"] == "LP-quote-1"
    assert as_maker["trader_id"] == lp.participant.trader_id
    assert "client_rfq_id" not in as_maker

    # Nowhere in all either side can read does the other side's private value appear.
    ids = {"rfq_ids": [rfq["id"]], "quote_ids": [quote["id"]], "trade_ids": [trade["id"]]}
    maker_seen = everything_seen(lp, **ids)
    for secret in ("A-rfq-1", a.participant.trader_id, other_lp.firm.lei):
        assert quoted(secret) not in maker_seen, secret
    requester_seen = everything_seen(a, **ids)
    for secret in ("LP-quote-1", lp.participant.trader_id):
        assert quoted(secret) not in requester_seen, secret
    # The other invited maker never learns who else was asked.
    assert quoted(lp.firm.lei) not in everything_seen(other_lp, rfq_ids=[rfq["id"]])


def test_anonymous_rfq_hides_the_requester_from_makers_until_the_trade(world):
    a, lp = world["a"], world["lp"]
    a_firm = {"lei": a.firm.lei, "legal_name": a.firm.legal_name}
    lp_firm = {"lei": lp.firm.lei, "legal_name": lp.firm.legal_name}
    rfq = ok(a.post("rfqs/", one_leg("1", anonymous=True)), 201)
    assert rfq["anonymous"] is True
    assert rfq["requester"] == a_firm
    assert ok(a.get(f"rfqs/{rfq['id']}/"))["requester"] == a_firm
    assert [e["data"]["rfq"]["requester"] for e in events(a)] == [a_firm]

    assert ok(lp.get(f"rfqs/{rfq['id']}/"))["requester"] is None
    assert ok(lp.get("rfqs/"))["results"][0]["requester"] is None
    [created] = events(lp)
    assert created["type"] == "rfq.created"
    assert created["data"]["rfq"]["requester"] is None
    quote = ok(lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "100000"}), 201)
    pre_trade = everything_seen(lp, rfq_ids=[rfq["id"]], quote_ids=[quote["id"]])
    for secret in (a.firm.lei, a.firm.legal_name):
        assert quoted(secret) not in pre_trade, secret

    # Post-trade both firms are disclosed to both sides, in the API and in the events.
    trade = ok(a.post(f"rfqs/{rfq['id']}/accept/", {"quote_id": quote["id"], "side": "buy"}), 201)
    for desk, role, side in ((a, "requester", "buy"), (lp, "maker", "sell")):
        for view in (
            ok(desk.get(f"trades/{trade['id']}/")),
            ok(desk.get("trades/"))["results"][0],
            *[e["data"]["trade"] for e in events(desk) if e["type"] == "trade.created"],
        ):
            assert view["requester"] == a_firm
            assert view["maker"] == lp_firm
            assert view["role"] == role
            assert view["side"] == side
    # The RFQ itself stays anonymous to the maker.
    assert ok(lp.get(f"rfqs/{rfq['id']}/"))["requester"] is None
    [filled] = [e for e in events(lp) if e["type"] == "rfq.filled"]
    assert filled["data"]["rfq"]["requester"] is None


def test_a_named_rfq_shows_its_requester_to_makers(world):
    a, lp = world["a"], world["lp"]
    rfq = ok(a.post("rfqs/", one_leg("1", counterparties=[lp.firm.lei])), 201)
    firm = {"lei": a.firm.lei, "legal_name": a.firm.legal_name}
    assert ok(lp.get(f"rfqs/{rfq['id']}/"))["requester"] == firm
    assert events(lp)[0]["data"]["rfq"]["requester"] == firm


# --- the event feed of everybody else ------------------------------------------------------------


def test_no_event_of_a_named_rfq_reaches_an_uninvited_lp_or_another_requester(world):
    a, b, lp, other_lp = world["a"], world["b"], world["lp"], world["other_lp"]
    named = one_leg("1", counterparties=[lp.firm.lei])
    # Quote, replace, cancel, quote again, accept.
    filled = ok(a.post("rfqs/", named), 201)["id"]
    first = ok(lp.post(f"rfqs/{filled}/quotes/", {"bid_price": "99990"}), 201)["id"]
    second = ok(lp.post(f"quotes/{first}/replace/", {"bid_price": "99995"}), 201)["id"]
    ok(lp.post(f"quotes/{second}/cancel/"))
    third = ok(lp.post(f"rfqs/{filled}/quotes/", {"bid_price": "99996"}), 201)["id"]
    ok(a.post(f"rfqs/{filled}/accept/", {"quote_id": third, "side": "sell"}), 201)
    # Cancelled with a live quote; cancel-all.
    cancelled = ok(a.post("rfqs/", named), 201)["id"]
    ok(lp.post(f"rfqs/{cancelled}/quotes/", {"ask_price": "100000"}), 201)
    ok(a.post(f"rfqs/{cancelled}/cancel/"))
    swept = ok(a.post("rfqs/", {**named, "expires_in": 30}), 201)["id"]
    ok(lp.post(f"rfqs/{swept}/quotes/", {"ask_price": "100000"}), 201)
    ok(lp.post("quotes/cancel-all/"))
    ok(lp.post(f"rfqs/{swept}/quotes/", {"ask_price": "100001"}), 201)
    # Expired by the sweep.
    assert rfq_expire_due(now=timezone.now() + timedelta(seconds=31)) == (1, 1)

    assert events(other_lp) == []
    assert events(b) == []
    assert not Event.objects.filter(firm__in=[other_lp.firm, b.firm]).exists()
    # ...while both sides got the whole story.
    lp_types = [e["type"] for e in events(lp)]
    assert lp_types.count("rfq.created") == 3
    assert {"rfq.filled", "rfq.cancelled", "rfq.expired", "quote.expired", "trade.created"} <= set(
        lp_types
    )
    a_types = [e["type"] for e in events(a)]
    assert a_types.count("rfq.created") == 3
    assert {"rfq.filled", "rfq.cancelled", "rfq.expired", "trade.created"} <= set(a_types)
