"""A real Celery worker on the Redis broker publishes CRLs and re-signs OCSP answers after a
revocation; web code only enqueues. The worker consumes a queue of its own, so parallel test
processes sharing the broker cannot take each other's tasks."""

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from django.conf import settings
from django.db import connection

from kernel.models import AuditRecord
from keyline.celery import app
from pki import ocsp
from pki.models import RevocationList
from pki.revocation import certificate_revoke, crl_health, crl_last_failure, crl_publish
from tests.keys import ec_key, make_csr
from tests.servers import ROOT, server_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not settings.REDIS_URL,
        reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL): the worker is a separate "
        "process that must see the test's rows and take tasks from a real broker",
    ),
]


def _reroute() -> None:
    """Celery builds its router from task_routes once per process: make it read them again."""
    app.amqp.flush_routes()
    app.amqp.__dict__.pop("router", None)


@pytest.fixture
def start_worker(tmp_path):
    """Start ``celery worker`` in its own process (extra settings through its environment),
    on a queue of its own; the test process then sends real tasks to it through Redis."""
    procs = []
    saved = {key: app.conf[key] for key in ("task_always_eager", "task_routes")}

    def start(**env: str) -> Path:
        queue = f"signing-test-{uuid.uuid4().hex[:10]}"
        log_path = tmp_path / f"{queue}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "keyline", "worker",
                    "-Q", queue, "-c", "1", "--pool", "solo", "-l", "INFO",
                    "--without-mingle", "--without-gossip", "--without-heartbeat",
                ],
                cwd=ROOT,
                env=server_env(
                    CELERY_TASK_ALWAYS_EAGER="0",
                    CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
                    **env,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 30
        while "ready." not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        app.conf.task_always_eager = False
        app.conf.task_routes = {"pki.tasks.*": {"queue": queue}}
        _reroute()
        return log_path

    yield start
    app.conf.update(saved)
    _reroute()
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=15)


def _wait_for(predicate, timeout: float, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out; worker log:\n{log.read_text()}")


def _bundle_lists(path: Path, serial: int) -> bool:
    if not path.exists():
        return False
    for block in path.read_bytes().split(b"-----END X509 CRL-----")[:-1]:
        crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            return True
    return False


def test_worker_publishes_crl_and_resigns_ocsp_after_revocation(
    start_worker, cas, participant, issue, system_actor
):
    worker = start_worker()
    crl_publish(actor=system_actor)
    baseline = RevocationList.objects.filter(ca=cas["client"]).latest().number
    cert = issue(participant, make_csr(ec_key()))
    bundle = Path(settings.KEYLINE_CA_DIR) / "crl" / "bundle.pem"

    started = time.monotonic()
    certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)
    _wait_for(lambda: _bundle_lists(bundle, cert.serial_int), 15, worker)
    elapsed = time.monotonic() - started

    latest = RevocationList.objects.filter(ca=cas["client"]).latest()
    assert latest.number == baseline + 1
    assert AuditRecord.objects.filter(
        event="crl.published", actor_label="celery crl_publish_task", target_id=cas["client"].pk
    ).exists()
    assert "pki.tasks.crl_publish_task" in worker.read_text()  # published there, not here
    ctx = ocsp.context()
    key = ocsp._cache_key(ctx, ocsp.PRESIGNED_HASH, cert.serial_int)
    cached = _wait_for(lambda: ocsp._store().get(key), 15, worker)
    answer = x509.ocsp.load_der_ocsp_response(ocsp.Answer.unpack(cached).body)
    assert answer.certificate_status == x509.ocsp.OCSPCertStatus.REVOKED
    assert elapsed < 10, elapsed


def test_worker_retries_a_failed_publish_and_health_recovers(
    start_worker, cas, participant, issue, system_actor, tmp_path
):
    # A reload command that fails the first time and then succeeds.
    marker = tmp_path / "failed-once"
    script = tmp_path / "reload.sh"
    script.write_text(f'#!/bin/sh\n[ -e "{marker}" ] && exit 0\ntouch "{marker}"\nexit 1\n')
    script.chmod(0o755)
    crl_publish(actor=system_actor)
    baseline = RevocationList.objects.filter(ca=cas["client"]).latest().number
    cert = issue(participant, make_csr(ec_key()))
    worker = start_worker(KEYLINE_CRL_RELOAD_COMMAND=str(script))

    certificate_revoke(certificate=cert, reason="superseded", actor=system_actor)
    _wait_for(lambda: "Retry in" in worker.read_text(), 15, worker)
    assert marker.exists()
    assert crl_last_failure()["stage"] == "reload"  # recorded by the worker, seen here
    # The retry publishes again (a new number) and this time the reload succeeds.
    _wait_for(
        lambda: RevocationList.objects.filter(ca=cas["client"]).latest().number == baseline + 2,
        20,
        worker,
    )
    _wait_for(lambda: crl_last_failure() is None, 15, worker)
    published_by_worker = AuditRecord.objects.filter(
        event="crl.published", actor_label="celery crl_publish_task", target_id=cas["client"].pk
    )
    assert published_by_worker.count() == 2
    assert [row.status for row in crl_health()] == ["ok", "ok", "ok"]
    bundle = Path(settings.KEYLINE_CA_DIR) / "crl" / "bundle.pem"
    assert _bundle_lists(bundle, cert.serial_int)
