"""Soak: `bin/run` with its beat and worker under steady traffic for a long time.

Starts bin/run in a private var/ directory on free ports (its own PostgreSQL and Redis), then,
for --minutes, drives what users do: RFQs, quotes and accepts through the mTLS API (several
traders), the makers' event feed, portal pages, CRL and OCSP fetches. Every minute it prints
what it saw; at the end it reports the answers by status, every 5xx, whether bin/run and
all its parts are still running, and the sizes of the logs. Exit status 1 on any 5xx or if
the platform stopped.

    .venv/bin/python bench/soak_platform.py --minutes 60
"""

import argparse
import collections
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
OUR_PREFIXES = ("DJANGO_", "KEYLINE_", "CELERY_", "DATABASE_", "REDIS_")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=5.0, help="RFQ rounds per second")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="keyline-soak-"))
    var = base / "var"
    ports = {"API_PORT": free_port(), "PORTAL_PORT": free_port(), "PKI_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
    env |= {"KEYLINE_VAR_DIR": str(var), **{k: str(v) for k, v in ports.items()}}
    log = base / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(ROOT / "bin" / "run")], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    while "Press Ctrl-C to stop." not in log.read_text():
        if proc.poll() is not None:
            print(log.read_text())
            return 1
        time.sleep(0.5)
    print(f"bin/run up in {var} (ports {ports})", flush=True)

    demo = var / "demo"
    api = f"https://127.0.0.1:{ports['API_PORT']}"
    portal = f"https://127.0.0.1:{ports['PORTAL_PORT']}"
    pki = f"http://127.0.0.1:{ports['PKI_PORT']}/pki"

    def client(trader: str) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(demo / "root.pem"))
        context.load_cert_chain(str(demo / f"{trader}.pem"), str(demo / f"{trader}.key"))
        return httpx.Client(base_url=api, verify=context, timeout=30)

    statuses: collections.Counter = collections.Counter()
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + args.minutes * 60

    def note(what: str, response: httpx.Response | None, error: str = "") -> None:
        with lock:
            key = f"{what} {response.status_code if response is not None else 'ERR'}"
            statuses[key] += 1
            if response is None or response.status_code >= 500:
                errors.append(f"{time.strftime('%H:%M:%S')} {key} {error or response.text[:200]}")

    def call(what: str, fn, *a, **kw) -> httpx.Response | None:
        try:
            response = fn(*a, **kw)
        except httpx.HTTPError as exc:
            note(what, None, repr(exc))
            return None
        note(what, response)
        return response

    def rounds() -> None:
        requesters = [client("nw-alice"), client("nw-bob")]
        makers = [client("hl-carol"), client("hl-dave"), client("qs-erin")]
        while time.monotonic() < stop_at:
            started = time.monotonic()
            requester, maker = random.choice(requesters), random.choice(makers)  # noqa: S311
            rfq = call("rfq.create", requester.post, "/api/v1/rfqs/", json={
                "legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}], "quantity": "1",
                "expires_in": 30})  # fmt: skip
            if rfq is not None and rfq.status_code == 201:
                rfq_id = rfq.json()["id"]
                quote = call("quote.create", maker.post, f"/api/v1/rfqs/{rfq_id}/quotes/",
                             json={"bid_price": "59990", "ask_price": "60010"})  # fmt: skip
                if quote is not None and quote.status_code == 201 and random.random() < 0.5:  # noqa: S311
                    call("accept", requester.post, f"/api/v1/rfqs/{rfq_id}/accept/",
                         json={"quote_id": quote.json()["id"], "side": "buy"})  # fmt: skip
                # Some are left to expire: the beat's sweep closes them.
            time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - started)))

    def feeds() -> None:
        maker = client("hl-carol")
        since = 0
        while time.monotonic() < stop_at:
            response = call(
                "events", maker.get, "/api/v1/events/", params={"since": since, "wait": 10}
            )
            if response is not None and response.status_code == 200:
                since = response.json()["next_since"]

    def pages() -> None:
        context = ssl.create_default_context(cafile=str(demo / "root.pem"))
        with (
            httpx.Client(base_url=portal, verify=context, timeout=30) as browser,
            httpx.Client(timeout=30) as plain,
        ):
            while time.monotonic() < stop_at:
                for path in ("/", "/accounts/login/", "/apply/", "/developers/api/"):
                    call("portal", browser.get, path)
                call("crl", plain.get, f"{pki}/crl/client-ca.crl")
                call("health", plain.get, f"{pki}/health/")
                time.sleep(1)

    threads = [threading.Thread(target=f, daemon=True) for f in (rounds, rounds, feeds, pages)]
    for thread in threads:
        thread.start()
    while time.monotonic() < stop_at:
        time.sleep(min(60, max(0.0, stop_at - time.monotonic())))
        alive = proc.poll() is None
        with lock:
            summary = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
            print(f"{time.strftime('%H:%M:%S')} alive={alive} 5xx/errors={len(errors)} {summary}",
                  flush=True)  # fmt: skip
        if not alive:
            break
    for thread in threads:
        thread.join(60)
    alive = proc.poll() is None
    parts = subprocess.run(["ps", "-o", "args=", "-s", str(proc.pid)], capture_output=True,
                           text=True, check=False).stdout  # fmt: skip
    logs = {p.name: p.stat().st_size for p in (var / "log").iterdir()}
    print(f"\nplatform still running: {alive}")
    print("parts:", sorted({line.split()[0].rsplit("/", 1)[-1] for line in parts.splitlines()}))
    print("logs (bytes):", logs)
    # The audit chain after an hour of traffic: intact, and nothing left waiting for the
    # chainer (bin/run's chain_audit --follow).
    audit = subprocess.run([str(ROOT / "bin" / "manage"), "verify_audit"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=False)  # fmt: skip
    verdict = [line for line in (audit.stdout + audit.stderr).splitlines() if "audit chain" in line]
    print("verify_audit:", verdict or (audit.stdout + audit.stderr).strip().splitlines()[-3:])
    health = httpx.get(f"{pki}/health/", timeout=30)
    print("health:", health.status_code, health.json().get("audit_chain"))
    print("answers:", dict(sorted(statuses.items())))
    print(f"5xx or transport errors: {len(errors)}")
    for line in errors[:50]:
        print("  ", line)
    if alive:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    return 0 if alive and not errors and audit.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
