"""The RFQ API: request rates and latencies through the mTLS terminator, RFQ-to-maker event
delivery, and the RFQ list with a large table, in one run.

    .venv/bin/python bench/bench_rfq.py                         # ≈ 3 min, 100k RFQs to list
    .venv/bin/python bench/bench_rfq.py --list-rows 1000000     # ≈ 5 min, 1M RFQs
    .venv/bin/python bench/bench_rfq.py --sections http,events  # ≈ 2 min

Sets up, as bench_terminator.py does, a throwaway CA in PostgreSQL database keyline_bench_rfq
(dropped and created), Redis db 6 (flushed), gunicorn (2 sync workers unless --worker-class;
the class gunicorn reports is printed) on a unix socket with the bench settings, and our nginx
(render_nginx_conf, 1 worker, plus `location = /__ok { return 200 }` on the mTLS server). A
requester desk (a client firm) and a maker desk (a liquidity-provider firm), each with its own
certificate. Per-certificate rate limits are lifted with KEYLINE_API_RATE_SCALE. Then:

- http: keep-alive load through nginx (bench/keepalive.js, Node, 32 connections): nginx's
  `return 200`, the trivial authenticated DRF view, `GET rfqs/?limit=50` (the requester has
  --list-prepare + --quote-rfqs RFQs), `POST rfqs/` at saturation and open-loop at each of
  --create-rates, `POST rfqs/{id}/quotes/` by the maker over --quote-rfqs open RFQs in turn;
  SQL statements per request counted in-process;
- events: the maker long-polls `events/?since=N&wait=20` on one kept-alive mTLS connection
  while the requester creates RFQs one at a time; time from just before the create is sent to
  the maker's poll returning its `rfq.created`; with Redis (pub/sub wake-up), then with gunicorn
  restarted without REDIS_URL (database polling every 100 ms);
- list: --list-rows RFQs bulk-loaded in SQL (UUIDv7 ids in time order, one leg each, four
  requester firms, the last quiet for the newest 30 %, three liquidity providers, to_all or one
  named counterparty, states by age, the newest --list-open open), VACUUM ANALYZE, then
  `GET rfqs/` in-process (Django test client, the terminator's headers) for requesters and a
  maker: p50/p99, full garbage collections meanwhile, SQL statements per request, and EXPLAIN
  (ANALYZE, BUFFERS) of each statement; a main query over 20 ms is marked slow.

Servers are stopped on exit, error, Ctrl-C or SIGTERM; --keep keeps the work directory (logs).
"""

