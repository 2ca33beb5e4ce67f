"""The README's first command: `bin/run` brings up the whole platform (gunicorn, the OCSP
responder, a Celery worker and beat, nginx) with demo data, answers whoami for a demo
certificate through mTLS, stops cleanly, and reuses its CA and data on the next run."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run
from tests.servers import NEEDS_NGINX, ROOT, free_port, user_env

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "nginx"], capture_output=True, check=False).returncode != 0,
    reason=NEEDS_NGINX,
)


def start(var: Path, ports: dict[str, int]) -> tuple[subprocess.Popen, Path]:
    """bin/run as a user starts it on a fresh machine: none of the test settings, no
    PostgreSQL or Redis (SQLite, a database cache and the file-system broker)."""
    env = user_env(KEYLINE_VAR_DIR=str(var), **{k: str(v) for k, v in ports.items()})
    log = var.parent / f"run-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(ROOT / "bin" / "run")],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 180
    while "Keyline RFQ is running" not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return proc, log


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the script and everything it ran
    assert proc.wait(timeout=30) == 0
    # Everything it started ran in its session: nothing may be left.
    deadline = time.monotonic() + 10
    while leftovers := run(["ps", "-o", "pid=,args=", "-s", str(proc.pid)]).stdout.strip():
        assert time.monotonic() < deadline, leftovers
        time.sleep(0.1)


def whoami(var: Path, port: int, trader: str = "nw-alice") -> dict:
    demo = var / "demo"
    result = run(
        ["curl", "-sS", "--fail-with-body", "--cacert", str(demo / "root.pem"),
         "--cert", str(demo / f"{trader}.pem"), "--key", str(demo / f"{trader}.key"),
         f"https://127.0.0.1:{port}/api/v1/whoami/"],
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def curl_lines(printed: str) -> list[list[str]]:
    """The printed curl commands (a trailing backslash continues one), split as a shell would."""
    import shlex

    commands, current = [], ""
    for line in printed.splitlines():
        line = line.strip()
        if line.startswith("curl ") or current:
            current += " " + line.removesuffix("\\")
            if not line.endswith("\\"):
                commands.append(shlex.split(current))
                current = ""
    return commands


def test_bin_run_serves_the_platform_and_reuses_its_ca(tmp_path):
    var = tmp_path / "checkout-var"  # in a private directory, as in a home directory
    ports = {"API_PORT": free_port(), "PORTAL_PORT": free_port(), "PKI_PORT": free_port()}
    proc, log = start(var, ports)
    try:
        printed = log.read_text()
        # The printed curl lines work as printed: whoami, an RFQ, and the LP's event feed.
        whoami_line, rfq_lines, events_line = curl_lines(printed)
        result = run(whoami_line, timeout=30)
        assert json.loads(result.stdout).get("participant", {}).get("trader_id") == "nw-alice", (
            result.stdout
        )
        rfq = json.loads(run(rfq_lines, timeout=30).stdout)
        assert rfq["state"] == "open", rfq
        events = json.loads(run(events_line, timeout=30).stdout)["events"]
        assert rfq["id"] in {e["data"].get("rfq", {}).get("id") for e in events}, events
        assert whoami(var, ports["API_PORT"], "hl-carol")["firm"]["role"] == "liquidity_provider"
        health = run(["curl", "-sS", f"http://127.0.0.1:{ports['PKI_PORT']}/pki/health/"])
        assert json.loads(health.stdout)["status"] == "ok", health.stdout
    finally:
        stop(proc)
    root = (var / "demo" / "root.pem").read_bytes()
    serial = whoami_serial = None
    proc, _ = start(var, ports)
    try:
        whoami_serial = whoami(var, ports["API_PORT"])["certificate"]["serial"]
        serial = run(["openssl", "x509", "-in", str(var / "demo" / "nw-alice.pem"), "-noout",
                      "-serial"]).stdout.split("=")[1].strip().lower()  # fmt: skip
    finally:
        stop(proc)
    assert (var / "demo" / "root.pem").read_bytes() == root  # the same CA
    assert whoami_serial == serial.lstrip("0")
