"""Races on one RFQ, through a real multi-process, multi-threaded gunicorn (as deployed) and
in-process: concurrent accepts, idempotent creates, cancel against accept, cancel-all against
accept. Whatever the interleaving: no 5xx, no deadlock, exactly one winner, and the rows agree
with what the callers were told.

Every racer is released by one ``threading.Barrier``; HTTP racers warm their keep-alive
connection first, so the requests leave together. PostgreSQL only: the server processes must
see the test's committed rows, and row locks are what is under test.
"""

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import quote as url_quote

import httpx
import pytest
from django.conf import settings
from django.db import connection

from kernel.audit import AuditRecord
from kernel.errors import Conflict
from kernel.models import Participant
from rfq import services
from rfq.models import Event, Quote, Rfq, RfqLeg, Trade
from tests.servers import NEEDS_POSTGRES, Gunicorn

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason=NEEDS_POSTGRES),
    pytest.mark.django_db(transaction=True),
]

ACCEPTS = 50
IN_PROCESS_ACCEPTS = 32  # one database connection each
TIMEOUT = 30  # seconds; a racer still waiting after this is a deadlock or a lost wake-up


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """gunicorn as deployed (gthread: processes x threads, so requests really overlap), with
    the per-certificate rate limits raised far above what the races send."""
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)
    app = Gunicorn(
        workers=4,
        GUNICORN_CMD_ARGS="--worker-class gthread --threads 4 --keep-alive 30 --graceful-timeout 5",
        KEYLINE_API_RATE_SCALE="1000",
        KEYLINE_CA_PASSPHRASE="",
        KEYLINE_CA_PASSPHRASE_FILE="",
    )
    yield app
    app.stop()


# --- helpers -----------------------------------------------------------------------------------


def _caller(desk) -> services.Caller:
    return services.Caller(desk.participant, desk.certificate.serial)


def _rfq(desk, quantity: str = "1", **kwargs) -> Rfq:
    rfq, _ = services.rfq_create(
        caller=_caller(desk),
        legs=[services.LegIn("BTC-PERPETUAL", "buy")],
        quantity=Decimal(quantity),
        **kwargs,
    )
    return rfq


def _quote(desk, rfq: Rfq, bid: str = "99999.5", ask: str = "100000.5") -> Quote:
    quote, _ = services.quote_create(
        caller=_caller(desk),
        rfq_id=rfq.pk,
        data=services.QuoteIn(bid_price=Decimal(bid), ask_price=Decimal(ask)),
    )
    return quote


class Racer:
    """One HTTP caller with its own keep-alive connection, as one desk."""

    def __init__(self, server, desk, path: str, body: dict | None = None) -> None:
        self.path, self.body = path, body or {}
        self.client = httpx.Client(
            base_url=f"{server.url}/api/v1/",
            timeout=TIMEOUT,
            headers={
                settings.KEYLINE_HEADER_SECRET: settings.KEYLINE_TERMINATOR_SECRET,
                settings.KEYLINE_HEADER_VERIFY: "SUCCESS",
                settings.KEYLINE_HEADER_CERT: url_quote(desk.certificate.pem),
            },
        )

    def warm_up(self) -> None:
        # Opens the connection and caches the certificate's trust decision, so the raced
        # request has nothing left to do before it reaches the database.
        self.client.get("whoami/").raise_for_status()

    def go(self) -> httpx.Response:
        return self.client.post(self.path, json=self.body)


def race(racers: list[Racer]) -> list[httpx.Response]:
    """Send every racer's request at the same moment; the responses, in racer order."""
    barrier = threading.Barrier(len(racers))

    def run(racer: Racer) -> httpx.Response:
        try:
            racer.warm_up()
            barrier.wait(timeout=TIMEOUT)
            return racer.go()
        finally:
            racer.client.close()

    with ThreadPoolExecutor(max_workers=len(racers)) as pool:
        futures = [pool.submit(run, racer) for racer in racers]
        return [future.result(timeout=2 * TIMEOUT) for future in futures]


