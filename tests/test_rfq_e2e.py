"""The RFQ API end to end through the real nginx mTLS terminator, with real certificates held
the way traders hold them: a requester asks, a liquidity provider learns of it from its event
feed (long-poll), quotes, the requester accepts, and both see the trade."""

import threading
import time
from decimal import Decimal

import httpx
import pytest

from kernel.models import AuditRecord, Firm
from rfq.models import Instrument
from rfq.reference import INSTRUMENTS, reference_forget
from tests.factories import FirmFactory, ParticipantFactory
from tests.keys import ec_key, key_pem, make_csr
from tests.test_terminator import Holder, tls

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def desks(cas, issue, tmp_path):
    Instrument.objects.bulk_create(
        [
            Instrument(symbol="ETH-PERPETUAL", kind="perpetual", underlying="ETH",
                       tick_size=Decimal("0.05"), min_size=Decimal(1)),
            Instrument(symbol="BTC-PERPETUAL", kind="perpetual", underlying="BTC",
                       tick_size=Decimal("0.5"), min_size=Decimal("0.1")),
        ]
    )  # fmt: skip
    reference_forget(INSTRUMENTS)  # bulk_create sends no post_save; the servers keep them
    out = {}
    for name, firm_role, role in (
        ("alice", Firm.Role.CLIENT, "requester"),
        ("carol", Firm.Role.LIQUIDITY_PROVIDER, "liquidity_provider"),
        ("mallory", Firm.Role.LIQUIDITY_PROVIDER, "liquidity_provider"),
    ):
        key = ec_key()
        participant = ParticipantFactory(firm=FirmFactory(role=firm_role), role=role)
        certificate = issue(participant, make_csr(key))
        out[name] = Holder(tmp_path, name, certificate.pem, key_pem(key), certificate)
    return out


def client(terminator, holder: Holder) -> httpx.Client:
    return httpx.Client(
        base_url=terminator.api + "/api/v1/", verify=tls(terminator, holder), timeout=30
    )


def test_rfq_to_trade_through_nginx(terminator, desks):
    alice, carol, mallory = (client(terminator, desks[n]) for n in ("alice", "carol", "mallory"))
    carol_lei = desks["carol"].row.participant.firm.lei
    with alice, carol, mallory:
        since = carol.get("events/").json()["next_since"]
        mallory_since = mallory.get("events/").json()["next_since"]
        polled: dict = {}

        def poll():
            started = time.monotonic()
            polled["response"] = carol.get("events/", params={"since": since, "wait": 10})
            polled["returned"] = time.monotonic()
            polled["started"] = started

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.3)  # the poll is waiting in the app
        asked = time.monotonic()
        created = alice.post(
            "rfqs/",
            json={
                "legs": [
                    {"instrument": "BTC-PERPETUAL", "side": "buy"},
                    {"instrument": "ETH-PERPETUAL", "side": "sell", "ratio": "10"},
                ],
                "quantity": "2",
                "counterparties": [carol_lei],
                "client_rfq_id": "e2e-1",
            },
        )
        assert created.status_code == 201, created.text
        rfq = created.json()
        assert created.headers["x-request-id"]
        poller.join(15)
        events = polled["response"].json()["events"]
        assert [(e["type"], e["data"]["rfq"]["id"]) for e in events] == [("rfq.created", rfq["id"])]
        assert "client_rfq_id" not in events[0]["data"]["rfq"]
        # The long-poll was woken by the commit, not by its 10 s timeout.
        assert polled["returned"] - asked < 2.0

        quoted = carol.post(
            f"rfqs/{rfq['id']}/quotes/",
            json={
                "bid_price": "60000",
                "ask_price": "60010",
                "legs": [
                    {"leg_no": 1, "bid_price": "100000", "ask_price": "100010"},
                    {"leg_no": 2, "bid_price": "4000", "ask_price": "4000"},
                ],
                "client_quote_id": "cq-1",
            },
        )
        assert quoted.status_code == 201, quoted.text
        quote = quoted.json()

        feed = alice.get("events/", params={"since": 0, "wait": 5}).json()["events"]
        assert [e["type"] for e in feed] == ["rfq.created", "quote.created"]
        assert feed[1]["data"]["quote"]["id"] == quote["id"]
        assert "client_quote_id" not in feed[1]["data"]["quote"]

        accepted = alice.post(
            f"rfqs/{rfq['id']}/accept/",
            json={"quote_id": quote["id"], "side": "buy", "limit_price": "60010"},
        )
        assert accepted.status_code == 201, accepted.text
        trade = accepted.json()
        assert (trade["side"], trade["price"], trade["quantity"]) == ("buy", "60010", "2")
        assert [(leg["side"], leg["quantity"], leg["price"]) for leg in trade["legs"]] == [
            ("buy", "2", "100010"),
            ("sell", "20", "4000"),
        ]

        again = alice.post(
            f"rfqs/{rfq['id']}/accept/", json={"quote_id": quote["id"], "side": "buy"}
        )
        assert again.status_code == 409
        assert again.json()["code"] == "RFQ_NOT_OPEN"

        (mine,) = alice.get("trades/").json()["results"]
        (theirs,) = carol.get("trades/").json()["results"]
        assert mine["id"] == theirs["id"] == trade["id"]
        assert theirs["side"] == "sell"
        assert theirs["client_quote_id"] == "cq-1"
        assert mine["client_rfq_id"] == "e2e-1"
        maker_feed = carol.get("events/", params={"since": since}).json()["events"]
        assert [e["type"] for e in maker_feed] == [
            "rfq.created", "quote.created", "trade.created", "quote.accepted", "rfq.filled",
        ]  # fmt: skip

        # An LP the RFQ was not sent to saw nothing, and cannot reach it.
        assert mallory.get("events/", params={"since": mallory_since}).json()["events"] == []
        assert mallory.get(f"rfqs/{rfq['id']}/").status_code == 404
        assert mallory.get("trades/").json()["results"] == []


