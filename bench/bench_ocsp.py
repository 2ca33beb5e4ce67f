"""OCSP responses per second and latency over HTTP on loopback: our responder (gunicorn, 2 sync
workers, answering from the Redis pre-signed cache) beside `openssl ocsp` (a C responder that
signs every response live with the same delegate key), both driven by ApacheBench.

    .venv/bin/python bench/bench_ocsp.py                   # in a network namespace of its own
    .venv/bin/python bench/bench_ocsp.py --requests 20000 --concurrency 8
    .venv/bin/python bench/bench_ocsp.py --no-netns        # on the host's loopback

By default the whole bench runs in a network namespace made for the run (``unshare --net``,
its own loopback): on the host's loopback, after many short connections, openssl's responder
stalls on ephemeral ports (ab: "apr_pollset_poll: The timeout specified has expired") and the
comparison is lost. Inside, PostgreSQL is reached on its unix socket and a Redis of the run's
own listens on the namespace's loopback.

Each run: `ab -l -c C -n N` with an OCSP request without nonce (`openssl ocsp -no_nonce
-reqout`), POST for both and GET (URL-escaped base64) for ours; then a request with a nonce,
which ours signs live. Before measuring, every responder's answer is parsed with cryptography
and must be a successful response for the leaf's serial, status good, signed by the delegate;
ours must be byte-identical to the pre-signed response in Redis. The PostgreSQL database and
the Redis database are wiped; the servers started here are stopped at the end.
"""

