"""Scale-out: two app nodes sharing one PostgreSQL and one Redis, each in a network namespace of
its own with its own nginx mTLS terminator, gunicorn pools and Celery worker. Correctness across
the nodes, then throughput with one node and with two.

    .venv/bin/python bench/bench_scaleout.py              # ≈ 3 min; needs root (ip netns)
    .venv/bin/python bench/bench_scaleout.py --no-pin     # nodes not pinned to a CPU each
    .venv/bin/python bench/bench_scaleout.py --keep       # keep the work directory (logs)

The world: PostgreSQL database keyline_bench_scaleout (dropped and created; reached on its unix
socket, which every namespace sees), a Redis of the run's own on a unix socket in the work
directory, a throwaway CA, a client firm's requester and a liquidity provider's maker, each with a
certificate, and a server certificate for both nodes' addresses. Each node (`ip netns add`,
a veth pair to the host: node A 10.231.1.2, node B 10.231.2.2) runs what bin/run runs for
requests: nginx (render_nginx_conf, 1 worker), gunicorn for the API (2 sync workers) and for the
event feed (gthread, 32 threads), a Celery worker (-Q signing,default); node A also runs the one
audit chainer. By default node A's processes are pinned to CPU 0 and node B's to CPU 1
(`taskset`), so that "one node" and "two nodes" differ by a node's worth of CPU on this 2-core
machine; PostgreSQL, Redis and the load client are not pinned. The load client runs on the host
and reaches each node over its veth pair.

Correctness (each a hard failure, the bench exits non-zero):
- revocation: a process in node A revokes a certificate through the service layer (as the
  portal's revoke does); 2 kept-alive connections on each node, which requests land on either
  gunicorn worker, ask `whoami/` with it until 300 ms after the revoke returned. Reported, from
  the start of the revoke call: when it returned, and on each node when the last request still
  served was sent and when the first refused one was. A request sent more than the stated bound
  (50 ms) after the call returned and still served fails the bench;
- accept race: per RFQ, 8 accepts of one quote (4 through each node, released together by a
  barrier): exactly one 201, the rest 409 RFQ_NOT_OPEN-like refusals, one trade in the database;
- feed order: the maker follows `events/?since=…&wait=20` on node B while the requester creates
  RFQs through node A (one at a time) and through both nodes at once (two threads): every RFQ is
  on the feed once, `seq` only rises, node A's one-at-a-time RFQs arrive in creation order, and the
  follower saw exactly what a full re-read of the feed afterwards returns.

Throughput: bench/keepalive.js (Node, 16 connections per node, closed loop) on the trivial
authenticated view, `GET rfqs/?limit=50`, `POST rfqs/` and `POST rfqs/{id}/quotes/`, through node A
alone, then through both nodes at once (one load process per node, summed); as a table.
"""

import argparse
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common
import bench_rfq
from bench_rfq import API, ONE_LEG, TERMINATOR_SECRET, TWO_WAY, Connection, Desk, ms, pct

DEFAULT_DATABASE_URL = "postgres://postgres@//var/run/postgresql/keyline_bench_scaleout"
NODES = {"a": "10.231.1", "b": "10.231.2"}  # /30 each: host .1, node .2
PORTS = {"api": 8443, "portal": 8444, "pki": 8080}
BOUND = 0.050  # the stated bound: a revocation is refused by every worker within 50 ms


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


