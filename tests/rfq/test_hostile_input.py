"""Hostile input on the REST API: a 400 with a machine code (never a 500), and nothing written.

- JSON nested deeper than the parser's bound is ``JSON_TOO_DEEP`` on every route that takes a
  body (the routes are read from the URLconf, so a new endpoint is covered without a new test);
- decimals follow one grammar, ``-?[0-9]+(\\.[0-9]+)?`` in a JSON string;
- booleans are JSON booleans;
- an unknown path under ``/api/`` is the API's JSON 404, the portal's stays HTML.
"""

import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import URLResolver, get_resolver
from rest_framework import serializers
from rest_framework.views import APIView

from kernel.audit import AuditRecord
from kernel.parsers import MAX_JSON_DEPTH, json_depth_exceeds
from rfq import serializers as s
from rfq.models import Event, Quote, QuoteLeg, Rfq, RfqCounterparty, RfqLeg, Trade, TradeLeg
from tests.conftest import refused
from tests.rfq.conftest import API, Desk, one_leg

pytestmark = pytest.mark.django_db

GRAMMAR = str(s.DecimalString.default_error_messages["grammar"])
NOT_STRING = str(s.DecimalString.default_error_messages["not_string"])
NOT_BOOLEAN = str(s.JsonBoolean.default_error_messages["not_boolean"])


def snapshot() -> dict:
    """Every row count the API can change, and the state of every RFQ and quote."""
    models = (Rfq, RfqLeg, RfqCounterparty, Quote, QuoteLeg, Trade, TradeLeg, Event, AuditRecord)
    return {
        **{m.__name__: m.objects.count() for m in models},
        "rfqs": sorted(Rfq.objects.values_list("id", "state")),
        "quotes": sorted(Quote.objects.values_list("id", "state")),
    }


def send(desk: Desk, method: str, path: str, body: str | bytes, content_type: str = ""):
    """A raw body, exactly as given, with the desk's certificate."""
    return desk.client.generic(
        method, path, body, content_type=content_type or "application/json", **desk.headers
    )


@pytest.fixture
def market(world) -> dict:
    """``world`` plus an open RFQ of requester A with an active two-way quote of the LP."""
    a, lp = world["a"], world["lp"]
    rfq = a.post("rfqs/", one_leg("1", counterparties=[lp.firm.lei])).json()
    quote = lp.post(
        f"rfqs/{rfq['id']}/quotes/", {"bid_price": "99999.5", "ask_price": "100000.5"}
    ).json()
    assert quote["state"] == "active", quote
    return {**world, "rfq_id": rfq["id"], "quote_id": quote["id"]}


# --- JSON nesting depth ------------------------------------------------------------------------


def _routes(patterns: list | None = None, prefix: str = "") -> Iterator[tuple[str, type | None]]:
    """Every route of the URLconf with its view class (DRF views carry it as ``cls``)."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), getattr(pattern.callback, "cls", None)


# Every (method, route) of a DRF view that handles a body, from the URLconf itself.
BODY_ROUTES = sorted(
    (method.upper(), "/" + route)
    for route, view in _routes()
    if view is not None and issubclass(view, APIView)
    for method in ("post", "put", "patch")
    if hasattr(view, method)
)


def _path(route: str, ids: dict) -> str:
    """The route with its parameters (``<str:rfq_id>``) set to real objects' ids."""
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: ids[m.group(1)], route)


def test_the_body_routes_are_found_in_the_urlconf():
    assert ("POST", "/api/v1/rfqs/") in BODY_ROUTES
    assert ("POST", "/api/v1/quotes/cancel-all/") in BODY_ROUTES
    assert ("POST", "/api/v1/rfqs/<str:rfq_id>/cancel/") in BODY_ROUTES
    assert len(BODY_ROUTES) >= 7


def _nested(depth: int) -> str:
    """An RFQ body whose quantity is a list nested so that the whole body is ``depth`` deep."""
    inner = depth - 1  # the body's own object is the first level
    return json.dumps({**one_leg("1"), "quantity": "QTY"}).replace(
        '"QTY"', "[" * inner + '"1"' + "]" * inner
    )


DEEP_BODIES = {
    "arrays": "[" * 2000,  # ~2 KB, unclosed: the decoder recursed before finding that out
    "closed_arrays": "[" * 1000 + "]" * 1000,
    "objects": '{"a":' * 500 + "1" + "}" * 500,
    "inside_a_valid_body": _nested(MAX_JSON_DEPTH + 1),
}


@pytest.mark.parametrize(("method", "route"), BODY_ROUTES, ids=[" ".join(r) for r in BODY_ROUTES])
@pytest.mark.parametrize("kind", list(DEEP_BODIES))
def test_deep_json_is_refused_on_every_body_route_and_changes_nothing(market, method, route, kind):
    path = _path(route, market)
    before = snapshot()
    for role in ("a", "lp"):
        error = refused(send(market[role], method, path, DEEP_BODIES[kind]), 400, "JSON_TOO_DEEP")
        assert error["details"] == {"max_depth": MAX_JSON_DEPTH}
    assert snapshot() == before