import argparse
import contextlib
import gc
import http.client
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import _common

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/keyline_bench_rfq"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/6"
TERMINATOR_SECRET = "bench-terminator-secret-0123456789abcdef"  # noqa: S105 - throwaway
API = "/api/v1/"
ONE_LEG = {"legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}], "quantity": "1"}
TWO_WAY = {"bid_price": "99999.5", "ask_price": "100000.5"}
SECTIONS = ("http", "events", "list")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# --- the world --------------------------------------------------------------------------------


class Desk:
    """A participant with a certificate: its key files for HTTPS, headers for in-process."""

    def __init__(self, participant, certificate, key_pem: bytes, workdir: Path):
        self.participant, self.certificate = participant, certificate
        name = participant.trader_id
        self.cert, self.key = workdir / f"{name}.pem", workdir / f"{name}.key"
        self.cert.write_text(certificate.pem)
        self.key.write_bytes(key_pem)

    @property
    def caller(self):
        from rfq.services import Caller

        return Caller(self.participant, self.certificate.serial)

    def client(self):
        """A Django test client that talks to the app as nginx would forward this desk."""
        from django.test import Client

        return Client(
            HTTP_HOST="127.0.0.1",
            HTTP_X_FORWARDED_PROTO="https",
            HTTP_X_KEYLINE_TERMINATOR=TERMINATOR_SECRET,
            HTTP_X_KEYLINE_CLIENT_VERIFY="SUCCESS",
            HTTP_X_KEYLINE_CLIENT_CERT=quote(self.certificate.pem),
        )


def firm(n: int, name: str, role: str):
    from kernel.lei import lei_with_check_digits
    from kernel.models import Firm

    return Firm.objects.create(
        legal_name=name,
        lei=lei_with_check_digits(f"984500BENCHRFQ{n:04d}"),
        jurisdiction="GB",
        role=role,
        status=Firm.Status.APPROVED,
    )


def desk(firm_row, trader_id: str, workdir: Path) -> Desk:
    from kernel.models import Firm, Participant

    role = (
        Participant.Role.REQUESTER
        if firm_row.role == Firm.Role.CLIENT
        else Participant.Role.LIQUIDITY_PROVIDER
    )
    participant = Participant.objects.create(
        firm=firm_row,
        trader_id=trader_id,
        name=trader_id,
        email=f"{trader_id}@x.example",
        role=role,
    )
    certificate, key_pem = _common.issue_with_key(participant, trader_id)
    return Desk(participant, certificate, key_pem, workdir)


def instruments() -> list:
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from rfq.models import Instrument

    expiry = timezone.now() + timedelta(days=90)
    rows = [
        Instrument(symbol="BTC-PERPETUAL", kind="perpetual", underlying="BTC",
                   tick_size=Decimal("0.5"), min_size=Decimal("0.1")),
        Instrument(symbol="BTC-FUT", kind="future", underlying="BTC", expiry=expiry,
                   tick_size=Decimal("0.5"), min_size=Decimal("0.1")),
        Instrument(symbol="BTC-100000-C", kind="option", underlying="BTC", expiry=expiry,
                   strike=Decimal(100000), option_type="call", quote_currency="BTC",
                   tick_size=Decimal("0.0005"), min_size=Decimal("0.1")),
        Instrument(symbol="BTC-90000-P", kind="option", underlying="BTC", expiry=expiry,
                   strike=Decimal(90000), option_type="put", quote_currency="BTC",
                   tick_size=Decimal("0.0005"), min_size=Decimal("0.1")),
        Instrument(symbol="ETH-PERPETUAL", kind="perpetual", underlying="ETH",
                   tick_size=Decimal("0.05"), min_size=Decimal(1)),
    ]  # fmt: skip
    return Instrument.objects.bulk_create(rows)


def create_rfqs(requester: Desk, count: int, expires_in: int | None = None) -> list:
    """Open RFQs through the service layer (to all liquidity providers, one BTC leg)."""
    from decimal import Decimal

    from rfq.services import LegIn, rfq_create

    return [
        rfq_create(
            caller=requester.caller,
            legs=[LegIn("BTC-PERPETUAL", "buy")],
            quantity=Decimal(1),
            expires_in=expires_in,
        )[0]
        for _ in range(count)
    ]


# --- servers ----------------------------------------------------------------------------------


class Servers:
    """gunicorn on a unix socket and our nginx in front; everything stopped by :meth:`stop`."""

    def __init__(self, args, env: dict, workdir: Path, run_dir: Path, files: dict):
        self.args, self.env, self.workdir, self.run_dir, self.files = (
            args,
            env,
            workdir,
            run_dir,
            files,
        )
        self.log = workdir / "servers.log"
        self.gunicorn = None
        self.chainer = None
        self.prefix, self.conf = workdir / "nginx", workdir / "nginx" / "nginx.conf"
        self.nginx_up = False
        self.ports = {"api": _common.free_port(), "portal": _common.free_port(),
                      "pki": _common.free_port()}  # fmt: skip

    @property
    def api_port(self) -> int:
        return self.ports["api"]

    def start_gunicorn(self, **env_changes: str) -> None:
        sock = self.run_dir / "gunicorn.sock"
        args = [str(_common.VENV_BIN / "gunicorn"), "keyline.wsgi:application",
                "-w", str(self.args.workers), "-k", self.args.worker_class,
                "--bind", f"unix:{sock}", "--no-control-socket"]  # fmt: skip
        if self.args.worker_class == "gthread":
            args += ["--threads", str(self.args.threads)]
        self.gunicorn = _common.start(args, {**self.env, **env_changes}, self.log)

    def stop_gunicorn(self) -> None:
        if self.gunicorn is not None:
            _common.stop(self.gunicorn)
            self.gunicorn = None

    def start_chainer(self) -> None:
        """The audit chainer, as the platform runs it (manage.py chain_audit --follow)."""
        args = [sys.executable, str(_common.ROOT / "manage.py"), "chain_audit", "--follow"]
        self.chainer = _common.start(args, self.env, self.log)

    def stop_chainer(self) -> None:
        if self.chainer is not None:
            _common.stop(self.chainer)
            self.chainer = None

    def start_nginx(self) -> None:
        """render_nginx_conf, plus nginx's own `return 200` on the mTLS API server."""
        from django.core.management import call_command

        call_command(
            "render_nginx_conf", "--out", str(self.conf), "--prefix", str(self.prefix),
            "--app-upstream", f"unix:{self.run_dir / 'gunicorn.sock'}",
            "--server-cert", str(self.files["server"]),
            "--server-key", str(self.files["server_key"]),
            "--api-listen", f"127.0.0.1:{self.ports['api']}",
            "--portal-listen", f"127.0.0.1:{self.ports['portal']}",
            "--pki-listen", f"127.0.0.1:{self.ports['pki']}", "--workers", "1",
            stdout=open(os.devnull, "w"),  # noqa: SIM115
        )  # fmt: skip
        text = self.conf.read_text()
        anchor = "ssl_verify_client optional;\n"  # only the API server asks for a certificate
        if text.count(anchor) != 1:
            sys.exit(f"cannot find the mTLS server in {self.conf}")
        ok = '        location = /__ok { default_type text/plain; return 200 "ok"; }\n'
        self.conf.write_text(text.replace(anchor, anchor + ok))
        self.nginx_up = True  # from here on, stop() looks for its master
        subprocess.run(["nginx", "-p", str(self.prefix), "-c", str(self.conf)], check=True)

    def wait_ready(self, desk_: Desk) -> None:
        wait_api(lambda: Connection(self.api_port, self.files["root"], desk_), [self.gunicorn],
                 self.log, "the API")  # fmt: skip

    def worker_class(self) -> str:
        used = re.findall(r"Using worker: (\S+)", self.log.read_text(errors="replace"))
        return used[-1] if used else self.args.worker_class

    def stop_nginx(self) -> None:
        """Signal the daemonised master from its pid file: graceful quit, then terminate."""
        pid_file = self.prefix / "nginx.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return  # it never started
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            for _ in range(50):
                if not pid_file.exists():
                    return
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def stop(self) -> None:
        if self.nginx_up:
            self.stop_nginx()
            self.nginx_up = False
        self.stop_gunicorn()
        self.stop_chainer()


class Connection:
    """One kept-alive HTTPS connection presenting a desk's certificate."""

    def __init__(self, port: int, root: Path, desk_: Desk, host: str = "127.0.0.1"):
        context = ssl.create_default_context(cafile=str(root))
        context.load_cert_chain(str(desk_.cert), str(desk_.key))
        self.conn = http.client.HTTPSConnection(host, port, context=context, timeout=60)
        self.connects = 0

    def call(self, method: str, path: str, body: dict | None = None):
        """(status, body bytes, perf_counter() once the body is read)."""
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if payload else {}
        for attempt in (0, 1):
            try:
                if self.conn.sock is None:
                    self.connects += 1
                self.conn.request(method, path, body=payload, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data, time.perf_counter()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()  # the server closed a kept-alive connection: reconnect once
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def wait_api(connect, procs: list, log: Path, what: str, seconds: float = 60) -> None:
    """Wait until ``connect()``'s connection gets a 200 from whoami/; stop the bench if one of
    ``procs`` exits or nothing answers within ``seconds`` (with the tail of ``log``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                sys.exit(f"{' '.join(map(str, proc.args))} exited:\n"
                         f"{log.read_text(errors='replace')[-2000:]}")  # fmt: skip
        try:
            conn = connect()
            status, _, _ = conn.call("GET", API + "whoami/")
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not answer:\n{log.read_text(errors='replace')[-2000:]}")


def load(url: str, seconds: float, connections: int, desk_: Desk, root: Path, **options) -> dict:
    """bench/keepalive.js: closed loop, or open loop with ``rate``."""
    script = _common.ROOT / "bench" / "keepalive.js"
    args = ["node", str(script), url, str(seconds), str(connections),
            str(desk_.cert), str(desk_.key), str(root), json.dumps(options)]  # fmt: skip
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


# --- section 1: requests through nginx --------------------------------------------------------


def queries_of(client, method: str, path: str, body: dict | None = None) -> tuple[int, int]:
    """(status, SQL queries) of one in-process request."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        if method == "GET":
            response = client.get(path)
        else:
            response = client.post(path, body, content_type="application/json")
    return response.status_code, len(captured.captured_queries)


def section_http(args, servers: Servers, requester: Desk, maker: Desk) -> None:
    root = servers.files["root"]
    base = f"https://127.0.0.1:{servers.api_port}"
    create_rfqs(requester, args.list_prepare)
    targets = create_rfqs(requester, args.quote_rfqs, expires_in=600)
    quote_urls = [f"{base}{API}rfqs/{r.pk}/quotes/" for r in targets]
    secs, conns, warm = args.seconds, args.connections, args.warmup
    body_rfq, body_quote = json.dumps(ONE_LEG), json.dumps(TWO_WAY)

    # SQL statements per request, counted in-process (the same code path as through nginx).
    as_requester, as_maker = requester.client(), maker.client()
    for client in (as_requester, as_maker):
        client.get(API + "bench/auth/")  # the trust decision is cached, as under load
    queries = {
        "auth": queries_of(as_requester, "GET", API + "bench/auth/"),
        "list": queries_of(as_requester, "GET", API + "rfqs/?limit=50"),
        "create": queries_of(as_requester, "POST", API + "rfqs/", ONE_LEG),
        "quote": queries_of(as_maker, "POST", f"{API}rfqs/{targets[0].pk}/quotes/", TWO_WAY),
    }
    for name, (status, _) in queries.items():
        if status not in (200, 201):
            sys.exit(f"in-process {name} answered {status}")

    print(f"\n## Requests through nginx mTLS, keep-alive ({conns} connections, Node; "
          f"{secs:g} s per row after {warm:g} s warm-up)\n")  # fmt: skip
    # Rates as ratios to the two rows measured first, in this run: nginx's own answer (the
    # ceiling) and a trivial authenticated DRF view (the framework's floor).
    print("| request | req/s | of floor | of ceiling | p50 | p90 | p99 | max | errors | SQL |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [
        ("ok", "nginx `return 200` (ceiling)", f"{base}/__ok", maker, {}, None),
        ("auth", "trivial DRF view, certificate auth (framework floor)",
         f"{base}{API}bench/auth/", requester, {}, "auth"),
        ("list", f"`GET rfqs/?limit=50` (requester, {args.list_prepare}+ RFQs)",
         f"{base}{API}rfqs/?limit=50", requester, {}, "list"),
        ("create", "`POST rfqs/` (requester, saturation)", f"{base}{API}rfqs/", requester,
         {"method": "POST", "body": body_rfq, "ok": [201]}, "create"),
        *[(f"create@{rate}", f"`POST rfqs/` at a fixed {rate} req/s (open loop)",
           f"{base}{API}rfqs/", requester,
           {"method": "POST", "body": body_rfq, "ok": [201], "rate": rate}, "create")
          for rate in args.create_rates],
        ("quote", f"`POST rfqs/{{id}}/quotes/` (maker, {len(targets)} open RFQs in turn)",
         quote_urls[0], maker,
         {"method": "POST", "body": body_quote, "ok": [201], "urls": quote_urls}, "quote"),
    ]  # fmt: skip
    results = {}
    for key, label, url, who, options, qkey in rows:
        r = results[key] = load(url, secs, conns, who, root, warmup=warm, **options)
        if not r["requests"]:
            sys.exit(f"{label}: no answer: {r}; see {servers.log}")
        q = "" if qkey is None else str(queries[qkey][1])
        ceiling_rps = results["ok"]["rps"]
        floor_rps = results["auth"]["rps"] if "auth" in results else None
        of_floor = f"{r['rps'] / floor_rps:.1%}" if floor_rps else ""
        print(f"| {label} | {r['rps']:,.0f} | {of_floor} | {r['rps'] / ceiling_rps:.1%} "
              f"| {r['p50']:.2f} ms | {r['p90']:.2f} ms | {r['p99']:.2f} ms | {r['max']:.1f} ms "
              f"| {r['errors']} | {q} |", flush=True)  # fmt: skip
    ceiling, floor = results["ok"]["rps"], results["auth"]["rps"]
    print(f"\n- framework floor = {floor / ceiling:.1%} of nginx's ceiling")
    listing = results["list"]["rps"]
    print(f"- RFQ list = {listing / floor:.1%} of the trivial view's rate "
          f"(target ≥ 50 %: {'met' if listing >= floor / 2 else 'NOT met'})")  # fmt: skip
    for rate in args.create_rates:
        r = results[f"create@{rate}"]
        under = r["p99"] < 25 and not r["errors"] and r["rps"] >= 0.95 * rate
        verdict = ("met" if under else "NOT met") if rate == 200 else ("yes" if under else "no")
        target = "target: p99 < 25 ms at 200 req/s" if rate == 200 else "p99 < 25 ms"
        print(f"- RFQ create at {rate} req/s: p99 {r['p99']:.2f} ms, {r['rps']:.0f} answered/s "
              f"of {r['sent'] / secs:.0f} sent/s ({target}: {verdict})")  # fmt: skip


# --- section 2: RFQ created -> on the maker's event feed --------------------------------------


def delivery(args, servers: Servers, requester: Desk, maker: Desk, samples: int) -> dict:
    """Create RFQs one at a time; time each until the maker's long-poll returns it."""
    from rfq.events import events_latest

    root = servers.files["root"]
    poller = Connection(servers.api_port, root, maker)
    creator = Connection(servers.api_port, root, requester)
    arrivals: dict[str, float] = {}
    cond = threading.Condition()
    stop = threading.Event()
    polls, poll_errors = [0], []
    since = events_latest()

    def poll_loop() -> None:
        nonlocal since
        while not stop.is_set():
            path = f"{API}events/?since={since}&wait={args.events_wait}"
            try:
                status, data, at = poller.call("GET", path)
            except OSError as exc:
                poll_errors.append(repr(exc))
                time.sleep(0.1)
                continue
            polls[0] += 1
            if status != 200:
                poll_errors.append(f"{status} {data[:200]!r}")
                time.sleep(0.1)
                continue
            doc = json.loads(data)
            with cond:
                for event in doc["events"]:
                    if event["type"] == "rfq.created":
                        arrivals.setdefault(event["data"]["rfq"]["id"], at)
                cond.notify_all()
            since = doc["next_since"]

    thread = threading.Thread(target=poll_loop, daemon=True)
    thread.start()
    time.sleep(0.5)  # the first poll is waiting
    gap_min, gap_max = args.events_gap_ms
    latencies, creates, missed = [], [], 0
    warm = 10
    try:
        for i in range(warm + samples):
            started = time.perf_counter()
            status, data, answered = creator.call("POST", API + "rfqs/", ONE_LEG)
            if status != 201:
                sys.exit(f"create answered {status}: {data[:300]!r}")
            rfq_id = json.loads(data)["id"]
            with cond:
                arrived = cond.wait_for(lambda rfq_id=rfq_id: rfq_id in arrivals, timeout=5)
            if i >= warm:
                if arrived:
                    latencies.append(arrivals[rfq_id] - started)
                    creates.append(answered - started)
                else:
                    missed += 1
            time.sleep(random.uniform(gap_min, gap_max) / 1000)  # noqa: S311 - not crypto
    finally:
        stop.set()
        creator.call("POST", API + "rfqs/", ONE_LEG)  # wakes the last poll
        thread.join(timeout=args.events_wait + 5)
        poller.close()
        creator.close()
    return {
        "latencies": latencies,
        "creates": creates,
        "missed": missed,
        "polls": polls[0],
        "poll_errors": poll_errors,
        "connects": (poller.connects, creator.connects),
    }


def section_events(args, servers: Servers, requester: Desk, maker: Desk) -> None:
    print(f"\n## RFQ created → on the maker's event feed (long-poll `wait={args.events_wait}`, "
          f"one kept-alive mTLS connection each; gaps {args.events_gap_ms[0]:g} to "
          f"{args.events_gap_ms[1]:g} ms)\n")  # fmt: skip
    print("| wake-up | samples | p50 | p90 | p99 | max | create answered (p50 / p99) | polls |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [("Redis pub/sub", args.events_samples, {})]
    if args.events_no_redis_samples:
        runs.append(("no Redis (database poll every 100 ms)", args.events_no_redis_samples,
                     {"REDIS_URL": ""}))  # fmt: skip
    for label, samples, env_changes in runs:
        if env_changes:
            # Without Redis the app caches in the database (the migration made no table, as
            # the cache was Redis then).
            from django.core.management.commands.createcachetable import Command

            command = Command()
            command.verbosity = 0
            command.create_table("default", "keyline_cache", dry_run=False)
            servers.stop_gunicorn()
            servers.start_gunicorn(**env_changes)
            servers.wait_ready(requester)
        r = delivery(args, servers, requester, maker, samples)
        lat, cre = r["latencies"], r["creates"]
        if not lat:
            sys.exit(f"{label}: nothing delivered; poll errors {r['poll_errors'][:3]}")
        print(f"| {label} | {len(lat)} | {ms(pct(lat, 0.5))} | {ms(pct(lat, 0.9))} "
              f"| {ms(pct(lat, 0.99))} | {ms(max(lat))} | {ms(pct(cre, 0.5))} / "
              f"{ms(pct(cre, 0.99))} | {r['polls']} |", flush=True)  # fmt: skip
        if r["missed"] or r["poll_errors"] or max(r["connects"]) > 1:
            print(f"  ({label}: {r['missed']} not delivered within 5 s, poll errors "
                  f"{r['poll_errors'][:3]}, TLS connections opened {r['connects']})")  # fmt: skip
        if label == "Redis pub/sub":
            verdict = "met" if pct(lat, 0.99) < 0.1 else "NOT met"
            print(f"  (target p99 < 100 ms with Redis: {verdict})")
    if runs[-1][2]:
        servers.stop_gunicorn()
        servers.start_gunicorn()
        servers.wait_ready(requester)


# --- section 3: the list with many RFQs --------------------------------------------------------

BULK_TABLE = """
CREATE TEMP TABLE bulk_rfq AS
SELECT g AS n, x.ms, x.fi, x.target, x.h,
       (lpad(to_hex(x.ms), 12, '0') || '7' || substr(x.h, 1, 3)
        || substr('89ab', 1 + g %% 4, 1) || substr(x.h, 4, 15))::uuid AS id,
       to_timestamp(x.ms / 1000.0) AS created_at,
       CASE WHEN g > %(rows)s - %(open)s THEN now() + interval '300 seconds'
            ELSE to_timestamp(x.ms / 1000.0) + interval '300 seconds' END AS expires_at,
       CASE WHEN g > %(rows)s - %(open)s
                 OR to_timestamp(x.ms / 1000.0) + interval '300 seconds' > now() THEN 'open'
            WHEN x.st < 0.25 THEN 'filled' WHEN x.st < 0.40 THEN 'cancelled'
            ELSE 'expired' END AS state
FROM generate_series(1, %(rows)s) AS g,
LATERAL (SELECT %(end_ms)s::bigint - (%(rows)s - g)::bigint * %(step_ms)s AS ms,
                -- the last requester firm has gone quiet: none of the newest 30 %%
                floor(random() * (%(firms)s - (g > %(rows)s * 0.7)::int))::int AS fi,
                random() AS target, random() AS st, md5(g::text || random()::text) AS h) AS x
"""
BULK_RFQ = """
INSERT INTO rfq_rfq (id, firm_id, requester_id, certificate_serial, client_rfq_id, request_hash,
                     quantity, anonymous, to_all, state, state_reason, created_at, expires_at,
                     closed_at)
SELECT id, (%(firm_ids)s::bigint[])[fi + 1], (%(requester_ids)s::bigint[])[fi + 1], 'b01k', '',
       h || h, 1 + n %% 10, n %% 17 = 0, target < %(to_all)s, state,
       CASE state WHEN 'filled' THEN 'accepted' WHEN 'cancelled' THEN 'cancelled_by_requester'
                  WHEN 'expired' THEN 'expired' ELSE '' END,
       created_at, expires_at,
       CASE state WHEN 'open' THEN NULL WHEN 'expired' THEN expires_at
                  ELSE created_at + interval '20 seconds' END
FROM bulk_rfq
"""
BULK_LEG = """
INSERT INTO rfq_rfqleg (rfq_id, leg_no, instrument_id, side, ratio)
SELECT id, 1, (%(instrument_ids)s::bigint[])[1 + n %% %(instruments)s],
       CASE WHEN n %% 2 = 0 THEN 'buy' ELSE 'sell' END, 1
FROM bulk_rfq
"""
BULK_COUNTERPARTY = """
INSERT INTO rfq_rfqcounterparty (rfq_id, firm_id)
SELECT id, (%(lp_ids)s::bigint[])[1 + floor((target - %(to_all)s) / (1 - %(to_all)s)
                                             * %(lps)s)::int]
FROM bulk_rfq WHERE target >= %(to_all)s
"""


def bulk_load(
    rows: int, open_rows: int, requesters: list[Desk], lps: list, instrument_ids: list[int]
) -> float:
    """``rows`` RFQs, one every 2.592 s up to now (1M span 30 days): those of the last 300 s
    and the newest ``open_rows`` are open (a busy venue), older ones filled (25 %), cancelled
    (15 %) or expired. Requester firms at random, the last one absent from the newest 30 %."""
    from django.db import connection

    to_all, step_ms = 0.6, 2592
    params = {
        "rows": rows,
        "open": open_rows,
        "end_ms": int(time.time() * 1000) - 1000,
        "step_ms": step_ms,
        "firms": len(requesters),
        "firm_ids": [d.participant.firm_id for d in requesters],
        "requester_ids": [d.participant.pk for d in requesters],
        "to_all": to_all,
        "lp_ids": [f.pk for f in lps],
        "lps": len(lps),
        "instrument_ids": instrument_ids,
        "instruments": len(instrument_ids),
    }
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for sql in (BULK_TABLE, BULK_RFQ, BULK_LEG, BULK_COUNTERPARTY):
            cursor.execute(sql, params)
        cursor.execute("DROP TABLE bulk_rfq")
        for table in ("rfq_rfq", "rfq_rfqleg", "rfq_rfqcounterparty"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def plan_summary(sql: str) -> tuple[float, list[str]]:
    """(execution ms, one line per scan/sort node) of EXPLAIN (ANALYZE, BUFFERS) of ``sql``."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        value = cursor.fetchone()[0]
    plan = (json.loads(value) if isinstance(value, str) else value)[0]
    lines: list[str] = []

    def walk(node: dict, hashed: set[str]) -> None:
        kind, loops = node["Node Type"], node.get("Actual Loops", 1)
        if node.get("Scan Direction") == "Backward":
            kind += " Backward"
        if "Scan" in kind:
            rows = node.get("Actual Rows", 0) * loops
            removed = (node.get("Rows Removed by Filter", 0)
                       + node.get("Rows Removed by Index Recheck", 0)) * loops  # fmt: skip
            where = node.get("Index Name") or node.get("Relation Name") or ""
            text = f"{kind} {where}: {rows:,.0f} rows"
            if removed:
                text += f" + {removed:,.0f} filtered out"
            if loops > 1:
                text += f" ({loops:,} loops)"
            if node.get("Parent Relationship") == "SubPlan":
                name = node.get("Subplan Name", "SubPlan")
                text = f"[{'hashed ' if name in hashed else ''}{name}] {text}"
            lines.append(text)
        elif kind in ("Sort", "Incremental Sort"):
            lines.append(f"{kind} ({node.get('Sort Method', '?')})")
        # "hashed SubPlan N" in a filter: the subplan ran once and was hashed
        conditions = " ".join(str(node.get(k, "")) for k in ("Filter", "Index Cond"))
        hashed = hashed | set(re.findall(r"hashed (SubPlan \d+)", conditions))
        for child in node.get("Plans", []):
            walk(child, hashed)

    walk(plan["Plan"], set())
    buffers = plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
    lines.append(f"{buffers:,} buffers")
    return plan["Execution Time"], lines


@contextlib.contextmanager
def full_collections(pauses: list[float]):
    """Record how long each full (generation 2) garbage collection takes meanwhile."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)


def table_of(sql: str) -> str:
    match = re.search(r'\bFROM "(\w+)"', sql)
    return match.group(1) if match else "?"


def section_list(args, workdir: Path) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from kernel.models import Firm
    from rfq.models import Instrument, Rfq
    from rfq.pagination import cursor_encode

    clients = [firm(100 + i, f"List Client {i}", Firm.Role.CLIENT) for i in range(4)]
    lps = [firm(200 + i, f"List LP {i}", Firm.Role.LIQUIDITY_PROVIDER) for i in range(3)]
    requesters = [desk(f, f"list-requester-{i}", workdir) for i, f in enumerate(clients)]
    maker = desk(lps[0], "list-maker-0", workdir)
    requester = requesters[0]
    instrument_ids = list(Instrument.objects.order_by("pk").values_list("pk", flat=True))
    seconds = bulk_load(args.list_rows, args.list_open, requesters, lps, instrument_ids)
    total = Rfq.objects.count()
    own = Rfq.objects.filter(firm_id=requester.participant.firm_id).count()
    now = timezone.now()
    open_now = Rfq.objects.filter(state=Rfq.State.OPEN, expires_at__gt=now).count()
    print(f"\n## `GET rfqs/` with {total:,} RFQs in PostgreSQL (in-process, "
          f"{args.list_requests} requests per row after 20 warm-up)\n")  # fmt: skip
    print(f"Loaded {args.list_rows:,} RFQs (+ legs, counterparties) and ran VACUUM ANALYZE in "
          f"{seconds:.1f} s. The requester's firm has {own:,} of them; the maker sees to_all "
          f"RFQs (60 %) and those naming its firm (≈ 13 %); {open_now:,} RFQs are open; "
          f"the quiet firm has none of the newest 30 %.\n")  # fmt: skip

    def deep(queryset) -> str:
        offset = queryset.count() // 2
        pk = queryset.order_by("-pk").values_list("pk", flat=True)[offset]
        return cursor_encode(pk)

    from rfq.selectors import Viewer, rfq_visible

    mine = Rfq.objects.filter(firm_id=requester.participant.firm_id)
    visible = rfq_visible(Viewer.of(maker.participant))
    cases = [
        ("requester, first page", requester, {"limit": 50}),
        ("requester, deep page (cursor at 50 %)", requester, {"limit": 50, "cursor": deep(mine)}),
        ("requester, state=open", requester, {"limit": 50, "state": "open"}),
        ("requester, state=expired", requester, {"limit": 50, "state": "expired"}),
        ("requester of the quiet firm, first page", requesters[-1], {"limit": 50}),
        ("maker, first page", maker, {"limit": 50}),
        ("maker, deep page (cursor at 50 %)", maker, {"limit": 50, "cursor": deep(visible)}),
        ("maker, state=open", maker, {"limit": 50, "state": "open"}),
        ("maker, state=filled", maker, {"limit": 50, "state": "filled"}),
    ]
    print(
        "| request | results | p50 | p99 | full GCs | SQL queries | main query (EXPLAIN ANALYZE) |"
    )
    print("|---|---|---|---|---|---|---|")
    plans = []
    for label, who, params in cases:
        client = who.client()
        path = f"{API}rfqs/?{urlencode(params)}"
        for _ in range(20):
            client.get(path)
        times, pauses = [], []
        with full_collections(pauses):
            for _ in range(args.list_requests):
                started = time.perf_counter()
                response = client.get(path)
                times.append(time.perf_counter() - started)
        if response.status_code != 200:
            sys.exit(f"{label}: {response.status_code} {response.content[:300]!r}")
        results = len(response.json()["results"])
        with CaptureQueriesContext(connection) as captured:
            client.get(path)
        selects = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
        explained = [(table_of(sql), *plan_summary(sql)) for sql in selects]
        main = next((e for e in explained if e[0] == "rfq_rfq"), ("?", 0.0, ["?"]))
        slow = " **slow**" if main[1] > 20 else ""
        gcs = f"{len(pauses)}, max {ms(max(pauses))}" if pauses else "0"
        print(f"| {label} | {results} | {ms(pct(times, 0.5))} | {ms(pct(times, 0.99))} | {gcs} "
              f"| {len(captured.captured_queries)} | {main[1]:.2f} ms{slow}: "
              f"{'; '.join(main[2])} |", flush=True)  # fmt: skip
        plans.append((label, explained))
    print("\nEvery query of each request (EXPLAIN ANALYZE execution time, scans):\n")
    for label, explained in plans:
        print(f"- {label}:")
        for table, exec_ms, lines in explained:
            print(f"  - `{table}` {exec_ms:.2f} ms: {'; '.join(lines)}")


# --- the audit chain's lag ------------------------------------------------------------------------


def audit_lag_report() -> None:
    """How long the records written by the rows above waited for the chainer (chained_at -
    created_at), whether any still waits, and verify_audit's verdict on the whole chain."""
    from django.db.models import F

    from kernel.audit import audit_tail, audit_verify
    from kernel.models import AuditRecord

    time.sleep(2)  # the chainer's last passes
    lags = [
        lag.total_seconds()
        # The API's records (the set-up's were written before the chainer started).
        for lag in AuditRecord.objects.filter(event__regex=r"^(rfq|quote|trade)\.")
        .annotate(lag=F("chained_at") - F("created_at"))
        .values_list("lag", flat=True)
    ]
    tail, verdict = audit_tail(), audit_verify()
    print("\n## The audit chain during the rows above (chainer: manage.py chain_audit --follow)\n")
    print("| records chained | lag p50 | p99 | max | unchained at the end | verify_audit |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(lags):,} | {ms(pct(lags, 0.5))} | {ms(pct(lags, 0.99))} | {ms(max(lags))} "
          f"| {tail.count} | {'intact' if verdict.ok else verdict.reason} |")  # fmt: skip
    print(
        f"\n- audit chain lag p99 {ms(pct(lags, 0.99))} (target < 1 s: "
        f"{'met' if pct(lags, 0.99) < 1 and verdict.ok else 'NOT met'})"
    )


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="http,events,list")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-class", default="sync", help="gunicorn -k (sync, gthread)")
    parser.add_argument("--threads", type=int, default=4, help="with --worker-class gthread")
    parser.add_argument("--seconds", type=float, default=10, help="per load row")
    parser.add_argument("--warmup", type=float, default=2, help="seconds before each load row")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--create-rates", default="50,200", help="open-loop RFQ creates/s")
    parser.add_argument("--list-prepare", type=int, default=100, help="RFQs before the list row")
    parser.add_argument("--quote-rfqs", type=int, default=50, help="open RFQs the maker quotes")
    parser.add_argument("--events-samples", type=int, default=300)
    parser.add_argument("--events-no-redis-samples", type=int, default=100, help="0: skip")
    parser.add_argument("--events-wait", type=int, default=20)
    parser.add_argument("--events-gap-ms", default="5,50", help="random gap between creates")
    parser.add_argument("--list-rows", type=int, default=100_000)
    parser.add_argument("--list-open", type=int, default=20_000, help="newest bulk RFQs open")
    parser.add_argument("--list-requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    _common.require("node", "nginx", "openssl")
    args.create_rates = [int(r) for r in args.create_rates.split(",") if r]
    args.events_gap_ms = tuple(float(g) for g in args.events_gap_ms.split(","))
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"--sections: one or more of {', '.join(SECTIONS)}")

    # SIGTERM (timeout, kill) unwinds like Ctrl-C, so the finally below stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="keyline-bench-rfq-"))
    run_dir = Path(tempfile.mkdtemp(prefix="keyline-bench-rfq-run-"))
    run_dir.chmod(0o711)
    _common.reset_postgres(args.database_url)
    _common.flush_redis(args.redis_url)
    env = _common.bench_env(
        args.database_url,
        str(workdir / "ca"),
        args.redis_url,
        DJANGO_SETTINGS_MODULE="bench_settings",
        KEYLINE_TERMINATOR_SECRET=TERMINATOR_SECRET,
        KEYLINE_API_RATE_SCALE="100000",
        PYTHONPATH=f"{_common.ROOT / 'bench'}:{_common.ROOT}",
    )
    sys.path.insert(0, str(_common.ROOT / "bench"))
    _common.configure(env)
    servers = None
    started = time.monotonic()
    try:
        from django.core.management import call_command

        from kernel.audit import Actor
        from kernel.models import Firm
        from pki.revocation import crl_publish
        from pki.services import ca_init, server_certificate_issue

        actor = Actor.system("bench")
        call_command("migrate", verbosity=0)
        ca_init(key_type="ec-p256", force=True, actor=actor)
        instruments()
        requester = desk(firm(1, "Bench Client Ltd", Firm.Role.CLIENT), "bench-requester", workdir)
        maker = desk(firm(2, "Bench LP Ltd", Firm.Role.LIQUIDITY_PROVIDER), "bench-maker", workdir)
        server = server_certificate_issue(
            dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor=actor
        )
        crl_publish(actor=actor)
        files = {"root": workdir / "root.pem", "server": workdir / "server.pem",
                 "server_key": workdir / "server.key"}  # fmt: skip
        files["root"].write_text(server.root_pem)
        files["server"].write_text(server.certificate.pem + server.chain_pem)
        files["server_key"].write_bytes(server.private_key_pem)

        load1 = os.getloadavg()[0]
        print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
              f"{load1:.2f} at the start")  # fmt: skip
        if sections & {"http", "events"}:
            servers = Servers(args, env, workdir, run_dir, files)
            servers.start_chainer()
            servers.start_gunicorn()
            servers.start_nginx()
            servers.wait_ready(requester)
            version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
            print(f"{version.strip()}, 1 worker; gunicorn -w {args.workers} "
                  f"(worker class: {servers.worker_class()}"
                  f"{f', {args.threads} threads' if args.worker_class == 'gthread' else ''}) "
                  f"on a unix socket; Redis {args.redis_url}")  # fmt: skip
        if "http" in sections:
            section_http(args, servers, requester, maker)
        if "events" in sections:
            section_events(args, servers, requester, maker)
        if servers is not None:
            audit_lag_report()
            servers.stop()
        if "list" in sections:
            section_list(args, workdir)
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end; "
              f"{time.monotonic() - started:.0f} s in all")  # fmt: skip
    finally:
        if servers is not None:
            servers.stop()
        from django.db import connections

        connections.close_all()
        _common.reset_postgres(args.database_url, create=False)
        _common.flush_redis(args.redis_url)
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
