"""The README's first command: `bin/run` brings up the whole platform (its own PostgreSQL and
Redis, gunicorn, the OCSP responder, a Celery worker and beat, nginx) with demo data, answers
the curl lines it prints, stops cleanly on Ctrl-C (its database and Redis included), and reuses
its CA and data on the next run."""

import json

from tests.conftest import run
from tests.platform import new_platform, platform_test, whoami

pytestmark = platform_test


def test_bin_run_serves_the_platform_and_reuses_its_ca(tmp_path_factory):
    platform = new_platform(tmp_path_factory)
    platform.start()
    try:
        # The printed curl lines work as printed: whoami, an RFQ, and the LP's event feed.
        whoami_line, rfq_line, events_line = platform.printed_curl_lines()
        result = run(whoami_line, timeout=30)
        assert json.loads(result.stdout).get("participant", {}).get("trader_id") == "nw-alice", (
            result.stdout
        )
        rfq = json.loads(run(rfq_line, timeout=30).stdout)
        assert rfq["state"] == "open", rfq
        events = json.loads(run(events_line, timeout=30).stdout)["events"]
        assert rfq["id"] in {e["data"].get("rfq", {}).get("id") for e in events}, events
        assert whoami(platform, "hl-carol")["firm"]["role"] == "liquidity_provider"
        health = run(["curl", "-sS", f"{platform.pki_url}/health/"])
        assert json.loads(health.stdout)["status"] == "ok", health.stdout
        # Its own PostgreSQL and Redis, on unix sockets in its private directory.
        assert (platform.var / "postgres" / "PG_VERSION").is_file()
        assert (platform.var / "run" / "redis.sock").is_socket()
        assert f"PostgreSQL and Redis under {platform.var}" in platform.printed
    finally:
        platform.stop()
    root = (platform.demo / "root.pem").read_bytes()
    platform.start()
    try:
        whoami_serial = whoami(platform)["certificate"]["serial"]
        serial = run(["openssl", "x509", "-in", str(platform.demo / "nw-alice.pem"), "-noout",
                      "-serial"]).stdout.split("=")[1].strip().lower()  # fmt: skip
        # The RFQ of the first run is still there: the data outlived the restart.
        with platform.api("nw-alice") as client:
            assert client.get(f"/api/v1/rfqs/{rfq['id']}/").status_code == 200
    finally:
        platform.stop()
    assert (platform.demo / "root.pem").read_bytes() == root  # the same CA
    assert whoami_serial == serial.lstrip("0")
