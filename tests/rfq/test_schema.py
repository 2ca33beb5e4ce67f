"""Schemathesis against the published OpenAPI contract, in-process (WSGI), as both desks.

Every operation of ``/api/v1/schema/`` is called with generated inputs (schema examples,
boundary "coverage" cases and Hypothesis fuzzing, derandomised), carrying the terminator
headers of a real participant certificate: once as a requester desk, once as a liquidity
provider. Path and body ids are mapped, deterministically per case, onto seeded objects (open,
filled and cancelled RFQs, active, replaced and accepted quotes, a trade) so the calls reach
real rows and not only 404s. Each call runs in a savepoint rolled back afterwards, so every
example sees the same seeded world whatever ran before it.

Checks: no 5xx, every status code documented, the content type and the body match the schema.
"""

import json
import zlib
from datetime import timedelta
from decimal import Decimal
from urllib.parse import quote

import hypothesis
import pytest
import schemathesis
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from keyline.wsgi import application
from rfq import services
from rfq.models import Quote, Rfq
from rfq.throttling import CertificateRateThrottle
from tests.rfq.conftest import one_leg

pytestmark = pytest.mark.django_db

# Up to this many fuzzed cases per operation and desk, on top of the schema's examples and the
# boundary cases of the coverage phase.
MAX_EXAMPLES = 30
SEED = 20260101