def test_the_depth_bound_is_exact(market):
    a = market["a"]
    before = snapshot()
    at_bound = refused(
        send(a, "POST", API + "rfqs/", _nested(MAX_JSON_DEPTH)), 400, "INVALID_REQUEST"
    )
    assert list(at_bound["details"]["fields"]) == ["quantity"]
    refused(send(a, "POST", API + "rfqs/", _nested(MAX_JSON_DEPTH + 1)), 400, "JSON_TOO_DEEP")
    assert snapshot() == before


def test_a_deep_body_in_another_charset_is_measured_after_decoding(market):
    before = snapshot()
    body = ("[" * 1000).encode("utf-16")
    response = send(market["a"], "POST", API + "rfqs/", body, "application/json; charset=utf-16")
    refused(response, 400, "JSON_TOO_DEEP")
    assert snapshot() == before


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe{", b'{"quantity": NaN}', b'{"quantity": Infinity}', b"{", b"[" * 32],
    ids=["not_utf8", "nan", "infinity", "truncated", "unclosed_within_bound"],
)
def test_a_body_that_is_not_json_is_malformed_request(market, body):
    before = snapshot()
    refused(send(market["a"], "POST", API + "rfqs/", body), 400, "MALFORMED_REQUEST")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("[]", 1),
        ('{"a": [{"b": [1, {"c": "d"}]}]}', 5),
        ('["[[[[[[[[[[", "{{{{{{{{{{{{"]', 1),  # brackets inside strings do not count
        ('["\\"[[[[[[[[[[[[", 1]', 1),  # nor after an escaped quote
        ('["\\\\", [[[]]]]', 4),  # an escaped backslash ends before the quote
        ("[[[", 3),  # left open
        ("[[[]", 3),
        ("]]][[", 2),
        ('"[[[[[[[[', 0),  # an unterminated string runs to the end
    ],
)
def test_the_depth_measure(text, depth):
    assert json_depth_exceeds(text, limit=depth - 1)
    assert not json_depth_exceeds(text, limit=depth)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 1_000_000,
        "[]" * 500_000,
        ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) * 15_000,
        '"\\"' * 333_333,
        '"' * 1_000_000,
        ('["' + "x" * 30 + '", ') * 30_000,
    ],
    ids=["opens", "pairs", "comb", "escapes", "quotes", "strings"],
)
def test_a_megabyte_body_is_measured_in_linear_time(text):
    started = time.perf_counter()
    json_depth_exceeds(text)
    # Typically well under 0.2 s; a quadratic scan would take minutes.
    assert time.perf_counter() - started < 2


# --- decimals ----------------------------------------------------------------------------------


def _input_serializers() -> list[type[serializers.Serializer]]:
    """The API's input serializers (``*In``), so a new one is checked too."""
    return [
        value
        for name, value in vars(s).items()
        if name.endswith("In")
        and isinstance(value, type)
        and issubclass(value, serializers.Serializer)
    ]


def _fields(serializer: serializers.Serializer) -> Iterator[serializers.Field]:
    """Every leaf field, through nested serializers and list children."""
    for field in serializer.fields.values():
        child = getattr(field, "child", None)
        for inner in (field, child) if child is not None else (field,):
            if isinstance(inner, serializers.Serializer):
                yield from _fields(inner)
            else:
                yield inner


def test_every_decimal_and_boolean_of_the_input_is_the_strict_field():
    found = set()
    for serializer in _input_serializers():
        for field in _fields(serializer()):
            if isinstance(field, serializers.DecimalField):
                assert isinstance(field, s.DecimalString), (serializer, field.field_name)
                found.add(s.DecimalString)
            if isinstance(field, serializers.BooleanField):
                assert isinstance(field, s.JsonBoolean), (serializer, field.field_name)
                found.add(s.JsonBoolean)
    assert found == {s.DecimalString, s.JsonBoolean}


BAD_DECIMAL_STRINGS = [
    "1_000",
    "\uff11",  # full-width 1
    "\u0661",  # Arabic-Indic 1
    " 1",
    "1 ",
    "1\n",
    "+1",
    "1.",
    ".5",
    "1e2",
    "1E2",
    "1e-2",
    "NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "",
    "-",
    "--1",
    "1.2.3",
    "1,5",
    "0x10",
]


@pytest.mark.parametrize("value", BAD_DECIMAL_STRINGS)
def test_a_decimal_outside_the_grammar_is_refused_with_the_field_named(market, value):
    before = snapshot()
    error = refused(market["a"].post("rfqs/", one_leg(value)), 400, "INVALID_REQUEST")
    assert error["details"]["fields"] == {"quantity": [GRAMMAR]}
    assert snapshot() == before


