"""The whole path in-process: create, quote, accept, and what each side then sees."""

import pytest

from rfq.models import Quote, Rfq, Trade
from tests.rfq.conftest import one_leg

pytestmark = pytest.mark.django_db


def test_create_quote_accept_trade(world):
    a, lp, other_lp = world["a"], world["lp"], world["other_lp"]
    response = a.post(
        "rfqs/", one_leg("2", counterparties=[lp.firm.lei, other_lp.firm.lei], client_rfq_id="r1")
    )
    assert response.status_code == 201, response.content
    rfq = response.json()
    assert rfq["state"] == "open"
    assert rfq["client_rfq_id"] == "r1"

    seen = lp.get(f"rfqs/{rfq['id']}/")
    assert seen.status_code == 200, seen.content
    assert "client_rfq_id" not in seen.json()

    q1 = lp.post(
        f"rfqs/{rfq['id']}/quotes/",
        {"bid_price": "99999.5", "ask_price": "100000.5", "client_quote_id": "q1"},
    )
    assert q1.status_code == 201, q1.content
    q2 = other_lp.post(f"rfqs/{rfq['id']}/quotes/", {"ask_price": "100001"})
    assert q2.status_code == 201, q2.content

    quotes = a.get(f"rfqs/{rfq['id']}/quotes/")
    assert quotes.status_code == 200, quotes.content
    assert len(quotes.json()["results"]) == 2

    accept = a.post(f"rfqs/{rfq['id']}/accept/", {"quote_id": q1.json()["id"], "side": "buy"})
    assert accept.status_code == 201, accept.content
    trade = accept.json()
    assert trade["price"] == "100000.5"
    assert trade["side"] == "buy"
    assert trade["quantity"] == "2"

    again = a.post(f"rfqs/{rfq['id']}/accept/", {"quote_id": q2.json()["id"], "side": "buy"})
    assert again.status_code == 409
    assert again.json()["code"] == "RFQ_NOT_OPEN"

    maker_trades = lp.get("trades/").json()["results"]
    assert [t["side"] for t in maker_trades] == ["sell"]
    assert other_lp.get(f"quotes/{q2.json()['id']}/").json()["state"] == "traded_away"
    assert Trade.objects.count() == 1
    assert Rfq.objects.get().state == "filled"
    assert Quote.objects.get(pk=q1.json()["id"]).state == "accepted"

    events = other_lp.get("events/", since=0).json()["events"]
    assert [e["type"] for e in events] == [
        "rfq.created",
        "quote.created",
        "quote.traded_away",
        "rfq.filled",
    ]


@pytest.mark.parametrize("store", ["redis", "django cache"])
def test_rate_limits_fail_open_when_the_cache_is_down(world, monkeypatch, caplog, store):
    import redis

    from rfq import throttling

    class DownCache:
        def get(self, *args, **kwargs):
            raise ConnectionError("cache down")

        set = get

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(throttling, "redis_client", lambda: dead if store == "redis" else None)
    monkeypatch.setattr(throttling.CertificateRateThrottle, "cache", DownCache())
    response = world["a"].get("instruments/")
    assert response.status_code == 200, response.content
    assert "unchecked: no cache" in caplog.text


def test_a_certificate_holds_at_most_two_event_streams(world, settings):
    if not settings.REDIS_URL:
        pytest.skip("the stream cap counts in Redis; without Redis there is no cap")
    # Streams that end at once when read (a held slot is an unread stream here).
    settings.KEYLINE_RFQ = {**settings.KEYLINE_RFQ, "EVENTS_STREAM_SECONDS": 0}
    lp = world["lp"]
    first = lp.get("events/stream/", HTTP_ACCEPT="text/event-stream")
    second = lp.get("events/stream/", HTTP_ACCEPT="text/event-stream")
    assert first.status_code == second.status_code == 200
    third = lp.get("events/stream/", HTTP_ACCEPT="text/event-stream")
    assert third.status_code == 429, third.content
    assert third.json()["code"] == "STREAM_LIMIT"
    assert third["Content-Type"] == "application/json"
    assert world["other_lp"].get("events/stream/").status_code == 200  # per certificate
    assert b"".join(first.streaming_content) == b"retry: 1000\n\n"  # ends, and is closed
    fourth = lp.get("events/stream/", HTTP_ACCEPT="text/event-stream")
    assert fourth.status_code == 200
    for response in (second, fourth):
        b"".join(response.streaming_content)