import argparse
import base64
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import _common


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def check_answer(body: bytes, serial: int, signer_pem: bytes) -> None:
    """A successful response for ``serial``, status good, signed by the delegate."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp

    response = ocsp.load_der_ocsp_response(body)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, response.response_status
    assert response.serial_number == serial, (hex(response.serial_number), hex(serial))
    assert response.certificate_status == ocsp.OCSPCertStatus.GOOD, response.certificate_status
    signer = x509.load_pem_x509_certificate(signer_pem)
    signer.public_key().verify(
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),
    )


def ab(url: str, requests: int, concurrency: int, workdir: Path, body: Path | None = None):
    """Run ApacheBench; returns (requests/s, p50 ms, p99 ms, failed, non-2xx)."""
    percentiles = workdir / "ab.csv"
    args = ["ab", "-l", "-q", "-c", str(concurrency), "-n", str(requests), "-e", str(percentiles)]
    if body is not None:
        args += ["-p", str(body), "-T", "application/ocsp-request"]
    run = subprocess.run([*args, url], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{' '.join(args)} {url} failed:\n{run.stdout[-1000:]}{run.stderr}")
    out = run.stdout

    def field(name: str) -> float:
        match = re.search(rf"^{name}:\s+([\d.]+)", out, re.M)
        return float(match.group(1)) if match else 0.0

    with open(percentiles) as handle:
        rows = {int(p): float(ms) for p, ms in list(csv.reader(handle))[1:]}
    rate = field("Requests per second")
    return rate, rows[50], rows[99], int(field("Failed requests")), int(field("Non-2xx responses"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=_common.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=_common.DEFAULT_REDIS_URL)
    parser.add_argument("--requests", type=int, default=20000, help="per ab run")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-netns", action="store_true", help="run on the host's network")
    parser.add_argument(
        "--pg-socket-dir", default="/var/run/postgresql", help="PostgreSQL's socket, in a netns"
    )
    args = parser.parse_args()
    _common.require("ab", "openssl", "redis-server", "unshare", "ip")
    if not args.no_netns and os.environ.get(NETNS_MARK) != "1":
        # Again, inside a network namespace of its own (a user namespace too when not root).
        unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
        os.environ[NETNS_MARK] = "1"
        os.execvp(unshare[0], [*unshare, "--", sys.executable, *sys.argv])  # noqa: S606 - argv as given
    redis_proc = None
    if os.environ.get(NETNS_MARK) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        name = args.database_url.rsplit("/", 1)[1]
        args.database_url = f"postgres://postgres@/{args.pg_socket_dir}/{name}"
        redis_port = _common.free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL,
        )  # fmt: skip
        args.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(redis_port), "ping"],
                              capture_output=True).returncode == 0:  # fmt: skip
                break
            time.sleep(0.05)
        print("in a network namespace of its own (PostgreSQL by unix socket, Redis of the run)")
    try:
        run(args)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()


NETNS_MARK = "KEYLINE_BENCH_IN_NETNS"


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="keyline-bench-ocsp-"))
    ca_dir = workdir / "ca"
    if args.database_url.startswith("postgres"):
        _common.reset_postgres(args.database_url)
    _common.flush_redis(args.redis_url)
    env = _common.bench_env(args.database_url, str(ca_dir), args.redis_url)
    _common.configure(env)
    servers: list[subprocess.Popen] = []
    try:
        from pki import ocsp
        from pki.keystore import ocsp_responder_key_file
        from pki.models import CertificateAuthority
        from pki.selectors import ocsp_responder_current

        leaf = _common.issue(_common.prepare())
        (workdir / "leaf.pem").write_text(leaf.pem)
        ca = CertificateAuthority.objects.get(kind="client", is_active=True)
        (workdir / "client-ca.pem").write_text(ca.certificate_pem)
        presigned = ocsp.presign()
        cached = ocsp._store().get(ocsp._cache_key(ocsp.context(), "sha1", leaf.serial_int))
        assert cached is not None, "presign() cached nothing: is REDIS_URL set?"

        # The delegate's certificate and its key, decrypted for openssl.
        delegate = ocsp_responder_current()
        signer_pem = (ca_dir / "certs" / "ocsp-responder.pem").read_bytes()
        key = ca_dir / ocsp_responder_key_file(delegate.serial)
        responder_key = workdir / "responder.key"
        openssl("pkey", "-in", str(key), "-passin", f"pass:{_common.OCSP_PASSPHRASE}", "-out",
                str(responder_key))  # fmt: skip
        index = workdir / "index.txt"
        index.write_text(
            f"V\t{leaf.not_after:%y%m%d%H%M%SZ}\t\t{leaf.serial.upper()}\tunknown\t{leaf.subject}\n"
        )
        cert_args = ["-issuer", str(workdir / "client-ca.pem"), "-cert", str(workdir / "leaf.pem")]
        req, req_nonce = workdir / "req.der", workdir / "req-nonce.der"
        openssl("ocsp", *cert_args, "-no_nonce", "-reqout", str(req))
        openssl("ocsp", *cert_args, "-reqout", str(req_nonce))
        get_tail = quote(base64.b64encode(req.read_bytes()).decode(), safe="")

        asgi_port, ours_port, ossl_port = (_common.free_port() for _ in range(3))
        log = workdir / "servers.log"
        servers.append(_common.start_uvicorn(env, asgi_port, log))
        servers.append(_common.start_gunicorn(env, ours_port, log))
        signer = str(ca_dir / "certs" / "ocsp-responder.pem")
        issuer = str(workdir / "client-ca.pem")
        responder = ["openssl", "ocsp", "-index", str(index), "-rsigner", signer,
                     "-rkey", str(responder_key), "-CA", issuer]  # fmt: skip
        servers.append(_common.start([*responder, "-port", str(ossl_port)], env, log))
        # One openssl process: with -multi 2, OpenSSL 3.0.19 stops answering after ~2,000
        # requests (ab: apr_pollset_poll timeout), so it cannot be measured here.

        asgi = f"http://127.0.0.1:{asgi_port}{_common.OCSP_PATH}"
        ours = f"http://127.0.0.1:{ours_port}{_common.OCSP_PATH}"
        theirs = f"http://127.0.0.1:{ossl_port}/"
        responder = "keyline responder (uvicorn -w 2, pki.ocsp_asgi)"
        keyline, openssl_ocsp = "keyline site (gunicorn -w 2, keyline.wsgi)", "openssl ocsp"
        for url, proc in zip((asgi, ours, theirs), servers, strict=True):
            for der in (req.read_bytes(), req_nonce.read_bytes()):
                check_answer(_common.wait_ocsp(url, der, proc, log), leaf.serial_int, signer_pem)
        answer = _common.ocsp_post(ours, req.read_bytes())
        assert answer == ocsp.Answer.unpack(cached).body, "ours did not answer from the cache"
        assert _common.ocsp_post(asgi, req.read_bytes()) == answer, "the responder differs"
        with urllib.request.urlopen(f"{asgi}/{get_tail}") as response:  # noqa: S310
            assert response.read() == answer, "GET answered differently from POST"
        with urllib.request.urlopen(f"{ours}/{get_tail}") as response:  # noqa: S310
            assert response.read() == answer, "GET answered differently from POST"

        runs = [
            (responder, "POST", asgi, req, args.requests),
            (responder, "GET", f"{asgi}/{get_tail}", None, args.requests),
            (responder, "POST, nonce (live signing)", asgi, req_nonce, args.requests // 4),
            (keyline, "POST", ours, req, args.requests),
            (keyline, "GET", f"{ours}/{get_tail}", None, args.requests),
            (keyline, "POST, nonce (live signing)", ours, req_nonce, args.requests // 4),
            (openssl_ocsp, "POST", theirs, req, args.requests),
            (openssl_ocsp, "POST, nonce", theirs, req_nonce, args.requests),
        ]
        print(f"leaf serial {leaf.serial}; presigned {presigned} responses; "
              f"ab -l -c {args.concurrency}, warm-up 500 requests per run")  # fmt: skip
        print("| server | method | requests | req/s | p50 | p99 | failed | non-2xx |")
        print("|---|---|---|---|---|---|---|---|")
        for server, method, url, body, count in runs:
            ab(url, 500, args.concurrency, workdir, body)  # warm-up
            rate, p50, p99, failed, non2xx = ab(url, count, args.concurrency, workdir, body)
            print(f"| {server} | {method} | {count:,} | {rate:,.0f} | {p50:.2f} ms "
                  f"| {p99:.2f} ms | {failed} | {non2xx} |", flush=True)  # fmt: skip
    finally:
        for proc in servers:
            _common.stop(proc)
        from django.db import connections

        connections.close_all()
        if args.database_url.startswith("postgres"):
            _common.reset_postgres(args.database_url, create=False)
        _common.flush_redis(args.redis_url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
