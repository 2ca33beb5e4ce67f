"""Revocation-to-effect time with a live Celery signing worker and a live OCSP responder.

    .venv/bin/python bench/bench_revocation.py             # 20 revocations, PostgreSQL, Redis
    .venv/bin/python bench/bench_revocation.py --count 20 --broker-db 9

Starts `celery -A keyline worker -Q signing,default -c 1 --pool solo` and the OCSP responder
(`uvicorn pki.ocsp_asgi:application --workers 2`) on the bench database, then, for each of
--count freshly issued certificates (the responder is first seen answering "good" and the
broker is idle), calls ``pki.revocation.certificate_revoke`` from this process
(CELERY_TASK_ALWAYS_EAGER=0, the same broker) and measures from just before the call to:

  (a) the app's trust decision (pki.trust.certificate_decide, cached as trusted before)
      refusing the certificate, asked right after the call returns;
  (b) the OCSP responder answering "revoked" over HTTP (POST, no nonce), polled every 5 ms;
  (c) <CA_DIR>/crl/bundle.pem on disk listing the serial (written by the worker's
      crl_publish_task), polled every 5 ms and parsed with cryptography.

Redis databases --redis-url (cache) and --broker-db (Celery) are flushed; the PostgreSQL
database is dropped and created; the worker and the responder are stopped at the end.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

POLL = 0.005
TIMEOUT = 30.0


def ocsp_request(cert_pem: str, issuer_pem: str) -> bytes:
    """What nginx sends: a SHA-1 CertID, no nonce."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp

    cert, issuer = (x509.load_pem_x509_certificate(p.encode()) for p in (cert_pem, issuer_pem))
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()  # noqa: S303
    return request.public_bytes(serialization.Encoding.DER)


def ocsp_status(url: str, der: bytes) -> str:
    from cryptography.x509 import ocsp

    response = ocsp.load_der_ocsp_response(_common.ocsp_post(url, der))
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return response.certificate_status.name.lower()


def bundle_lists(path: Path, serial: int, issuer) -> bool:
    from cryptography import x509

    marker = b"-----BEGIN X509 CRL-----"
    for block in path.read_bytes().split(marker)[1:]:
        crl = x509.load_pem_x509_crl(marker + block)
        if crl.issuer == issuer:
            return crl.get_revoked_certificate_by_serial_number(serial) is not None
    return False


def broker_idle(broker) -> bool:
    """No task queued or being worked on (kombu's Redis transport: lists per queue, and
    acks_late tasks in the "unacked" hash until acknowledged)."""
    return not (broker.llen("signing") or broker.llen("default") or broker.hlen("unacked"))


