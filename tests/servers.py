"""Real servers for tests: gunicorn serving ``portal.wsgi`` (the OCSP hot path included) on a
loopback port, pointed at the test database, the session's CA directory and Redis.

A server process can only see committed rows, so tests that use one are transactional and
need PostgreSQL (pytest-django's SQLite test database lives in the test process's memory).
"""

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
NEEDS_POSTGRES = "needs PostgreSQL (DATABASE_URL): the server process must see the test's rows"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{user}{password}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server or worker process that shares this test session's state."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": database_url(),
            "DATABASE_CONN_MAX_AGE": "0",
            "KEYLINE_CA_DIR": settings.KEYLINE_CA_DIR,
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback test URL
                return
        except urllib.error.HTTPError as error:
            error.close()
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up in {timeout} s")


class Server:
    """A server process on a free loopback port, logging to a file beside the CA directory."""

    name = "server"
    ready_path = "/"

    def command(self) -> list[str]:
        raise NotImplementedError

    def __init__(self, workers: int = 1, **env: str) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(  # noqa: SIM115 - closed in stop()
            Path(settings.KEYLINE_CA_DIR).parent / f"{self.name}-{self.port}.log", "w+"
        )
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=server_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}{self.ready_path}", self.proc)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Gunicorn(Server):
    """gunicorn serving ``portal.wsgi`` (the whole site, the bare OCSP path included)."""

    name = "gunicorn"
    ready_path = "/pki/health/"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "portal.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers),
            "--timeout", "30", "--no-control-socket",
        ]  # fmt: skip


class Uvicorn(Server):
    """The production OCSP responder (``pki.ocsp_asgi``) under uvicorn."""

    name = "uvicorn"
    ready_path = "/pki/ocsp"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "pki.ocsp_asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--http", "httptools", "--loop", "uvloop", "--no-access-log",
        ]  # fmt: skip


@pytest.fixture(scope="session")
def ocsp_server(django_db_setup, django_db_blocker):
    """The ASGI OCSP responder, holding the OCSP key passphrase but not the CA passphrase."""
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)
    server = Uvicorn(KEYLINE_CA_PASSPHRASE="", KEYLINE_CA_PASSPHRASE_FILE="")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app_server(django_db_setup, django_db_blocker):
    """gunicorn with ``portal.wsgi`` on a loopback port for the whole session. Like a web or
    responder host, it has the OCSP key passphrase but not the CA passphrase."""
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)
    server = Gunicorn(KEYLINE_CA_PASSPHRASE="", KEYLINE_CA_PASSPHRASE_FILE="")
    yield server
    server.stop()