@pytest.mark.parametrize("value", [1, 1.5, 100.0, -1, True], ids=repr)
def test_a_decimal_as_a_json_number_is_refused(market, value):
    before = snapshot()
    error = refused(market["a"].post("rfqs/", one_leg(value)), 400, "INVALID_REQUEST")
    assert error["details"]["fields"] == {"quantity": [NOT_STRING]}
    assert snapshot() == before


@pytest.mark.parametrize("literal", ["1e2", "1E+2", "1e999", "-0.0"])
def test_a_decimal_as_a_json_number_literal_is_refused(market, literal):
    """As written on the wire: 1e2 is not read as 100, 1e999 not as infinity."""
    before = snapshot()
    body = json.dumps(one_leg("QTY")).replace('"QTY"', literal)
    error = refused(send(market["a"], "POST", API + "rfqs/", body), 400, "INVALID_REQUEST")
    assert error["details"]["fields"] == {"quantity": [NOT_STRING]}
    assert snapshot() == before


# Every decimal position of every body: (desk, path, body with "V" where the decimal goes, the
# field's place in details.fields).
DECIMAL_POSITIONS = {
    "rfq_quantity": ("a", "rfqs/", one_leg("V"), {"quantity": [GRAMMAR]}),
    "leg_ratio": (
        "a",
        "rfqs/",
        {"legs": [{"instrument": "BTC-PERPETUAL", "side": "buy", "ratio": "V"}], "quantity": "1"},
        {"legs": {"0": {"ratio": [GRAMMAR]}}},
    ),
    **{
        f"quote_{name}": (
            "lp",
            "rfqs/{rfq_id}/quotes/",
            {"bid_price": "99999", name: "V"} if name != "bid_price" else {name: "V"},
            {name: [GRAMMAR]},
        )
        for name in ("bid_price", "bid_size", "ask_price", "ask_size")
    },
    **{
        f"quote_leg_{name}": (
            "lp",
            "rfqs/{rfq_id}/quotes/",
            {"bid_price": "99999", "legs": [{"leg_no": 1, name: "V"}]},
            {"legs": {"0": {name: [GRAMMAR]}}},
        )
        for name in ("bid_price", "ask_price")
    },
    "replace_bid_price": (
        "lp",
        "quotes/{quote_id}/replace/",
        {"bid_price": "V"},
        {"bid_price": [GRAMMAR]},
    ),
    **{
        f"accept_{name}": (
            "a",
            "rfqs/{rfq_id}/accept/",
            {"quote_id": "{quote_id}", "side": "buy", name: "V"},
            {name: [GRAMMAR]},
        )
        for name in ("quantity", "limit_price")
    },
}


@pytest.mark.parametrize("position", list(DECIMAL_POSITIONS))
@pytest.mark.parametrize("value", ["1e2", "1_000", "\uff11", " 1", "+1"])
def test_every_decimal_of_the_api_follows_the_grammar(market, position, value):
    role, route, body, fields = DECIMAL_POSITIONS[position]
    text = (
        json.dumps(body).replace('"V"', json.dumps(value)).replace("{quote_id}", market["quote_id"])
    )
    before = snapshot()
    response = send(market[role], "POST", API + route.format(**market), text)
    assert refused(response, 400, "INVALID_REQUEST")["details"]["fields"] == fields
    assert snapshot() == before


@pytest.mark.parametrize("value", ["1", "1.5", "0.1", "001.50", "2.00000000"])
def test_decimals_inside_the_grammar_are_read_exactly(world, value):
    response = world["a"].post("rfqs/", one_leg(value))
    assert response.status_code == 201, response.content
    rfq = Rfq.objects.get(pk=response.json()["id"])
    assert rfq.quantity == Decimal(response.json()["quantity"]) == Decimal(value)


# --- booleans ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "true", "True", "on", 1, "1", 0, "0", "false", ""])
def test_a_boolean_that_is_not_a_json_boolean_is_refused(market, value):
    before = snapshot()
    body = one_leg("1", anonymous=value)
    error = refused(market["a"].post("rfqs/", body), 400, "INVALID_REQUEST")
    assert error["details"]["fields"] == {"anonymous": [NOT_BOOLEAN]}
    assert snapshot() == before


@pytest.mark.parametrize("value", [True, False])
def test_a_json_boolean_is_taken(world, value):
    response = world["a"].post("rfqs/", one_leg("1", anonymous=value))
    assert response.status_code == 201, response.content
    assert response.json()["anonymous"] is value


# --- unknown paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/nope/", "/api/v2/", "/api/", "/api/v1/rfqs", "/api/v1/rfqs/x/y/z/"]
)
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_an_unknown_api_path_is_the_apis_json_404(market, path, method):
    before = snapshot()
    for client, headers in ((Client(), {}), (market["a"].client, market["a"].headers)):
        response = client.generic(
            method, path, "[" * 2000, content_type="application/json", **headers
        )
        error = refused(response, 404, "NOT_FOUND")
        assert error["details"] == {}
    assert snapshot() == before


def test_an_unknown_portal_path_keeps_the_html_404(db):
    response = Client().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