def _wsgi_in_test_transaction(environ, start_response):
    """``keyline.wsgi.application`` without Django's per-request connection housekeeping: the
    request must run on the test's connection, inside its transaction (what Django's own test
    client does). The body is read before the signals are reconnected."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = application(environ, start_response)
        try:
            body = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return [body]


# Stand-ins for the seeded objects in request examples, swapped for the real ids per call.
SEEDED = {
    "rfq": "00000000-0000-4000-8000-000000000001",
    "quote": "00000000-0000-4000-8000-000000000002",
    "trade": "00000000-0000-4000-8000-000000000003",
}
# One valid request per operation that takes a body (the schema has no examples of its own),
# so the examples phase reaches the success paths too, not only the refusals.
BODY_EXAMPLES = {
    ("/api/v1/rfqs/", "post"): {
        "legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}],
        "quantity": "1",
        "client_rfq_id": "example-rfq",
    },
    ("/api/v1/rfqs/{rfq_id}/quotes/", "post"): {"bid_price": "99999.5", "ask_price": "100000.5"},
    ("/api/v1/quotes/{quote_id}/replace/", "post"): {"bid_price": "99998", "ask_price": "100002"},
    ("/api/v1/rfqs/{rfq_id}/accept/", "post"): {"quote_id": SEEDED["quote"], "side": "buy"},
    ("/api/v1/quotes/cancel-all/", "post"): {"rfq_id": SEEDED["rfq"]},
}


def _with_examples(raw: dict) -> dict:
    """The published schema plus request examples naming the seeded objects (test input only:
    the responses are checked against the schema as published)."""
    for path, operations in raw["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                kind = parameter["name"].removesuffix("_id")
                if parameter["in"] == "path" and kind in SEEDED:
                    parameter["example"] = SEEDED[kind]
            body = BODY_EXAMPLES.get((path, method))
            if body is not None:
                operation["requestBody"]["content"]["application/json"]["example"] = body
    return raw


def _load_schema():
    document = SchemaGenerator().get_schema(request=None, public=True)
    raw = _with_examples(json.loads(OpenApiJsonRenderer().render(document, renderer_context={})))
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
            },
            # Fuzzing learns nothing from earlier responses (their ids differ from run to
            # run), so a run is the same every time.
            "phases": {
                "fuzzing": {"error-feedback": {"enabled": False}},
                "stateful": {"enabled": False},
            },
        }
    )
    loaded = schemathesis.openapi.from_dict(raw, config=config)
    loaded.app = _wsgi_in_test_transaction
    return loaded


schema = _load_schema()


def _headers(desk) -> dict[str, str]:
    return {
        settings.KEYLINE_HEADER_SECRET: settings.KEYLINE_TERMINATOR_SECRET,
        settings.KEYLINE_HEADER_VERIFY: "SUCCESS",
        settings.KEYLINE_HEADER_CERT: quote(desk.certificate.pem),
    }


def _caller(desk) -> services.Caller:
    return services.Caller(desk.participant, desk.certificate.serial)


@pytest.fixture
def seeded(desk, instruments, monkeypatch, settings):
    """A requester and a liquidity provider with RFQs and quotes in every state."""
    # Generated calls come much faster than a desk's per-certificate limits; and a long-poll
    # on events/ must not hold the run.
    monkeypatch.setattr(
        CertificateRateThrottle,
        "THROTTLE_RATES",
        dict.fromkeys(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "100000/s"),
    )
    settings.KEYLINE_RFQ = {
        **settings.KEYLINE_RFQ,
        "EVENTS_MAX_WAIT": 0,
        "EVENTS_STREAM_SECONDS": 0,
    }

    requester, maker = desk("requester"), desk("maker")
    asks, makes = _caller(requester), _caller(maker)

    def rfq(**body) -> Rfq:
        legs = [services.LegIn(**leg) for leg in body.pop("legs")]
        created, _ = services.rfq_create(
            caller=asks, legs=legs, quantity=Decimal(body.pop("quantity")), **body
        )
        return created

    def quote_on(target: Rfq, **prices) -> Quote:
        legs = prices.pop("legs", None)
        data = services.QuoteIn(
            **{k: Decimal(v) if k.endswith(("_price", "_size")) else v for k, v in prices.items()},
            legs=None if legs is None else tuple(services.QuoteLegIn(**leg) for leg in legs),
        )
        made, _ = services.quote_create(caller=makes, rfq_id=target.pk, data=data)
        return made

    open_rfq = rfq(**one_leg("2", counterparties=[maker.firm.lei], client_rfq_id="seed-open"))
    replaced = quote_on(open_rfq, bid_price="99999.5", ask_price="100000.5")
    active, _ = services.quote_replace(
        caller=makes,
        quote_id=replaced.pk,
        data=services.QuoteIn(
            bid_price=Decimal("99999"), ask_price=Decimal("100001"), client_quote_id="seed-active"
        ),
    )
    spread = rfq(
        legs=[
            {"instrument": "BTC-100000-C", "side": "buy"},
            {"instrument": "BTC-90000-P", "side": "sell"},
        ],
        quantity="1",
        anonymous=True,
    )
    spread_quote = quote_on(
        spread,
        bid_price="0.01",
        ask_price="0.02",
        legs=[
            {"leg_no": 1, "bid_price": Decimal("0.05"), "ask_price": Decimal("0.06")},
            {"leg_no": 2, "bid_price": Decimal("0.04"), "ask_price": Decimal("0.04")},
        ],
    )
    filled = rfq(**one_leg("1", client_rfq_id="seed-filled"))
    accepted = quote_on(filled, ask_price="100000")
    trade = services.rfq_accept(caller=asks, rfq_id=filled.pk, quote_id=accepted.pk, side="buy")
    cancelled = rfq(**one_leg("1"))
    quote_on(cancelled, bid_price="100")
    services.rfq_cancel(caller=asks, rfq_id=cancelled.pk)
    expired = rfq(**one_leg("1"), expires_in=5)
    Rfq.objects.filter(pk=expired.pk).update(
        created_at=expired.created_at - timedelta(minutes=5),
        expires_at=expired.created_at - timedelta(seconds=1),
    )

    return {
        "requester": requester,
        "maker": maker,
        "rfq": [str(r.pk) for r in (open_rfq, spread, filled, cancelled, expired)],
        "quote": [str(q.pk) for q in (active, spread_quote, replaced, accepted)],
        "trade": [str(trade.pk)],
        "symbol": sorted(instruments),
        "lei": [maker.firm.lei],
    }


def _real(value, pool: list[str]):
    """The generated ``value`` or, chosen by its hash (so a replayed case maps the same way),
    one of the seeded ids: most calls hit a real object, some keep the generated one."""
    if not isinstance(value, str) or value in pool:
        return value  # already mapped: a case Hypothesis runs again must not move
    if value in SEEDED.values():
        return pool[0]
    slot = zlib.crc32(value.encode("utf-8", "surrogatepass")) % (len(pool) + 1)
    return pool[slot] if slot < len(pool) else value


def _aim(case, world) -> None:
    for name, kind in (("rfq_id", "rfq"), ("quote_id", "quote"), ("trade_id", "trade")):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = _real(case.path_parameters[name], world[kind])
    if isinstance(case.body, dict):
        for name, kind in (("quote_id", "quote"), ("rfq_id", "rfq")):
            if name in case.body:
                case.body[name] = _real(case.body[name], world[kind])
        legs = case.body.get("legs")
        for leg in legs if isinstance(legs, list) else []:
            if isinstance(leg, dict) and "instrument" in leg:
                leg["instrument"] = _real(leg["instrument"], world["symbol"])
        leis = case.body.get("counterparties")
        if isinstance(leis, list):
            case.body["counterparties"] = [_real(lei, world["lei"]) for lei in leis]


@pytest.mark.parametrize("role", ["requester", "maker"])
@schema.parametrize()
# The seeded world is set up once per operation and desk; each example runs in its own
# savepoint, rolled back, so it is never changed by an earlier one.
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, role, seeded):
    _aim(case, seeded)
    savepoint = transaction.atomic()
    # Marked like the test's own transaction, so the services' durable blocks nest in it.
    savepoint._from_testcase = True
    with savepoint:
        case.call_and_validate(headers=_headers(seeded[role]))
        transaction.set_rollback(True)
