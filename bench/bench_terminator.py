"""The nginx mTLS terminator: full and resumed handshakes, the CRL's cost, and keep-alive API
requests beside nginx's own ceiling, in one run.

    .venv/bin/python bench/bench_terminator.py            # PostgreSQL database keyline_bench
    .venv/bin/python bench/bench_terminator.py --seconds 10 --crl-sizes 1000,10000,100000

Sets up a throwaway CA, a trader certificate, gunicorn (2 workers, unix socket, bench settings
with two trivial views) and our nginx (render_nginx_conf, 1 worker, plus a `location = /__ok {
return 200 }` on the API and portal servers for nginx's ceiling). Then:

- handshakes: `openssl s_time -new` (full) and `-reuse` (resumed), TLS 1.3, for mutual TLS
  on the API server and plain TLS on the portal server, fetching /__ok;
- the same full mTLS handshakes with 1k/10k/100k revoked entries in the CRL bundle, and with
  `ssl_ocsp` against our responder (cache warm);
- keep-alive requests (bench/keepalive.js, Node, 32 connections): /__ok, whoami, and the same
  trivial DRF view with and without the certificate authentication.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

REVOKED_AT = "2026-01-01T00:00:00Z"


def s_time(port: int, seconds: int, files: dict, *, client: bool, reuse: bool) -> float:
    """Connections per second (wall clock) from `openssl s_time`."""
    args = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(seconds),
            "-CAfile", str(files["root"]), "-www", "/__ok", "-tls1_3",
            "-reuse" if reuse else "-new"]  # fmt: skip
    if client:
        args += ["-cert", str(files["cert"]), "-key", str(files["key"])]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+) connections in (\d+) real seconds", out)
    if match is None:
        sys.exit(f"s_time said:\n{out}")
    return int(match.group(1)) / int(match.group(2))


def keepalive(url: str, seconds: int, files: dict) -> dict:
    out = subprocess.run(
        ["node", str(_common.ROOT / "bench" / "keepalive.js"), url, str(seconds), "32",
         str(files["cert"]), str(files["key"]), str(files["root"])],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def render(conf: Path, prefix: Path, ports: dict, run_dir: Path, files: dict, ocsp: bool):
    from django.core.management import call_command

    args = ["render_nginx_conf", "--out", str(conf), "--prefix", str(prefix),
            "--app-upstream", f"unix:{run_dir / 'gunicorn.sock'}",
            "--server-cert", str(files["server"]), "--server-key", str(files["server_key"]),
            "--api-listen", f"127.0.0.1:{ports['api']}",
            "--portal-listen", f"127.0.0.1:{ports['portal']}",
            "--pki-listen", f"127.0.0.1:{ports['pki']}", "--workers", "1"]  # fmt: skip
    if ocsp:
        args.append("--ocsp")
    call_command(*args, stdout=open("/dev/null", "w"))  # noqa: SIM115
    text = conf.read_text()
    ok = 'location = /__ok { default_type text/plain; return 200 "ok"; }\n        '
    # The API server is the one that asks for a certificate; the portal one serves /static/.
    anchor = "ssl_verify_client optional;\n"
    if text.count(anchor) != 1:
        sys.exit(f"cannot find the mTLS server in {conf}")
    text = text.replace(anchor, anchor + "        " + ok, 1)
    text = text.replace("location /static/ {", ok + "location /static/ {", 1)
    conf.write_text(text)


def nginx(prefix: Path, conf: Path, *args: str) -> None:
    subprocess.run(["nginx", "-p", str(prefix), "-c", str(conf), *args], check=True)


def add_revoked(template, count: int) -> None:
    sys.path.insert(0, str(_common.ROOT / "bench"))
    import bench_crl

    bench_crl.add_revoked(template, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=_common.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=_common.DEFAULT_REDIS_URL)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--crl-sizes", default="1000,10000,100000")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    _common.require("node", "nginx", "openssl")

    workdir = Path(tempfile.mkdtemp(prefix="keyline-bench-terminator-"))
    run_dir = Path(tempfile.mkdtemp(prefix="keyline-bench-run-"))
    run_dir.chmod(0o711)
    _common.reset_postgres(args.database_url)
    _common.flush_redis(args.redis_url)
    env = _common.bench_env(
        args.database_url,
        str(workdir / "ca"),
        args.redis_url,
        DJANGO_SETTINGS_MODULE="bench_settings",
        KEYLINE_TERMINATOR_SECRET="bench-terminator-secret-0123456789abcdef",  # noqa: S106
        # One certificate makes every request: its per-certificate limits (50 reads/s) would
        # be what is measured.
        KEYLINE_API_RATE_SCALE="100000",
        PYTHONPATH=f"{_common.ROOT / 'bench'}:{_common.ROOT}",
    )
    sys.path.insert(0, str(_common.ROOT / "bench"))
    _common.configure(env)
    prefix, conf = workdir / "nginx", workdir / "nginx" / "nginx.conf"
    procs: list[subprocess.Popen] = []
    nginx_up = False
    try:
        from kernel.audit import Actor
        from pki.revocation import crl_publish
        from pki.services import server_certificate_issue

        participant = _common.prepare()
        cert, key_pem = _common.issue_with_key(participant)
        server = server_certificate_issue(
            dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor=Actor.system("bench")
        )
        crl_publish(actor=Actor.system("bench"))
        files = {name: workdir / f"{name}.pem" for name in ("cert", "key", "root", "server")}
        files["server_key"] = workdir / "server.key"
        files["cert"].write_text(cert.pem)
        files["key"].write_bytes(key_pem)
        files["root"].write_text(server.root_pem)
        files["server"].write_text(server.certificate.pem + server.chain_pem)
        files["server_key"].write_bytes(server.private_key_pem)

        log = workdir / "servers.log"
        procs.append(
            _common.start(
                [str(_common.VENV_BIN / "gunicorn"), "keyline.wsgi:application", "-w", "2",
                 "--bind", f"unix:{run_dir / 'gunicorn.sock'}", "--no-control-socket"],
                env, log,
            )
        )  # fmt: skip
        ports = {"api": _common.free_port(), "portal": _common.free_port(),
                 "pki": _common.free_port()}  # fmt: skip
        render(conf, prefix, ports, run_dir, files, ocsp=False)
        nginx(prefix, conf)
        nginx_up = True
        api = f"https://127.0.0.1:{ports['api']}"
        for _ in range(100):
            if keepalive(f"{api}/api/v1/whoami/", 1, files)["requests"]:
                break
            time.sleep(0.2)
        secs = args.seconds

        version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        print(f"{version}, 1 worker; gunicorn -w 2 on a unix socket; {secs} s per run")
        print("\n| handshakes (TLS 1.3, openssl s_time, 1 client) | connections/s |")
        print("|---|---|")
        for label, port, client, reuse in [
            ("plain TLS, full", ports["portal"], False, False),
            ("plain TLS, resumed", ports["portal"], False, True),
            ("mTLS, full", ports["api"], True, False),
            ("mTLS, resumed", ports["api"], True, True),
        ]:
            rate = s_time(port, secs, files, client=client, reuse=reuse)
            print(f"| {label} | {rate:,.0f} |", flush=True)

        print("\n| keep-alive, 32 connections (Node) | req/s | p50 | p99 | errors |")
        print("|---|---|---|---|---|")
        results = {}
        for label, path in [
            ("nginx `return 200` (mTLS server)", "/__ok"),
            ("`GET /api/v1/whoami/`", "/api/v1/whoami/"),
            ("trivial DRF view, no authentication", "/api/v1/bench/noauth/"),
            ("trivial DRF view, certificate authentication", "/api/v1/bench/auth/"),
        ]:
            r = results[path] = keepalive(api + path, secs, files)
            if not r["requests"]:
                sys.exit(f"{path}: no answer: {r}; see {log}")
            print(f"| {label} | {r['rps']:,.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms "
                  f"| {r['errors']} |", flush=True)  # fmt: skip
        ceiling = results["/__ok"]["rps"]
        plain, auth = results["/api/v1/bench/noauth/"]["rps"], results["/api/v1/bench/auth/"]
        whoami = results["/api/v1/whoami/"]["rps"]
        print(f"\nwhoami = {whoami / ceiling:.1%} of nginx's ceiling; authentication adds "
              f"{plain / auth['rps'] - 1:.1%} per request")  # fmt: skip

        print("\n| full mTLS handshakes with | connections/s |")
        print("|---|---|")
        have = 0
        for size in sorted(int(s) for s in args.crl_sizes.split(",")):
            add_revoked(cert, size - have)
            have = size
            crl_publish(actor=Actor.system("bench"))
            nginx(prefix, conf, "-s", "reload")
            time.sleep(1.0 + size / 100_000)  # old workers exit (≈0.5 s at 100k)
            rate = s_time(ports["api"], secs, files, client=True, reuse=False)
            print(f"| CRL bundle, {size:,} revoked entries | {rate:,.0f} |", flush=True)
        # ssl_ocsp with a warm cache (the CRL stays in place: nginx checks both)
        render(conf, prefix, ports, run_dir, files, ocsp=True)
        nginx(prefix, conf, "-s", "reload")
        time.sleep(2)
        keepalive(f"{api}/api/v1/whoami/", 1, files)  # warms ssl_ocsp_cache
        rate = s_time(ports["api"], secs, files, client=True, reuse=False)
        print(f"| `ssl_ocsp leaf` (cache warm) + the {have:,}-entry CRL | {rate:,.0f} |")
    finally:
        if nginx_up:
            subprocess.run(["nginx", "-p", str(prefix), "-c", str(conf), "-s", "quit"],
                           check=False)  # fmt: skip
        for proc in procs:
            _common.stop(proc)
        from django.db import connections

        connections.close_all()
        _common.reset_postgres(args.database_url, create=False)
        _common.flush_redis(args.redis_url)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