def test_the_api_contract_is_served(terminator, desks):
    with client(terminator, desks["alice"]) as alice:
        schema = alice.get("schema/", params={"format": "json"})
        assert schema.status_code == 200, schema.text
        assert schema.json()["components"]["securitySchemes"]["clientCertificate"] == {
            "type": "mutualTLS",
            "description": schema.json()["components"]["securitySchemes"]["clientCertificate"][
                "description"
            ],
        }
        docs = alice.get("docs/")
        assert docs.status_code == 200
        assert "swagger-ui" in docs.text
    # On the portal too, without a client certificate.
    with httpx.Client(verify=tls(terminator), timeout=10) as anonymous:
        portal = terminator.api.replace(str(terminator.api_port), str(terminator.portal_port))
        schema = anonymous.get(portal + "/developers/api/schema/", params={"format": "json"})
        assert schema.status_code == 200, schema.text
        assert "/api/v1/rfqs/{rfq_id}/accept/" in schema.json()["paths"]


def test_event_stream_through_nginx_delivers_and_ends_on_revocation(terminator, desks):
    """Server-Sent Events pass nginx unbuffered; a certificate revoked mid-stream ends it."""
    from kernel.audit import Actor
    from pki.revocation import certificate_revoke

    alice, carol = client(terminator, desks["alice"]), client(terminator, desks["carol"])
    frames: list[str] = []
    opened = threading.Event()

    def listen():
        with carol.stream("GET", "events/stream/", headers={"Accept": "text/event-stream"}) as r:
            frames.append(f"status {r.status_code} {r.headers['content-type']}")
            opened.set()
            for line in r.iter_lines():
                frames.append(line)

    with alice, carol:
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(10), frames
        created = alice.post(
            "rfqs/",
            json={"legs": [{"instrument": "BTC-PERPETUAL", "side": "sell"}], "quantity": "1"},
        )
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(f.startswith("data: ") for f in frames):
            time.sleep(0.02)
        assert frames[0] == "status 200 text/event-stream", frames
        assert "event: rfq.created" in frames, frames
        data = next(f for f in frames if f.startswith("data: "))
        assert created.json()["id"] in data

        certificate_revoke(
            certificate=desks["carol"].row, reason="keyCompromise", actor=Actor.system("test")
        )
        listener.join(15)
        assert not listener.is_alive(), "the stream did not end after the revocation"
        assert "event: error" in frames, frames
        assert any('"CERTIFICATE_REVOKED"' in f for f in frames), frames
        # Refused by the API's one re-check, so audited like any refusal.
        refusal = AuditRecord.objects.filter(event="api.authentication_refused").latest("id")
        assert refusal.details["code"] == "CERTIFICATE_REVOKED"
        assert refusal.details["path"] == "/api/v1/events/stream/"
        assert refusal.actor_id == desks["carol"].row.serial
    # nginx sent the feed to its own pool (threads), the rest to the API's sync workers. (The
    # access log line of a stream is written when it ends, just after the client saw it end.)
    deadline = time.monotonic() + 5
    while "GET /api/v1/events/stream/" not in terminator.events.output():
        assert time.monotonic() < deadline, terminator.events.output()[-2000:]
        time.sleep(0.05)
    assert "GET /api/v1/events/stream/" not in terminator.app.output()
    assert "POST /api/v1/rfqs/" in terminator.app.output()
