"""Real servers for tests: gunicorn serving ``keyline.wsgi`` (the OCSP hot path included) on a
loopback port, pointed at the test database, the session's CA directory and Redis.

A server process can only see committed rows, so tests that use one are transactional and
need PostgreSQL (pytest-django's SQLite test database lives in the test process's memory).
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests import session_ca

ROOT = Path(__file__).resolve().parent.parent
NEEDS_POSTGRES = "needs PostgreSQL (DATABASE_URL): the server process must see the test's rows"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database as a URL for another process: over TCP, or over the unix socket of
    the private cluster bin/test starts (``?host=/dir``)."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    socket_dir = db.get("OPTIONS", {}).get("host")
    if socket_dir and not db.get("HOST"):
        return f"postgres://{user}{password}@/{db['NAME']}?host={socket_dir}"
    host = db.get("HOST") or "127.0.0.1"
    return f"postgres://{user}{password}@{host}:{db.get('PORT') or 5432}/{db['NAME']}"


OUR_PREFIXES = ("DJANGO_", "KEYLINE_", "CELERY_", "DATABASE_", "REDIS_")


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of the test session's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
    return env | extra


def server_env(**extra: str) -> dict[str, str]:
    """The environment of a server or worker process that shares this test session's state."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "keyline.settings",
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
    """gunicorn serving ``keyline.wsgi`` (the whole site, the bare OCSP path included), on a
    loopback port, and also on ``socket`` (a unix socket, as behind nginx) when given."""

    name = "gunicorn"
    ready_path = "/pki/health/"

    def __init__(
        self, workers: int = 1, socket: Path | None = None, threads: int = 1, **env: str
    ) -> None:
        self.socket = socket
        self.threads = threads
        super().__init__(workers, **env)

    def command(self) -> list[str]:
        binds = ["--bind", f"127.0.0.1:{self.port}"]
        if self.socket is not None:
            binds += ["--bind", f"unix:{self.socket}"]
        return [
            sys.executable, "-m", "gunicorn", "keyline.wsgi:application", *binds,
            "--workers", str(self.workers), "--timeout", "30", "--no-control-socket",
            "--access-logfile", "-",
            *(["--worker-class", "gthread", "--threads", str(self.threads)]
              if self.threads > 1 else []),
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
    """gunicorn with ``keyline.wsgi`` on a loopback port for the whole session. Like a web or
    responder host, it has the OCSP key passphrase but not the CA passphrase."""
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)
    server = Gunicorn(KEYLINE_CA_PASSPHRASE="", KEYLINE_CA_PASSPHRASE_FILE="")
    yield server
    server.stop()


class Nginx:
    """Our own nginx (never the system one) from ``render_nginx_conf``, on loopback ports."""

    def __init__(
        self,
        directory: Path,
        *,
        app_socket: Path,
        server: dict[str, Path],
        events_socket: Path | None = None,
    ) -> None:
        from django.core.management import call_command

        self.prefix = directory
        self.conf = directory / "nginx.conf"
        self.api_port, self.portal_port, self.pki_port = (free_port() for _ in range(3))
        call_command(
            "render_nginx_conf",
            "--out", str(self.conf),
            "--app-upstream", f"unix:{app_socket}",
            "--events-upstream", f"unix:{events_socket or app_socket}",
            "--server-cert", str(server["fullchain"]),
            "--server-key", str(server["key"]),
            "--api-listen", f"127.0.0.1:{self.api_port}",
            "--portal-listen", f"127.0.0.1:{self.portal_port}",
            "--pki-listen", f"127.0.0.1:{self.pki_port}",
            "--workers", "1",
            stdout=io.StringIO(),
        )  # fmt: skip
        self.api = f"https://127.0.0.1:{self.api_port}"
        self._nginx()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.api_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def reload_command(self) -> str:
        return f"nginx -p {self.prefix} -c {self.conf} -s reload"

    def _nginx(self, *args: str) -> None:
        result = subprocess.run(
            ["nginx", "-p", str(self.prefix), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nginx {' '.join(args)}: {result.stderr}")

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text()

    def stop(self) -> None:
        self._nginx("-s", "quit")


NEEDS_NGINX = "nginx is not installed (apt-get install nginx); .ci/run installs it"


@pytest.fixture(scope="session")
def terminator(django_db_setup, django_db_blocker, tmp_path_factory):
    """nginx (mTLS API, portal, PKI) in front of gunicorn on a unix socket, for the session.
    The app has the OCSP key passphrase and the terminator secret, not the CA passphrase."""
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)
    if shutil.which("nginx") is None:
        pytest.skip(NEEDS_NGINX)
    from kernel.audit import Actor
    from pki.revocation import crl_publish
    from pki.services import server_certificate_issue

    directory = tmp_path_factory.mktemp("terminator")
    with django_db_blocker.unblock():
        session_ca.restore()  # a transactional test may have flushed it
        issued = server_certificate_issue(
            dns_names=["localhost"], ip_addresses=["127.0.0.1"], actor=Actor.system("tests")
        )
        crl_publish(actor=Actor.system("tests"))
    server = {"fullchain": directory / "server-fullchain.pem", "key": directory / "server.key"}
    server["fullchain"].write_text(issued.certificate.pem + issued.chain_pem)
    server["key"].write_bytes(issued.private_key_pem)
    server["key"].chmod(0o600)
    # nginx's workers run as an unprivileged user: the socket lives in a directory they may
    # traverse (pytest's own are 0700), as deploy/ does with a group.
    run_dir = Path(tempfile.mkdtemp(prefix="keyline-run-"))
    run_dir.chmod(0o711)
    app_socket, events_socket = run_dir / "gunicorn.sock", run_dir / "events.sock"
    no_ca = {"KEYLINE_CA_PASSPHRASE": "", "KEYLINE_CA_PASSPHRASE_FILE": ""}
    # As deployed: sync workers for the API, a pool with threads for the event feed.
    app = Gunicorn(workers=2, socket=app_socket, **no_ca)
    events = Gunicorn(workers=1, threads=8, socket=events_socket, **no_ca)
    nginx = Nginx(
        directory / "nginx", app_socket=app_socket, events_socket=events_socket, server=server
    )
    nginx.app, nginx.events = app, events
    nginx.root_pem = directory / "root.pem"
    nginx.root_pem.write_text(issued.root_pem)
    yield nginx
    nginx.stop()
    app.stop()
    events.stop()
    shutil.rmtree(run_dir, ignore_errors=True)