class Node:
    """One app node: a network namespace, and nginx, gunicorn (API and events), a Celery worker
    (and, on node A, the audit chainer) started inside it."""

    def __init__(self, name: str, cpu: int | None, env: dict, workdir: Path, files: dict):
        self.name, self.env, self.files = name, env, files
        self.ns = f"keyline-bench-{name}"
        self.host_if, self.node_if = f"klb{name}0", f"klb{name}1"
        self.address = f"{NODES[name]}.2"
        self.pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.dir = workdir / f"node-{name}"
        self.run = self.dir / "run"
        self.run.mkdir(parents=True)
        self.log = self.dir / "servers.log"
        self.procs: list[subprocess.Popen] = []

    def base(self, port: str = "api") -> str:
        return f"https://{self.address}:{PORTS[port]}"

    def make_namespace(self) -> None:
        subnet = NODES[self.name]
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)  # a stale one
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.node_if)
        sh("ip", "link", "set", self.node_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{subnet}.1/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        inside = ["ip", "netns", "exec", self.ns]
        sh(*inside, "ip", "addr", "add", f"{self.address}/30", "dev", self.node_if)
        sh(*inside, "ip", "link", "set", self.node_if, "up")
        sh(*inside, "ip", "link", "set", "lo", "up")

    def start(self, args: list[str], **env_changes: str) -> subprocess.Popen:
        command = ["ip", "netns", "exec", self.ns, *self.pin, *args]
        proc = _common.start(command, {**self.env, **env_changes}, self.log)
        self.procs.append(proc)
        return proc

    def start_servers(self, chainer: bool) -> None:
        from django.core.management import call_command

        conf = self.dir / "nginx" / "nginx.conf"
        call_command(
            "render_nginx_conf", "--out", str(conf), "--prefix", str(self.dir / "nginx"),
            "--app-upstream", f"unix:{self.run / 'gunicorn.sock'}",
            "--events-upstream", f"unix:{self.run / 'events.sock'}",
            "--server-cert", str(self.files["server"]),
            "--server-key", str(self.files["server_key"]),
            *[arg for port, number in PORTS.items()
              for arg in (f"--{port}-listen", f"{self.address}:{number}")],
            "--workers", "1", stdout=open(os.devnull, "w"),  # noqa: SIM115
        )  # fmt: skip
        gunicorn = [str(_common.VENV_BIN / "gunicorn"), "keyline.wsgi:application",
                    "--no-control-socket"]  # fmt: skip
        self.start([*gunicorn, "-w", "2", "--bind", f"unix:{self.run / 'gunicorn.sock'}"])
        self.start([*gunicorn, "-w", "1", "-k", "gthread", "--threads", "32",
                    "--bind", f"unix:{self.run / 'events.sock'}"])  # fmt: skip
        self.start([str(_common.VENV_BIN / "celery"), "-A", "keyline", "worker", "-Q",
                    "signing,default", "--concurrency", "1", "--without-gossip",
                    "--without-mingle", "--loglevel", "WARNING"])  # fmt: skip
        if chainer:
            self.start([sys.executable, str(_common.ROOT / "manage.py"), "chain_audit",
                        "--follow"])  # fmt: skip
        self.start(["nginx", "-p", str(self.dir / "nginx"), "-c", str(conf),
                    "-g", "daemon off;"])  # fmt: skip

    def wait_ready(self, desk: Desk) -> None:
        bench_rfq.wait_api(lambda: Conn(self, desk), self.procs, self.log, f"node {self.name}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _common.stop(proc)
        self.procs.clear()
        listed = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        for pid in listed.stdout.split():  # anything left behind in the namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)  # and its veth


def Conn(node: Node, desk: Desk) -> Connection:  # noqa: N802 - reads as a type
    """One kept-alive HTTPS connection to a node's API, presenting a desk's certificate."""
    return Connection(PORTS["api"], node.files["root"], desk, host=node.address)


def ok(status: int, data: bytes, want: int, what: str) -> dict:
    if status != want:
        sys.exit(f"{what} answered {status}: {data[:300]!r}")
    return json.loads(data)


# --- correctness ----------------------------------------------------------------------------


def revoker_main() -> None:
    """--revoker: run inside node A; revokes each serial read from stdin and prints
    `serial before after` (wall clock, which every namespace shares) once it returned."""
    from kernel.audit import Actor
    from pki.models import Certificate
    from pki.revocation import certificate_revoke

    actor = Actor.system("bench-scaleout node a")
    print("ready", flush=True)
    for line in sys.stdin:
        serial = line.strip()
        certificate = Certificate.objects.get(serial=serial)
        before = time.time()
        certificate_revoke(certificate=certificate, reason="cessation_of_operation", actor=actor)
        print(serial, before, time.time(), flush=True)


def check_revocation(args, a: Node, b: Node, victims: list[Desk]) -> dict:
    revoker = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, *a.pin, sys.executable, __file__, "--revoker"],
        cwd=_common.ROOT, env=a.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert revoker.stdout.readline().strip() == "ready", "the revoker did not start"
    first: dict[str, list[float]] = {"a": [], "b": []}  # from the revoke call's start
    last: dict[str, list[float]] = {"a": [], "b": []}
    calls: list[float] = []  # how long the revoke call took
    late_ok: list[float] = []  # a 200 to a request sent after the call returned
    try:
        for victim in victims:
            conns = [(node, Conn(node, victim)) for node in (a, b) for _ in range(2)]
            for node, conn in conns:  # every connection is trusted first (and cached)
                for _ in range(4):
                    ok(*conn.call("GET", API + "whoami/")[:2], 200, f"whoami on {node.name}")
            answers: list[tuple[str, float, int]] = []  # (node, sent at, status)
            done = threading.Event()
            lock = threading.Lock()

            def poll(node: Node, conn: Connection, done=done, lock=lock, answers=answers) -> None:
                while not done.is_set():
                    sent = time.time()
                    status, _, _ = conn.call("GET", API + "whoami/")
                    with lock:
                        answers.append((node.name, sent, status))

            threads = [threading.Thread(target=poll, args=pair) for pair in conns]
            for thread in threads:
                thread.start()
            time.sleep(0.05)
            revoker.stdin.write(victim.certificate.serial + "\n")
            revoker.stdin.flush()
            _, before, after = revoker.stdout.readline().split()
            called, returned = float(before), float(after)
            time.sleep(0.3)
            done.set()
            for thread in threads:
                thread.join()
            for _, conn in conns:
                conn.close()
            calls.append(returned - called)
            late_ok += [sent - returned for _, sent, status in answers
                        if sent >= returned and status == 200]  # fmt: skip
            for name in ("a", "b"):
                mine = [(sent, status) for node, sent, status in answers if node == name]
                refused = [sent for sent, status in mine if status in (401, 403)]
                if not refused:
                    sys.exit(f"node {name} never refused {victim.certificate.serial}")
                if any(status not in (200, 401, 403) for _, status in mine):
                    sys.exit(f"node {name} answered {sorted({s for _, s in mine})}")
                first[name].append(min(refused) - called)
                served = [sent for sent, status in mine if status == 200 and sent >= called]
                last[name].append(max(served, default=called) - called)
    finally:
        revoker.stdin.close()
        revoker.wait(10)
    worst = max(late_ok, default=0.0)
    print(f"\n## Revocation through node A, refused on both nodes ({len(victims)} certificates; "
          f"2 connections per node asking whoami/ in a loop)\n")  # fmt: skip
    print("| measured from the start of the revoke call on node A | p50 | max |")
    print("|---|---|---|")
    print(f"| the revoke call returns (commit, announcement) | {ms(pct(calls, 0.5))} "
          f"| {ms(max(calls))} |")  # fmt: skip
    for name in ("a", "b"):
        print(f"| node {name.upper()}: the last request still served (200) was sent at "
              f"| {ms(pct(last[name], 0.5))} | {ms(max(last[name]))} |")  # fmt: skip
        print(f"| node {name.upper()}: the first refusal was sent at "
              f"| {ms(pct(first[name], 0.5))} | {ms(max(first[name]))} |")  # fmt: skip
    verdict = "met" if worst <= BOUND else "NOT met"
    print(f"\n- requests sent after the revoke call returned and still served: {len(late_ok)} "
          f"(bound: refused by every worker of both nodes within {ms(BOUND)} of the return: "
          f"{verdict})")  # fmt: skip
    if worst > BOUND:
        sys.exit(f"a revoked certificate was still served {ms(worst)} after the revoke")
    return {"worst": worst}


def check_accept_race(args, a: Node, b: Node, requester: Desk, maker: Desk) -> None:
    from rfq.models import Trade

    creator, quoter = Conn(a, requester), Conn(b, maker)
    takers = [Conn(node, requester) for node in (a, b) for _ in range(4)]
    outcomes: dict[int, int] = {}
    try:
        for _ in range(args.races):
            rfq = ok(*creator.call("POST", API + "rfqs/", ONE_LEG)[:2], 201, "create on A")
            path = f"{API}rfqs/{rfq['id']}/"
            quote = ok(*quoter.call("POST", path + "quotes/", TWO_WAY)[:2], 201, "quote on B")
            barrier = threading.Barrier(len(takers))
            statuses: list[tuple[int, bytes]] = []
            lock = threading.Lock()

            def accept(conn: Connection, quote_id=quote["id"], path=path, barrier=barrier,
                       lock=lock, statuses=statuses) -> None:  # fmt: skip
                barrier.wait()
                status, data, _ = conn.call(
                    "POST", path + "accept/", {"quote_id": quote_id, "side": "buy"}
                )
                with lock:
                    statuses.append((status, data))

            threads = [threading.Thread(target=accept, args=(conn,)) for conn in takers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wins = [s for s, _ in statuses if s == 201]
            for status, data in statuses:
                outcomes[status] = outcomes.get(status, 0) + 1
                if status not in (201, 409) or (status == 409 and b'"code"' not in data):
                    sys.exit(f"accept answered {status}: {data[:300]!r}")
            trades = Trade.objects.filter(rfq_id=rfq["id"]).count()
            if len(wins) != 1 or trades != 1:
                sys.exit(f"RFQ {rfq['id']}: {len(wins)} accepts won, {trades} trades")
    finally:
        for conn in (creator, quoter, *takers):
            conn.close()
    print(f"\n## One accept race spread over both nodes ({args.races} RFQs, {len(takers)} "
          f"accepts each, 4 per node, released together)\n")  # fmt: skip
    print(f"- answers: {', '.join(f'{n} answers {s}' for s, n in sorted(outcomes.items()))}; "
          f"one trade per RFQ in the database: yes")  # fmt: skip


def check_feed(args, a: Node, b: Node, requester: Desk, maker: Desk) -> None:
    from rfq.events import events_latest

    start = events_latest()
    seen: list[tuple[int, str, str]] = []  # (seq, type, rfq id)
    stop = threading.Event()
    poller = Conn(b, maker)

    def follow() -> None:
        since = start
        while not stop.is_set():
            status, data, _ = poller.call("GET", f"{API}events/?since={since}&wait=20")
            doc = ok(status, data, 200, "events on B")
            for event in doc["events"]:
                rfq_id = event["data"].get("rfq", {}).get("id", "")
                seen.append((event["seq"], event["type"], rfq_id))
            since = doc["next_since"]

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    time.sleep(0.3)
    one_at_a_time: list[str] = []
    creator = Conn(a, requester)
    for _ in range(args.feed_rfqs):
        one_at_a_time.append(
            ok(*creator.call("POST", API + "rfqs/", ONE_LEG)[:2], 201, "create on A")["id"]
        )
    creator.close()
    concurrent: list[str] = []
    lock = threading.Lock()

    def create_on(node: Node) -> None:
        conn = Conn(node, requester)
        for _ in range(args.feed_rfqs // 2):
            rfq_id = ok(*conn.call("POST", API + "rfqs/", ONE_LEG)[:2], 201, "create")["id"]
            with lock:
                concurrent.append(rfq_id)
        conn.close()

    writers = [threading.Thread(target=create_on, args=(node,)) for node in (a, b)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    wanted = set(one_at_a_time) | set(concurrent)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if wanted <= {rfq for _, kind, rfq in seen if kind == "rfq.created"}:
            break
        time.sleep(0.05)
    stop.set()
    # A full re-read of the feed, after the fact, from the same starting point.
    reader, reread, since = Conn(b, maker), [], start
    while True:
        doc = ok(*reader.call("GET", f"{API}events/?since={since}&limit=500")[:2], 200, "re-read")
        if not doc["events"]:
            break
        reread += [(e["seq"], e["type"], e["data"].get("rfq", {}).get("id", ""))
                   for e in doc["events"]]  # fmt: skip
        since = doc["next_since"]
    reader.close()
    snapshot = list(seen)
    created = [rfq for _, kind, rfq in snapshot if kind == "rfq.created"]
    seqs = [seq for seq, _, _ in snapshot]
    problems = []
    if missing := wanted - set(created):
        problems.append(f"{len(missing)} RFQs never reached the follower")
    if len(created) != len(set(created)):
        problems.append("an RFQ arrived twice")
    if any(later <= earlier for earlier, later in itertools.pairwise(seqs)):
        problems.append("seq went down or repeated")
    if [rfq for rfq in created if rfq in set(one_at_a_time)] != one_at_a_time:
        problems.append("node A's one-at-a-time RFQs arrived out of order")
    if snapshot != reread[: len(snapshot)]:
        problems.append("the follower's view differs from the full re-read (it skipped one)")
    print(f"\n## The maker's feed on node B ({len(one_at_a_time)} RFQs created one at a time "
          f"through node A, then {len(concurrent)} through both nodes at once)\n")  # fmt: skip
    print(f"- the follower saw {len(snapshot)} events, seq {seqs[0]}…{seqs[-1]}, every RFQ once, "
          f"seq rising, node A's in creation order, identical to a full re-read: "
          f"{'yes' if not problems else 'NO: ' + '; '.join(problems)}")  # fmt: skip
    if problems:
        sys.exit("; ".join(problems))


# --- throughput -----------------------------------------------------------------------------


def throughput(args, nodes: list[Node], requester: Desk, maker: Desk, targets: list) -> None:
    secs, conns, warm = args.seconds, args.connections, args.warmup
    rows = [
        ("trivial DRF view, certificate auth", f"{API}bench/auth/", requester, {}),
        ("`GET rfqs/?limit=50`", f"{API}rfqs/?limit=50", requester, {}),
        ("`POST rfqs/`", f"{API}rfqs/", requester,
         {"method": "POST", "body": json.dumps(ONE_LEG), "ok": [201]}),
        ("`POST rfqs/{id}/quotes/`", None, maker,
         {"method": "POST", "body": json.dumps(TWO_WAY), "ok": [201]}),
    ]  # fmt: skip
    root = nodes[0].files["root"]
    pinned = "each node pinned to one CPU" if args.pin else "not pinned"
    print(f"\n## Throughput: one node, then two at once ({conns} connections per node, closed "
          f"loop, {secs:g} s per row after {warm:g} s warm-up; {pinned})\n")  # fmt: skip
    print("| request | 1 node req/s | p99 | 2 nodes req/s (A + B) | p99 (A, B) | 2 ÷ 1 | errors |")
    print("|---|---|---|---|---|---|---|")
    for label, path, who, options in rows:
        results = []
        for active in (nodes[:1], nodes):
            procs = []
            for node in active:
                if path is None:  # quotes: the open RFQs in turn, through this node
                    urls = [f"{node.base()}{API}rfqs/{rfq.pk}/quotes/" for rfq in targets]
                    url, extra = urls[0], {"urls": urls}
                else:
                    url, extra = node.base() + path, {}
                script = _common.ROOT / "bench" / "keepalive.js"
                opts = json.dumps({**options, **extra, "warmup": warm})
                procs.append(subprocess.Popen(
                    ["node", str(script), url, str(secs), str(conns), str(who.cert),
                     str(who.key), str(root), opts], stdout=subprocess.PIPE, text=True,
                ))  # fmt: skip
            results.append([json.loads(proc.communicate()[0]) for proc in procs])
        one, two = results
        rate1, rate2 = one[0]["rps"], sum(r["rps"] for r in two)
        errors = sum(r["errors"] for r in (*one, *two))
        print(f"| {label} | {rate1:,.0f} | {one[0]['p99']:.1f} ms | {rate2:,.0f} "
              f"({two[0]['rps']:,.0f} + {two[1]['rps']:,.0f}) "
              f"| {two[0]['p99']:.1f}, {two[1]['p99']:.1f} ms | {rate2 / rate1:.2f} x "
              f"| {errors} |", flush=True)  # fmt: skip


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    if sys.argv[1:] == ["--revoker"]:
        _common.configure({})
        return revoker_main()
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--seconds", type=float, default=10, help="per load row")
    parser.add_argument("--warmup", type=float, default=2, help="seconds before each load row")
    parser.add_argument("--connections", type=int, default=16, help="per node")
    parser.add_argument("--revocations", type=int, default=20)
    parser.add_argument("--races", type=int, default=20)
    parser.add_argument("--feed-rfqs", type=int, default=100)
    parser.add_argument("--quote-rfqs", type=int, default=50)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("this bench makes network namespaces and veth pairs: run it as root")
    _common.require("node", "nginx", "openssl", "redis-server", "ip")
    if args.pin and shutil.which("taskset") is None:
        sys.exit("--pin needs taskset (util-linux)")
    if args.pin and (os.cpu_count() or 1) < 2:
        sys.exit("pinning a node per CPU needs two CPUs: use --no-pin")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="keyline-bench-scaleout-"))
    workdir.chmod(0o711)
    redis_sock = workdir / "redis.sock"
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(redis_sock), "--unixsocketperm",
         "700", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        if redis_sock.exists():
            break
        time.sleep(0.05)
    redis_url = f"unix://{redis_sock}?db=0"
    _common.reset_postgres(args.database_url)
    addresses = [f"{subnet}.2" for subnet in NODES.values()]
    env = _common.bench_env(
        args.database_url,
        str(workdir / "ca"),
        redis_url,
        DJANGO_SETTINGS_MODULE="bench_settings",
        DJANGO_ALLOWED_HOSTS=",".join(["127.0.0.1", *addresses]),
        KEYLINE_TERMINATOR_SECRET=TERMINATOR_SECRET,
        KEYLINE_API_RATE_SCALE="100000",
        PYTHONPATH=f"{_common.ROOT / 'bench'}:{_common.ROOT}",
    )
    _common.configure(env)
    nodes: list[Node] = []
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
        bench_rfq.instruments()
        client_firm = bench_rfq.firm(1, "Bench Client Ltd", Firm.Role.CLIENT)
        requester = bench_rfq.desk(client_firm, "bench-requester", workdir)
        maker = bench_rfq.desk(
            bench_rfq.firm(2, "Bench LP Ltd", Firm.Role.LIQUIDITY_PROVIDER), "bench-maker", workdir
        )
        victims = [bench_rfq.desk(client_firm, f"bench-victim-{i}", workdir)
                   for i in range(args.revocations)]  # fmt: skip
        server = server_certificate_issue(
            dns_names=["localhost"], ip_addresses=addresses, actor=actor
        )
        crl_publish(actor=actor)
        files = {"root": workdir / "root.pem", "server": workdir / "server.pem",
                 "server_key": workdir / "server.key"}  # fmt: skip
        files["root"].write_text(server.root_pem)
        files["server"].write_text(server.certificate.pem + server.chain_pem)
        files["server_key"].write_bytes(server.private_key_pem)
        call_command("chain_audit", stdout=open(os.devnull, "w"))  # noqa: SIM115 - the set-up's

        cpus = (0, 1) if args.pin else (None, None)
        nodes = [Node(name, cpu, env, workdir, files)
                 for name, cpu in zip(NODES, cpus, strict=True)]  # fmt: skip
        for node in nodes:
            node.make_namespace()
            node.start_servers(chainer=node.name == "a")
        for node in nodes:
            node.wait_ready(requester)
        a, b = nodes
        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; two nodes (A {a.address}, B {b.address}), each: "
              f"{version} (1 worker), gunicorn -w 2 sync + events gthread 32, celery worker; "
              f"{'A on CPU 0, B on CPU 1' if args.pin else 'not pinned'}; "
              f"PostgreSQL and Redis (unix sockets) shared")  # fmt: skip

        check_revocation(args, a, b, victims)
        check_accept_race(args, a, b, requester, maker)
        check_feed(args, a, b, requester, maker)
        targets = bench_rfq.create_rfqs(requester, args.quote_rfqs, expires_in=600)
        throughput(args, nodes, requester, maker, targets)
        bench_rfq.audit_lag_report()
        print(f"\nload average {os.getloadavg()[0]:.2f} at the end; "
              f"{time.monotonic() - started:.0f} s in all")  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
        from django.db import connections

        connections.close_all()
        _common.reset_postgres(args.database_url, create=False)
        # This process's own near-cache subscribers would report the Redis going away.
        logging.getLogger("kernel.nearcache").setLevel(logging.CRITICAL)
        redis_proc.terminate()
        redis_proc.wait(10)
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