def wait_for(condition, what: str, seconds: float = TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(POLL)


def revoke_once(participant, ca, url: str, bundle: Path) -> tuple[float, float, float]:
    from cryptography import x509

    from kernel.audit import Actor
    from pki.models import Certificate
    from pki.revocation import certificate_revoke
    from pki.trust import CERTIFICATE_REVOKED, certificate_decide, decision_cached

    cert = _common.issue(participant)
    der = ocsp_request(cert.pem, ca.certificate_pem)
    issuer = x509.load_pem_x509_certificate(ca.certificate_pem.encode()).subject
    for _ in range(3):  # pre-signed on issuance, then also in the responder's memory
        assert ocsp_status(url, der) == "good"
    assert certificate_decide(cert.fingerprint_sha256).ok  # the app's decision, cached

    started = time.perf_counter()
    certificate_revoke(certificate=cert, reason="keyCompromise", actor=Actor.system("bench"))
    assert certificate_decide(cert.fingerprint_sha256).code == CERTIFICATE_REVOKED
    committed = time.perf_counter() - started
    assert Certificate.objects.get(pk=cert.pk).status == Certificate.Status.REVOKED
    assert decision_cached(cert.fingerprint_sha256) is not None  # re-decided
    ocsp_at = crl_at = None
    seen = None
    while ocsp_at is None or crl_at is None:
        now = time.perf_counter() - started
        if now > TIMEOUT:
            sys.exit(f"serial {cert.serial}: not in effect after {TIMEOUT} s")
        if ocsp_at is None and ocsp_status(url, der) == "revoked":
            ocsp_at = time.perf_counter() - started
        if crl_at is None:
            stat = bundle.stat()
            if (stat.st_ino, stat.st_mtime_ns) != seen:
                seen = (stat.st_ino, stat.st_mtime_ns)
                if bundle_lists(bundle, cert.serial_int, issuer):
                    crl_at = time.perf_counter() - started
        time.sleep(POLL)
    return committed, ocsp_at, crl_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=_common.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=_common.DEFAULT_REDIS_URL)
    parser.add_argument("--broker-db", type=int, default=9, help="Redis database for Celery")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    _common.require("openssl")

    import redis

    workdir = Path(tempfile.mkdtemp(prefix="keyline-bench-revocation-"))
    ca_dir = workdir / "ca"
    broker_url = f"redis://127.0.0.1:6379/{args.broker_db}"
    postgres = args.database_url.startswith("postgres")
    if postgres:
        _common.reset_postgres(args.database_url)
    for url in (args.redis_url, broker_url):
        _common.flush_redis(url)
    env = _common.bench_env(
        args.database_url,
        str(ca_dir),
        args.redis_url,
        CELERY_BROKER_URL=broker_url,
        CELERY_TASK_ALWAYS_EAGER="0",
    )
    _common.configure(env)
    servers: list[subprocess.Popen] = []
    log = workdir / "servers.log"
    try:
        from kernel.audit import Actor
        from keyline.celery import app
        from pki import ocsp
        from pki.models import CertificateAuthority
        from pki.revocation import crl_publish

        participant = _common.prepare()
        crl_publish(actor=Actor.system("bench"))  # bundle.pem exists before the first revoke
        ocsp.presign()
        ca = CertificateAuthority.objects.get(kind="client", is_active=True)
        worker = [str(_common.VENV_BIN / "celery"), "-A", "keyline", "worker", "-Q",
                  "signing,default", "-c", "1", "--pool", "solo", "-l", "warning",
                  "--without-gossip", "--without-mingle"]  # fmt: skip
        servers.append(_common.start(worker, env, log))
        port = _common.free_port()
        servers.append(_common.start_uvicorn(env, port, log))
        url = f"http://127.0.0.1:{port}{_common.OCSP_PATH}"
        _common.wait_ocsp(url, b"", servers[1], log)
        wait_for(lambda: app.control.ping(timeout=0.5), "the Celery worker")

        broker = redis.Redis.from_url(broker_url)
        results = []
        for i in range(args.count):
            wait_for(lambda: broker_idle(broker), "the worker to go idle")
            results.append(revoke_once(participant, ca, url, ca_dir / "crl" / "bundle.pem"))
            a, b, c = results[-1]
            print(f"{i + 1:3}: committed {a * 1000:7.1f} ms  ocsp {b * 1000:7.1f} ms  "
                  f"crl {c * 1000:7.1f} ms", flush=True)  # fmt: skip
        print(f"\n{args.count} revocations, times from just before certificate_revoke()")
        print("| effect | min | median | max |")
        print("|---|---|---|---|")
        names = ["(a) the app's trust decision refuses", "(b) OCSP answers revoked",
                 "(c) bundle.pem lists the serial"]  # fmt: skip
        for name, times in zip(names, zip(*results, strict=True), strict=True):
            low, mid, high = (1000 * f(times) for f in (min, statistics.median, max))
            print(f"| {name} | {low:.1f} ms | {mid:.1f} ms | {high:.1f} ms |")
    finally:
        for proc in servers:
            _common.stop(proc)
        from django.db import connections

        connections.close_all()
        if postgres:
            _common.reset_postgres(args.database_url, create=False)
        for url in (args.redis_url, broker_url):
            _common.flush_redis(url)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