def race_in_process(calls: list[Callable[[], object]]) -> list[object]:
    """Run each call in its own thread (its own database connection), all at once; each
    result is the call's return value or the exception it raised."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        try:
            barrier.wait(timeout=TIMEOUT)
            return call()
        except Exception as exc:  # reported to the test as a result
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [future.result(timeout=2 * TIMEOUT) for future in futures]


def _statuses(responses: list[httpx.Response]) -> Counter:
    return Counter(r.status_code for r in responses)


def _codes(responses: list[httpx.Response], status: int) -> Counter:
    return Counter(r.json()["code"] for r in responses if r.status_code == status)


def _show(responses: list[httpx.Response]) -> str:
    """For assertion messages: every distinct answer, once."""
    return "\n".join(sorted({f"{r.status_code} {r.text[:300]}" for r in responses}))


def _assert_filled_once(rfq: Rfq, trade: Trade, losers: int) -> None:
    rfq.refresh_from_db()
    assert rfq.state == Rfq.State.FILLED
    assert Trade.objects.filter(rfq=rfq).count() == 1
    states = Counter(Quote.objects.filter(rfq=rfq).values_list("state", flat=True))
    assert states == {Quote.State.ACCEPTED: 1, Quote.State.TRADED_AWAY: losers}
    assert Quote.objects.get(rfq=rfq, state=Quote.State.ACCEPTED).pk == trade.quote_id
    # One execution reported once to each side, one fill.
    assert Event.objects.filter(type="trade.created").count() == 2
    assert AuditRecord.objects.filter(event="trade.executed").count() == 1


# --- accept against accept ---------------------------------------------------------------------


def test_fifty_concurrent_accepts_trade_once(server, desk, instruments):
    requester = desk("requester")
    makers = [desk("maker") for _ in range(5)]
    rfq = _rfq(requester)
    quotes = [_quote(maker, rfq) for maker in makers]

    responses = race(
        [
            Racer(
                server,
                requester,
                f"rfqs/{rfq.pk}/accept/",
                {"quote_id": str(quotes[n % len(quotes)].pk), "side": ("buy", "sell")[n % 2]},
            )
            for n in range(ACCEPTS)
        ]
    )

    assert _statuses(responses) == {201: 1, 409: ACCEPTS - 1}, _show(responses)
    assert set(_codes(responses, 409)) <= {"RFQ_NOT_OPEN", "QUOTE_NOT_ACTIVE"}, _show(responses)
    n, won = next((n, r.json()) for n, r in enumerate(responses) if r.status_code == 201)
    trade = Trade.objects.get(rfq=rfq)
    assert won["id"] == str(trade.pk)
    assert won["quote_id"] == str(trade.quote_id) == str(quotes[n % len(quotes)].pk)
    assert won["side"] == trade.side == ("buy", "sell")[n % 2]
    assert trade.price == (Decimal("100000.5") if trade.side == "buy" else Decimal("99999.5"))
    _assert_filled_once(rfq, trade, losers=len(quotes) - 1)


def test_concurrent_accepts_in_process_trade_once(desk, instruments):
    """The same race on the service itself: threads, each on its own connection."""
    requester = desk("requester")
    makers = [desk("maker") for _ in range(5)]
    rfq = _rfq(requester)
    quotes = [_quote(maker, rfq) for maker in makers]

    def accept(n: int):
        def call():
            participant = Participant.objects.select_related("firm").get(
                pk=requester.participant.pk
            )
            caller = services.Caller(participant, requester.certificate.serial)
            return services.rfq_accept(
                caller=caller,
                rfq_id=rfq.pk,
                quote_id=quotes[n % len(quotes)].pk,
                side=("buy", "sell")[n % 2],
            )

        return call

    results = race_in_process([accept(n) for n in range(IN_PROCESS_ACCEPTS)])

    trades = [r for r in results if isinstance(r, Trade)]
    refused = [r for r in results if isinstance(r, Conflict)]
    others = [r for r in results if not isinstance(r, Trade | Conflict)]
    assert not others, others
    assert len(trades) == 1
    assert len(refused) == IN_PROCESS_ACCEPTS - 1
    assert {e.code for e in refused} <= {"RFQ_NOT_OPEN", "QUOTE_NOT_ACTIVE"}
    _assert_filled_once(rfq, trades[0], losers=len(quotes) - 1)


# --- idempotent create -------------------------------------------------------------------------


def test_concurrent_replays_of_one_client_rfq_id_create_one_rfq(server, desk, instruments):
    requester = desk("requester")
    body = {
        "legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}],
        "quantity": "3",
        "client_rfq_id": "race-same-body",
    }

    responses = race([Racer(server, requester, "rfqs/", body) for _ in range(20)])

    assert _statuses(responses) == {201: 1, 200: 19}, _show(responses)
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    rfq = Rfq.objects.get(firm=requester.firm, client_rfq_id="race-same-body")
    assert ids == {str(rfq.pk)}
    assert Rfq.objects.count() == 1
    assert RfqLeg.objects.filter(rfq=rfq).count() == 1
    assert all(r.json()["client_rfq_id"] == "race-same-body" for r in responses)
    # The replays changed nothing: one audit record, one event for the requester's desk.
    assert AuditRecord.objects.filter(event="rfq.created").count() == 1
    assert Event.objects.filter(type="rfq.created", firm=requester.firm).count() == 1


def test_concurrent_different_bodies_under_one_client_rfq_id(server, desk, instruments):
    requester = desk("requester")
    bodies = [
        {
            "legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}],
            "quantity": str(n + 1),
            "client_rfq_id": "race-other-body",
        }
        for n in range(20)
    ]

    responses = race([Racer(server, requester, "rfqs/", body) for body in bodies])

    assert _statuses(responses) == {201: 1, 409: 19}, _show(responses)
    assert _codes(responses, 409) == {"DUPLICATE_CLIENT_ID": 19}
    n, won = next((n, r.json()) for n, r in enumerate(responses) if r.status_code == 201)
    rfq = Rfq.objects.get()
    assert won["id"] == str(rfq.pk)
    assert rfq.quantity == Decimal(bodies[n]["quantity"])
    assert {r.json()["details"]["id"] for r in responses if r.status_code == 409} == {won["id"]}
    assert AuditRecord.objects.filter(event="rfq.created").count() == 1


# --- cancel against accept ---------------------------------------------------------------------


def test_cancel_and_accept_race_one_wins(server, desk, instruments):
    requester, maker = desk("requester"), desk("maker")
    rounds = 8
    rfqs = [_rfq(requester) for _ in range(rounds)]
    quotes = [_quote(maker, rfq) for rfq in rfqs]
    racers = []
    for rfq, quote in zip(rfqs, quotes, strict=True):
        racers.append(Racer(server, requester, f"rfqs/{rfq.pk}/cancel/"))
        racers.append(
            Racer(
                server,
                requester,
                f"rfqs/{rfq.pk}/accept/",
                {"quote_id": str(quote.pk), "side": "buy"},
            )
        )

    responses = race(racers)

    assert set(_statuses(responses)) <= {200, 201, 409}, _show(responses)
    for n, (rfq, quote) in enumerate(zip(rfqs, quotes, strict=True)):
        cancel, accept = responses[2 * n], responses[2 * n + 1]
        outcome = (cancel.status_code, accept.status_code)
        assert outcome in {(200, 409), (409, 201)}, _show([cancel, accept])
        loser = cancel if cancel.status_code == 409 else accept
        assert loser.json()["code"] == "RFQ_NOT_OPEN", loser.text
        rfq.refresh_from_db()
        quote.refresh_from_db()
        if outcome == (200, 409):
            assert cancel.json()["state"] == "cancelled"
            assert rfq.state == Rfq.State.CANCELLED
            assert quote.state == Quote.State.CANCELLED
            assert not Trade.objects.filter(rfq=rfq).exists()
        else:
            assert rfq.state == Rfq.State.FILLED
            assert quote.state == Quote.State.ACCEPTED
            assert str(Trade.objects.get(rfq=rfq).pk) == accept.json()["id"]


# --- cancel-all against accept -----------------------------------------------------------------


def test_cancel_all_and_accept_race_stay_consistent(server, desk, instruments):
    requester, maker, other_maker = desk("requester"), desk("maker"), desk("maker")
    rfqs = [_rfq(requester) for _ in range(6)]
    quotes = [_quote(maker, rfq) for rfq in rfqs]
    others = [_quote(other_maker, rfq, bid="99999", ask="100001") for rfq in rfqs]
    racers = [
        Racer(server, maker, "quotes/cancel-all/"),
        Racer(server, maker, "quotes/cancel-all/", {"rfq_id": str(rfqs[0].pk)}),
    ] + [
        Racer(
            server, requester, f"rfqs/{rfq.pk}/accept/", {"quote_id": str(quote.pk), "side": "buy"}
        )
        for rfq, quote in zip(rfqs, quotes, strict=True)
    ]

    responses = race(racers)

    cancel_alls, accepts = responses[:2], responses[2:]
    assert _statuses(cancel_alls) == {200: 2}, _show(cancel_alls)
    cancelled = [qid for r in cancel_alls for qid in r.json()["cancelled"]]
    assert len(cancelled) == len(set(cancelled)), "a quote was cancelled twice"
    assert set(_statuses(accepts)) <= {201, 409}, _show(accepts)
    for rfq, quote, other, accept in zip(rfqs, quotes, others, accepts, strict=True):
        rfq.refresh_from_db()
        quote.refresh_from_db()
        other.refresh_from_db()
        if accept.status_code == 201:
            trade = Trade.objects.get(rfq=rfq)
            assert accept.json()["id"] == str(trade.pk)
            assert trade.quote_id == quote.pk
            assert rfq.state == Rfq.State.FILLED
            assert quote.state == Quote.State.ACCEPTED
            assert other.state == Quote.State.TRADED_AWAY
            assert str(quote.pk) not in cancelled
        else:
            assert accept.json()["code"] == "QUOTE_NOT_ACTIVE", accept.text
            assert not Trade.objects.filter(rfq=rfq).exists()
            assert rfq.state == Rfq.State.OPEN
            assert (quote.state, quote.state_reason) == (Quote.State.CANCELLED, "cancel_all")
            assert other.state == Quote.State.ACTIVE
            assert str(quote.pk) in cancelled
    swept = Quote.objects.filter(state_reason="cancel_all").values_list("pk", flat=True)
    assert set(cancelled) == {str(pk) for pk in swept}


def test_concurrent_replays_of_one_replace_return_the_replacement(desk, instruments):
    """A client that times out and retries a replace while the first attempt still holds the
    RFQ's lock gets the replacement that attempt made, not "the quote is replaced"."""
    requester, maker = desk("requester"), desk("maker")
    rfq = _rfq(requester)
    old = _quote(maker, rfq)
    data = services.QuoteIn(bid_price=Decimal("99998"), client_quote_id="retry-me")

    def replace():
        participant = Participant.objects.select_related("firm").get(pk=maker.participant.pk)
        caller = services.Caller(participant, maker.certificate.serial)
        return services.quote_replace(caller=caller, quote_id=old.pk, data=data)

    results = race_in_process([replace for _ in range(6)])

    assert all(isinstance(r, tuple) for r in results), results
    assert len({quote.pk for quote, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * 5 + [True]
