"""The trader's client (./client) against the platform ``bin/run`` starts, through its nginx,
gunicorn and signing worker, installed as a user installs it (``pip install ./client``): the
demo trader nw-fay goes from the enrollment token bin/run wrote to an authenticated RFQ in
three commands; renewal is refused outside the window, then (the firm's window widened by
``manage.py est_policy``, as an officer would on the firm's page) renews, the old certificate
is revoked as superseded on the new one's first use, and OCSP, the CRL and the API agree; a
reused key, a revoked certificate and a spent token are refused with nothing issued. RFC
7030's own shell flows (curl with application/pkcs10, openssl reading the PKCS#7 answers) are
run too, as docs/pki.md prints them."""

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.platform import Platform, platform_test, run

pytestmark = platform_test

ROOT = Path(__file__).resolve().parents[2]
TRADER = "nw-fay"
NORTHWIND_LEI = "984500NWASSETMGT0185"


@pytest.fixture(scope="module")
def keyline(tmp_path_factory):
    """``keyline``, installed from ./client with pip into a directory of its own (a copy of
    the package, so that building it leaves the checkout clean), run as its console script."""
    work = tmp_path_factory.mktemp("client")
    shutil.copytree(
        ROOT / "client", work / "src", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    target = work / "installed"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    done = run([*pip, str(work / "src")], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def _run(*args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        extra = ["--config", str(config)] if config else []
        return run([str(target / "bin" / "keyline"), *extra, *args], env=env, timeout=120)

    _run.target = target  # type: ignore[attr-defined]
    _run.env = env  # type: ignore[attr-defined]
    return _run


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout.strip()


def refused(result: subprocess.CompletedProcess, *codes: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    line = result.stderr.strip().splitlines()[-1]
    assert any(line.startswith(f"error: {code}: ") for code in codes), line
    return line


def serial_of(path: Path) -> str:
    return format(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, "x")


def ocsp_status(platform: Platform, chain: Path, serial: str) -> str:
    issuer = chain.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    issuer_file = chain.with_name("issuer.pem")
    issuer_file.write_text(issuer)
    out = run(
        ["openssl", "ocsp", "-issuer", str(issuer_file), "-serial", f"0x{serial}",
         "-url", f"{platform.pki_url}/ocsp", "-CAfile", str(platform.root_pem), "-resp_text"],
        timeout=60,
    )  # fmt: skip
    assert "Response verify OK" in out.stderr + out.stdout, out.stderr + out.stdout
    return out.stdout


def test_the_client_is_installable_on_its_own_and_imports_no_django(keyline):
    check = run(
        [sys.executable, "-c", "import sys, keyline_client.cli, keyline_client.venue; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'kernel', 'pki')))"],
        env=keyline.env,
        timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "[]"


def test_a_new_trader_enrolls_renews_and_trades(platform: Platform, keyline, tmp_path):
    config = platform.demo / f"{TRADER}.toml"
    token_file = platform.demo / f"{TRADER}.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    home = platform.demo / TRADER

    # --- the README's three commands --------------------------------------------------------
    enrolled = ok(keyline("enroll", "--token", token, config=config))
    assert enrolled.startswith(f"enrolled {TRADER}: certificate ")
    assert oct((home / "key.pem").stat().st_mode & 0o777) == "0o600"
    assert not (home / "key.pem.pending").exists()
    first = serial_of(home / "cert.pem")
    first_cert = x509.load_pem_x509_certificate((home / "cert.pem").read_bytes())
    me = ok(keyline("whoami", config=config))
    assert me.startswith(f"{TRADER} (requester) of Northwind Asset Management LLP")
    assert first in me
    rfq = ok(keyline("rfq", "create", "BTC-PERPETUAL", "buy", "1", config=config))
    rfq_id = rfq.split()[0]
    assert rfq.endswith("open: buy BTC-PERPETUAL, quantity 1"), rfq
    as_json = json.loads(ok(keyline("--json", "rfq", "cancel", rfq_id, config=config)))
    assert as_json["id"] == rfq_id
    assert as_json["state"] == "cancelled"

    # --- the spent token: refused, nothing issued -----------------------------------------------
    again = tmp_path / "again.toml"
    again.write_text(config.read_text().replace(str(home), str(tmp_path / "other")))
    refused(keyline("enroll", "--token", token, config=again), "EST_TOKEN_SPENT")
    assert not (tmp_path / "other" / "cert.pem").exists()

    # --- renewal: outside the window (the default, the last 33 %), refused ---------------------
    platform.manage("est_policy", NORTHWIND_LEI, "--renewal-window-percent", "33")
    not_due = ok(keyline("renew", config=config))
    assert not_due.startswith("not due:")
    refused(keyline("renew", "--force", config=config), "EST_OUTSIDE_RENEWAL_WINDOW")
    assert serial_of(home / "cert.pem") == first

    # --- a reused key, with RFC 7030's own shell flow (openssl and curl) ------------------------
    csr = tmp_path / "reused.b64"
    made = run(
        ["sh", "-c", f"openssl req -new -key {home}/key.pem -subj /CN={TRADER} -outform DER "
         f"| base64 > {csr}"],
        timeout=30,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    platform.manage("est_policy", NORTHWIND_LEI, "--renewal-window-percent", "100")
    curl = platform.curl(
        "--cacert", str(platform.root_pem), "--cert", str(home / "cert.pem"),
        "--key", str(home / "key.pem"), "-H", "Content-Type: application/pkcs10",
        "--data-binary", f"@{csr}", "-w", "\n%{http_code}",
        f"{platform.api_url}/.well-known/est/simplereenroll",
    )  # fmt: skip
    body, status = curl.stdout.rsplit("\n", 1)
    assert status == "409", curl.stdout
    assert body.startswith("CSR_KEY_REUSED: "), curl.stdout

    # --- renewal inside the window: a new key, the old certificate superseded on first use -------
    renewed = ok(keyline("renew", "--force", config=config))
    second = serial_of(home / "cert.pem")
    assert renewed.startswith(f"renewed: certificate {second}")
    assert second != first
    assert "Cert Status: good" in ocsp_status(platform, home / "chain.pem", first)
    assert second in ok(keyline("whoami", config=config))  # the first use
    old = ocsp_status(platform, home / "chain.pem", first)
    assert "Cert Status: revoked" in old
    assert "superseded" in old
    with platform.api((home / "cert.pem", home / "key.pem")) as api:
        assert api.get("/api/v1/whoami/").status_code == 200
    status = platform.curl(f"{platform.pki_url}/status/{first}/", "-H", "Accept: application/json")
    assert json.loads(status.stdout)["revocation_reason"] == "superseded"
    # The CRL the certificate names (its distribution point), as openssl reads it, once the
    # worker has republished it.
    crl_dp = first_cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    crl_url = crl_dp.value[0].full_name[0].value
    in_crl = first.upper().zfill(len(first) + len(first) % 2)  # openssl prints whole octets
    deadline, listed = time.monotonic() + 30, ""
    while time.monotonic() < deadline and in_crl not in listed:
        crl = tmp_path / "client.crl"
        platform.curl("-o", str(crl), crl_url)
        listed = run(
            ["openssl", "crl", "-inform", "DER", "-in", str(crl), "-noout", "-text"]
        ).stdout
        time.sleep(0.5)
    entry = listed.split(f"Serial Number: {in_crl}")[1].split("Serial Number:")[0]
    assert "Superseded" in entry, entry

    # --- a revoked certificate cannot renew ------------------------------------------------------
    platform.manage("revoke_cert", "--serial", second, "--reason", "key_compromise")
    refused(
        keyline("renew", "--force", config=config),
        "CLIENT_CERTIFICATE_UNVERIFIED",  # nginx's CRL, reloaded after the revocation
        "CERTIFICATE_REVOKED",  # the app's own check, if nginx has not reloaded yet
    )
    assert serial_of(home / "cert.pem") == second


def test_rfc7030_shell_flows_read_the_answers_with_openssl(platform: Platform, tmp_path):
    cacerts = platform.curl(
        "--cacert", str(platform.root_pem), f"{platform.api_url}/.well-known/est/cacerts"
    )
    (tmp_path / "cacerts.b64").write_text(cacerts.stdout)
    pkcs7 = "openssl pkcs7 -inform DER -print_certs -noout"
    printed = run(["sh", "-c", f"base64 -d {tmp_path}/cacerts.b64 | {pkcs7}"], timeout=30)
    assert "Keyline RFQ Root CA" in printed.stdout
    assert "Client Issuing CA" in printed.stdout
    attrs = platform.curl(
        "--cacert", str(platform.root_pem), f"{platform.api_url}/.well-known/est/csrattrs"
    )
    parsed = run(
        ["sh", "-c", f"echo '{attrs.stdout}' | base64 -d | openssl asn1parse -inform DER"],
        timeout=30,
    )
    assert "ecdsa-with-SHA256" in parsed.stdout
    assert "prime256v1" in parsed.stdout
    assert base64.b64decode(attrs.stdout)


def test_the_renewal_daemon_renews_when_due_and_runs_the_reload_hook(
    platform: Platform, keyline, tmp_path
):
    """``keyline renew --daemon`` with a policy that makes renewal due at once (renew_before
    = 1, the firm's window 100 %): it renews, replaces the files, runs the reload hook, logs
    what it did, and keeps going."""
    platform.manage("est_policy", NORTHWIND_LEI, "--renewal-window-percent", "100")
    token = platform.manage("est_token", TRADER).strip().splitlines()[-1]
    reloaded = tmp_path / "reloaded"
    config = tmp_path / "client.toml"
    config.write_text(
        f'api_url = "{platform.api_url}"\nca_file = "{platform.root_pem}"\n'
        f'trader_id = "{TRADER}"\nkey_file = "keys/key.pem"\ncert_file = "keys/cert.pem"\n'
        f'chain_file = "keys/chain.pem"\nrenew_before = 1.0\n'
        f"reload_command = \"sh -c 'echo reloaded >> {reloaded}'\"\n"
    )
    ok(keyline("enroll", "--replace", "--token", token, config=config))
    first = serial_of(tmp_path / "keys" / "cert.pem")
    daemon = subprocess.Popen(
        [str(keyline.target / "bin" / "keyline"), "--config", str(config), "renew", "--daemon",
         "--interval", "2"],
        env=keyline.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_lines(reloaded)) < 2:
            time.sleep(0.5)
    finally:
        daemon.terminate()
        _, log = daemon.communicate(timeout=30)
    assert len(_lines(reloaded)) >= 2, log
    assert log.count("renewed: certificate") >= 2, log
    assert serial_of(tmp_path / "keys" / "cert.pem") != first
    assert not (tmp_path / "keys" / "key.pem.pending").exists()
    assert oct((tmp_path / "keys" / "key.pem").stat().st_mode & 0o777) == "0o600"
    old = ocsp_status(platform, tmp_path / "keys" / "chain.pem", first)
    assert "superseded" in old


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _demo_config(platform: Platform, trader: str, directory: Path) -> Path:
    """A client configuration for a demo trader whose key and certificate bin/run wrote."""
    config = directory / f"{trader}.toml"
    config.write_text(
        f'api_url = "{platform.api_url}"\nca_file = "{platform.root_pem}"\n'
        f'trader_id = "{trader}"\nkey_file = "{platform.demo / (trader + ".key")}"\n'
        f'cert_file = "{platform.demo / (trader + ".pem")}"\n'
        f'chain_file = "{directory / (trader + "-chain.pem")}"\n'
    )
    return config


def test_one_command_per_step_from_rfq_to_trade(platform: Platform, keyline, tmp_path):
    """The requester asks, the maker sees it in the feed, quotes, the requester accepts: each
    step one command, each taking the id the previous one printed first."""
    alice = _demo_config(platform, "nw-alice", tmp_path)
    carol = _demo_config(platform, "hl-carol", tmp_path)
    with platform.api("hl-carol") as api:
        since = api.get("/api/v1/events/", params={"since": 0, "wait": 0}).json()["next_since"]

    rfq_id = ok(keyline("rfq", "create", "BTC-PERPETUAL", "buy", "1", config=alice)).split()[0]
    seen = ok(keyline("rfq", "watch", "--since", str(since), "--count", "1", config=carol))
    assert seen.split()[1:] == ["rfq.created", rfq_id], seen
    quoted = ok(
        keyline("rfq", "quote", rfq_id, "--bid", "60000", "--ask", "60010", "--size", "1",
                config=carol)
    )  # fmt: skip
    quote_id = quoted.split()[0]
    assert quoted.endswith(f"bid 60000 / ask 60010 on {rfq_id}"), quoted
    traded = json.loads(
        ok(keyline("--json", "rfq", "accept", rfq_id, quote_id, "buy", config=alice))
    )
    assert (traded["rfq_id"], traded["side"], traded["price"]) == (rfq_id, "buy", "60010")
    refused(keyline("rfq", "accept", rfq_id, quote_id, "buy", config=alice), "RFQ_NOT_OPEN")
    refused(keyline("rfq", "cancel", "not-an-id", config=alice), "UNKNOWN_RFQ")


def test_est_is_rate_limited_per_address(platform: Platform):
    """The one part of the API server open without a certificate answers a flood from one
    address with 429 and an EST-shaped refusal, and recovers."""
    context = ssl.create_default_context(cafile=str(platform.root_pem))
    with httpx.Client(base_url=platform.api_url, verify=context, timeout=30) as http:
        answers = [http.get("/.well-known/est/cacerts") for _ in range(40)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited, [a.status_code for a in answers]
        assert {a.status_code for a in answers} == {200, 429}
        assert limited[0].text.startswith("EST_RATE_LIMITED: ")
        assert limited[0].headers["retry-after"] == "1"
        time.sleep(5)  # 5 a second: the bucket is empty again
        assert http.get("/.well-known/est/cacerts").status_code == 200
