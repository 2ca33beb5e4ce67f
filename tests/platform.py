"""The platform a user starts: ``bin/run`` itself, driven from the outside.

One ``bin/run`` per test session (the ``platform`` fixture), in a private ``var/`` directory on
free ports, started as a user starts it on a fresh machine: none of the test session's
settings, so it brings up its own PostgreSQL cluster and Redis, migrations, the CA, demo data,
gunicorn pools, the OCSP responder, the Celery worker and beat, and nginx. Tests reach it only
as users do: through nginx (the browser, the API with real client certificates), ``bin/manage``
and the files it writes (``var/mail/``). Every test using it carries the ``xdist_group``
marker ``platform`` (``platform_test``), so under ``pytest -n --dist loadgroup`` they share one
worker and one platform.
"""

import email
import email.policy
import json
import os
import shlex
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, user_env

platform_test = pytest.mark.xdist_group("platform")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


@dataclass
class Platform:
    """A running ``bin/run``: its directory, ports and public URLs."""

    var: Path
    ports: dict[str, int]
    proc: subprocess.Popen | None = None
    log: Path | None = None
    printed: str = ""
    _mail_seen: set[str] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        return user_env(KEYLINE_VAR_DIR=str(self.var), **{k: str(v) for k, v in self.ports.items()})

    @property
    def portal_url(self) -> str:
        return f"https://localhost:{self.ports['PORTAL_PORT']}"  # as bin/run (bin/_env.sh)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['API_PORT']}"

    @property
    def pki_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['PKI_PORT']}/pki"

    @property
    def demo(self) -> Path:
        return self.var / "demo"

    @property
    def root_pem(self) -> Path:
        return self.demo / "root.pem"

    # --- life --------------------------------------------------------------------------------
    def start(self, timeout: float = 240) -> None:
        self.log = self.var.parent / f"run-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [str(ROOT / "bin" / "run")],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while "Keyline RFQ is running" not in (text := self.log.read_text()):
            assert self.proc.poll() is None, f"bin/run exited:\n{text}"
            assert time.monotonic() < deadline, f"bin/run did not come up:\n{text}"
            time.sleep(0.2)
        while not text.rstrip().endswith("Press Ctrl-C to stop."):
            time.sleep(0.05)
            text = self.log.read_text()
        self.printed = text

    def stop(self) -> None:
        """Ctrl-C: SIGINT to the script and everything it ran; all of it must be gone."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        assert self.proc.wait(timeout=60) == 0, self.log.read_text() if self.log else ""
        deadline = time.monotonic() + 15
        while leftovers := run(["ps", "-o", "pid=,args=", "-s", str(self.proc.pid)]).stdout.strip():
            assert time.monotonic() < deadline, leftovers
            time.sleep(0.1)
        # Its own PostgreSQL and Redis (daemons in sessions of their own) stopped too.
        assert not (self.var / "postgres" / "postmaster.pid").exists()
        assert not (self.var / "run" / "redis.sock").exists()
        self.proc = None

    # --- what users do -------------------------------------------------------------------------
    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """``bin/manage ARGS`` as a user types it next to the running platform."""
        result = run([str(ROOT / "bin" / "manage"), *args], env=self.env, cwd=ROOT, timeout=timeout)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + (result.stderr if not check else "")

    def totp(self, officer: str) -> str:
        return self.manage("demo_totp", officer).strip().splitlines()[-1]

    def officer_password(self) -> str:
        return (self.demo / "officer-password.txt").read_text().strip()

    def api(self, trader: str | tuple[Path, Path], **kwargs) -> httpx.Client:
        """An HTTPS client of the mTLS API holding a demo trader's certificate (or any
        (certificate, key) pair), trusting the platform's root."""
        cert, key = (
            (self.demo / f"{trader}.pem", self.demo / f"{trader}.key")
            if isinstance(trader, str)
            else trader
        )
        context = ssl.create_default_context(cafile=str(self.root_pem))
        context.load_cert_chain(str(cert), str(key))
        return httpx.Client(base_url=self.api_url, verify=context, timeout=30, **kwargs)

    def portal(self, **kwargs) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.root_pem))
        return httpx.Client(base_url=self.portal_url, verify=context, timeout=30, **kwargs)

    def curl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["curl", "-sS", *args], timeout=timeout)

    def new_mail(self) -> list[EmailMessage]:
        """The e-mails written to var/mail/ since the last call, oldest first."""
        messages = []
        directory = self.var / "mail"
        for path in sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime_ns):
            if path.name in self._mail_seen:
                continue
            self._mail_seen.add(path.name)
            # The file backend writes several messages to one file, each after a line of dashes.
            for chunk in path.read_text().split("\n" + "-" * 79 + "\n"):
                if chunk.strip():
                    messages.append(
                        email.message_from_string(chunk.lstrip(), policy=email.policy.default)
                    )
        return messages

    def printed_curl_lines(self) -> list[list[str]]:
        """The curl commands bin/run printed, split as a shell would."""
        return [
            shlex.split(line.strip())
            for line in self.printed.splitlines()
            if line.strip().startswith("curl ")
        ]


def whoami(platform: Platform, trader: str = "nw-alice") -> dict:
    with platform.api(trader) as client:
        response = client.get("/api/v1/whoami/")
    assert response.status_code == 200, response.text
    return json.loads(response.text)


def new_platform(tmp_path_factory) -> Platform:
    base = tmp_path_factory.mktemp("platform")
    ports = {"API_PORT": free_port(), "PORTAL_PORT": free_port(), "PKI_PORT": free_port()}
    return Platform(var=base / "var", ports=ports)


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Iterator[Platform]:
    """One ``bin/run`` for the session's platform tests."""
    running = new_platform(tmp_path_factory)
    running.start()
    yield running
    running.stop()
