"""Shared fixtures. The CA is created once per test session (per xdist worker) in a temporary
directory, before any test transaction, so every test sees it and none can alter it for the
next one."""

import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from kernel.audit import Actor, audit_chain
from pki.conf import pki_settings
from tests import session_ca
from tests.factories import FirmFactory, ParticipantFactory
from tests.platform import platform  # noqa: F401 - fixture
from tests.servers import app_server, ocsp_server, terminator  # noqa: F401 - fixtures

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def pytest_sessionfinish(session, exitstatus) -> None:
    """bin/test brings up everything the tests need (PostgreSQL, Redis, nginx, Chromium), so
    there a skip means a test did not run that should have: it fails the run."""
    if os.environ.get("KEYLINE_FORBID_SKIPS") != "1" or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(
            f"KEYLINE_FORBID_SKIPS: {len(skipped)} test(s) skipped; nothing may be skipped here:",
            red=True,
        )
        for report in skipped[:20]:
            reporter.write_line(f"  {report.nodeid}: {report.longrepr}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def ca_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ca")
    settings.KEYLINE_CA_DIR = str(path)
    pki_settings.cache_clear()
    return path


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker, ca_dir):
    from pki.services import ca_init

    with django_db_blocker.unblock():
        ca_init(actor=Actor.system("test session"))
        # What the chainer does on a running platform: the session's records are chained, so
        # the health of a test sees only the tail that test made.
        audit_chain()
        session_ca.remember()
    return


@pytest.fixture
def cas(db):
    """The active CAs. A transactional test flushes the database; the session's CA rows are
    then restored (their key files never left the CA directory)."""
    return session_ca.restore()


# Pub/sub channels belong to the Redis server, not to a database: each test process (an xdist
# worker) gets a namespace of its own (kernel.redis.channel), and the servers and workers it
# starts inherit it through the environment, so one process's forgets never reach another's
# memory and a test that counts queries sees only its own.
REDIS_NAMESPACE = f"test-{os.getpid()}"
os.environ["KEYLINE_REDIS_NAMESPACE"] = REDIS_NAMESPACE
settings.KEYLINE_REDIS_NAMESPACE = REDIS_NAMESPACE


@pytest.fixture(autouse=True)
def _fresh_reference_data():
    """Processes keep instruments and liquidity providers in memory, forgotten when a change
    commits; a test's rows are rolled back instead, so each test starts from none."""
    from rfq.listing import renderings_reset
    from rfq.reference import reference_reset

    reference_reset()
    renderings_reset()
    yield
    reference_reset()
    renderings_reset()


@pytest.fixture(autouse=True)
def _fresh_ocsp_context():
    """The OCSP responder caches its view of the CA per process; tests change the CA."""
    from pki import ocsp

    ocsp.context_reset()
    yield
    ocsp.context_reset()


@pytest.fixture(autouse=True)
def _sqlite_audit_log_flushable(request):
    """A transactional test's teardown flushes every table. On SQLite the flush DELETEs, and
    the audit log's append-only trigger (kernel migration 0002) aborts it; PostgreSQL's
    TRUNCATE does not fire the trigger. So, on SQLite, the test's audit rows are removed after
    the test and before the flush, with the trigger put back."""
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(
        marker and marker.kwargs.get("transaction")
    )
    if transactional:
        request.getfixturevalue("transactional_db")  # set up first, so torn down after us
    yield
    if not transactional:
        return
    import importlib

    from django.db import connection

    if connection.vendor != "sqlite":
        return
    migration = importlib.import_module("kernel.migrations.0002_audit_chained_later")
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER IF EXISTS portal_auditrecord_no_delete")
        cursor.execute("DELETE FROM portal_auditrecord")
        cursor.execute(next(sql for sql in migration.SQLITE if "no_delete" in sql))


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("test")


@pytest.fixture
def firm(db, cas):
    return FirmFactory()


@pytest.fixture
def participant(db, firm):
    return ParticipantFactory(firm=firm)


@pytest.fixture
def issue(system_actor):
    """Submit a CSR and sign it: ``issue(participant, csr_bytes) -> Certificate``."""
    from pki.services import certificate_issue, csr_submit

    def _issue(participant, csr: bytes, **kwargs):
        request = csr_submit(participant=participant, data=csr, actor=system_actor)
        return certificate_issue(request=request, actor=system_actor, **kwargs)

    return _issue


def tool(name: str) -> str:
    """A console script installed in the project's virtualenv (pkilint's linters)."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else name


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, capture_output=True, text=True, check=False, env=os.environ, **kwargs
    )


def openssl_verify(
    leaf: str | Path,
    *,
    root: str | Path,
    untrusted: str | Path | None = None,
    purpose: str | None = None,
    strict: bool = False,
) -> tuple[int, str]:
    """`openssl verify` of ``leaf`` against the trust anchor ``root``: (exit code, output)."""
    args = ["-x509_strict"] if strict else []
    args += ["-CAfile", str(root)]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    if purpose is not None:
        args += ["-purpose", purpose]
    result = run(["openssl", "verify", *args, str(leaf)])
    return result.returncode, result.stdout + result.stderr


def key_matches_certificate(key: Path, certificate: Path) -> bool:
    """openssl's view: the private key file holds the certificate's public key."""
    key_pub = run(["openssl", "pkey", "-in", str(key), "-pubout"]).stdout
    cert_pub = run(["openssl", "x509", "-in", str(certificate), "-pubkey", "-noout"]).stdout
    return bool(key_pub) and key_pub == cert_pub


def refused(response, status: int, code: str) -> dict:
    """The API's error answer, checked: ``status``, the error shape with ``code`` (and nothing
    else), JSON, and the request id echoed in its header. Returns the body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code, body
    assert set(body) == {"code", "message", "request_id", "details"}
    assert response["X-Request-ID"] == body["request_id"]
    return body


def wait_subscribed(near, timeout: float = 5.0) -> None:
    """Wait until a process-memory cache (kernel.nearcache) is subscribed to its
    invalidations: its subscriber thread starts on first use and connects to Redis."""
    import time

    deadline = time.monotonic() + timeout
    while not near.subscribed:
        assert time.monotonic() < deadline, "the near cache's subscription did not come up"
        time.sleep(0.01)
