"""The platform bin/run starts, from the outside: its files are private, the portal works
through nginx (styles, CSRF), login lockout counts the address nginx saw (and nothing a client
writes), hostile input through nginx is a JSON 4xx, 50 concurrent accepts make one trade, and
a certificate carries its CA's URLs whatever the environment of the process that signed it."""

import json
import re
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from tests.keys import ec_key, make_csr
from tests.platform import Platform, platform_test, run

pytestmark = platform_test

OTHER_USER = "nobody"


# --- files ---------------------------------------------------------------------------------------
def test_nothing_under_var_is_readable_by_another_local_user(platform: Platform):
    var = platform.var
    assert var.stat().st_mode & 0o077 == 0, oct(var.stat().st_mode)
    # As another account: var/ itself cannot be listed or traversed.
    seen = run(["runuser", "-u", OTHER_USER, "--", "find", str(var), "-readable"])
    assert seen.stdout.strip() in ("", str(var)), seen.stdout
    assert run(["runuser", "-u", OTHER_USER, "--", "cat", str(var / "secrets" / "ca-passphrase")]
               ).returncode != 0  # fmt: skip
    # And the secrets are private in themselves, should var/ ever be opened up.
    private = [
        *(var / "secrets").iterdir(),
        *(var / "ca" / "keys").iterdir(),
        *(var / "mail").iterdir(),
        var / "nginx" / "nginx.conf",
        var / "postgres",
        var / "redis",
        var / "run",
    ]
    for path in private:
        assert path.stat().st_mode & 0o077 == 0, f"{path}: {oct(path.stat().st_mode)}"


# --- the portal through nginx ------------------------------------------------------------------
def _login_page(client: httpx.Client) -> str:
    page = client.get("/accounts/login/")
    assert page.status_code == 200, page.text
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]


def _login(client: httpx.Client, platform: Platform, username: str, password: str, **headers):
    token = _login_page(client)
    return client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={
            "Origin": platform.portal_url,
            "Referer": f"{platform.portal_url}/accounts/login/",
            **headers,
        },
    )


def test_the_portal_is_styled_and_its_forms_post_through_nginx(platform: Platform):
    with platform.portal() as client:
        page = client.get("/")
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', page.text)[1]
        css = client.get(stylesheet)
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        # Named by content hash, so cached for good.
        assert re.search(r"\.[0-9a-f]{12}\.css$", stylesheet), stylesheet
        assert "immutable" in css.headers["cache-control"]
        # A form POST with the browser's Origin (scheme, host and port) passes the CSRF check.
        signed_in = _login(client, platform, "officer", platform.officer_password())
        assert signed_in.status_code == 302, signed_in.text[:500]
        # An officer's password alone leads to the second factor.
        landed = client.get(signed_in.headers["location"], follow_redirects=True)
        assert landed.url.path == "/accounts/verify/", landed.url
        # Swagger UI's own stylesheet is CSS too.
        docs = client.get("/developers/api/")
        swagger_css = re.search(r'href="(/static/[^"]*swagger-ui[^"]*\.css)"', docs.text)[1]
        assert client.get(swagger_css).headers["content-type"].startswith("text/css")


def _from(platform: Platform, address: str) -> httpx.Client:
    """A portal client whose connections come from ``address`` (a loopback alias)."""
    context = ssl.create_default_context(cafile=str(platform.root_pem))
    transport = httpx.HTTPTransport(verify=context, local_address=address)
    return httpx.Client(base_url=platform.portal_url, transport=transport, timeout=30)


def test_password_spraying_from_one_address_is_locked_out(platform: Platform):
    """12 user names, one wrong password each, from one address: the fifth failure locks the
    address (no user name failed twice). A client's forged address headers change nothing,
    and another address is not affected."""
    sprayer, bystander = "127.0.0.2", "127.0.0.3"
    try:
        statuses = []
        with _from(platform, sprayer) as client:
            for n in range(12):
                statuses.append(
                    _login(client, platform, f"spray-{n}", "wrong password 1").status_code
                )
            assert statuses[:4] == [200] * 4, statuses  # the form again, with its error
            assert statuses[4:] == [429] * 8, statuses  # locked out
            forged = {
                "X-Real-IP": "10.1.2.3",
                "X-Forwarded-For": "10.1.2.3",
                "Forwarded": "for=10.1.2.3",
            }
            assert (
                _login(client, platform, "spray-x", "wrong password 1", **forged).status_code == 429
            )
            # Even the right password, from that address.
            right = _login(client, platform, "officer", platform.officer_password())
            assert right.status_code == 429
        # The lockout is audited with the address nginx saw.
        audited = platform.manage(
            "shell", "-c",
            "from kernel.models import AuditRecord as A; import json; print(json.dumps([r.details"
            " for r in A.objects.filter(event='login.locked_out').order_by('id')]))",
        )  # fmt: skip
        lockouts = json.loads(audited.strip().splitlines()[-1])
        assert {(r["username"], r["address"]) for r in lockouts} >= {("spray-4", sprayer)}
        with _from(platform, bystander) as client:
            assert _login(client, platform, "spray-y", "wrong password 1").status_code == 200
            # Forging the sprayer's address from elsewhere does not lock this one either.
            forged = {"X-Real-IP": sprayer, "X-Forwarded-For": sprayer}
            assert (
                _login(client, platform, "spray-z", "wrong password 1", **forged).status_code == 200
            )
    finally:
        platform.manage("axes_reset_ip", sprayer)
        platform.manage("axes_reset_ip", bystander)


# --- hostile input through nginx ---------------------------------------------------------------
def _json_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"code", "message", "request_id", "details"}, body
    return body


@pytest.mark.parametrize("path", ["/api/v1/rfqs/", "/api/v1/quotes/cancel-all/"])
def test_deeply_nested_json_is_a_400_not_a_500(platform: Platform, path: str):
    with platform.api("nw-alice") as client:
        before = client.get("/api/v1/rfqs/").json()
        response = client.post(
            path, content=b"[" * 1000 + b"]" * 1000, headers={"Content-Type": "application/json"}
        )
        _json_error(response, 400)
        assert client.get("/api/v1/rfqs/").json() == before


def test_nginx_refusals_and_unknown_paths_answer_in_the_api_error_shape(platform: Platform):
    with platform.api("nw-alice") as client:
        too_large = client.post(
            "/api/v1/rfqs/", content=b"{" + b" " * 1_100_000 + b"}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert _json_error(too_large, 413)["code"] == "BODY_TOO_LARGE"
        bad_header = client.get("/api/v1/whoami/", headers={"X-Filler": "a" * 70_000})
        assert _json_error(bad_header, 400)["code"] == "BAD_REQUEST"
        for path in ("/api/v1/no-such-thing/", "/api/v2/", "/nowhere"):
            assert _json_error(client.get(path), 404)["code"] == "NOT_FOUND", path


# --- one trade from 50 concurrent accepts --------------------------------------------------------
def test_50_concurrent_accepts_through_nginx_make_exactly_one_trade(platform: Platform):
    with platform.api("nw-alice") as alice, platform.api("hl-carol") as carol:
        rfq = alice.post(
            "/api/v1/rfqs/",
            json={"legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}], "quantity": "1"},
        )
        assert rfq.status_code == 201, rfq.text
        rfq_id = rfq.json()["id"]
        quote = carol.post(f"/api/v1/rfqs/{rfq_id}/quotes/", json={"ask_price": "60000"})
        assert quote.status_code == 201, quote.text
    quote_id = quote.json()["id"]
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def accept() -> None:
        with platform.api("nw-alice") as client:
            client.get("/api/v1/whoami/")  # the TLS handshake before the start line
            barrier.wait()
            response = client.post(
                f"/api/v1/rfqs/{rfq_id}/accept/", json={"quote_id": quote_id, "side": "buy"}
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=accept) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == 50
    assert statuses.count(201) == 1, sorted(statuses)
    assert set(statuses) <= {201, 409, 429}, sorted(statuses)
    with platform.api("nw-alice") as alice:
        # The 50 handshakes above spent this certificate's read budget for the second (50/s):
        # wait as the API says.
        seen = alice.get(f"/api/v1/rfqs/{rfq_id}/")
        if seen.status_code == 429:
            time.sleep(float(seen.headers["retry-after"]))
            seen = alice.get(f"/api/v1/rfqs/{rfq_id}/")
        assert seen.json()["state"] == "filled", seen.text


# --- the audit chainer --------------------------------------------------------------------------
def test_the_platforms_chainer_chains_every_record_within_a_second(platform: Platform):
    """bin/run's chainer (manage.py chain_audit --follow) gives what the requests recorded its
    place in the chain after the commit: none waits, none took a second, the chain verifies,
    and /pki/health/ reports the tail. (Records of the API only: bin/run's set-up records the
    demo data before the chainer starts.)"""
    made = 0
    with platform.api("nw-alice") as alice:
        while made < 20:  # 10 creates/s per certificate: wait as the API says
            created = alice.post(
                "/api/v1/rfqs/",
                json={"legs": [{"instrument": "BTC-PERPETUAL", "side": "buy"}], "quantity": "1"},
            )
            assert created.status_code in (201, 429), created.text
            if created.status_code == 429:
                time.sleep(float(created.headers["retry-after"]))
            else:
                made += 1
    time.sleep(1.5)
    report = platform.manage(
        "shell", "-c",
        "from kernel.models import AuditRecord as A; from django.db.models import F, Max;"
        " print(A.objects.filter(hash__isnull=True).count(),"
        " A.objects.filter(event='rfq.created').count(),"
        " A.objects.filter(event__startswith='rfq.')"
        ".aggregate(m=Max(F('chained_at') - F('created_at')))['m'].total_seconds())",
    )  # fmt: skip
    unchained, created_records, worst_lag = report.strip().splitlines()[-1].split()
    assert int(unchained) == 0
    assert int(created_records) >= 20
    assert float(worst_lag) < 1.0
    assert "audit chain intact" in platform.manage("verify_audit")
    health = httpx.get(f"{platform.pki_url}/health/", timeout=10).json()
    assert health["audit_chain"]["unchained"] == 0
    assert health["audit_chain"]["max_lag_seconds"] == 5.0


# --- certificates carry their CA's URLs ----------------------------------------------------------
def test_a_certificate_carries_its_cas_urls_whatever_the_signers_environment(
    platform: Platform, tmp_path: Path
):
    """bin/manage without the platform's PKI_PORT (a user's shell: it would derive
    http://127.0.0.1:8080/pki) still writes the URLs recorded on the CA."""
    key = ec_key()
    csr = tmp_path / "me.csr"
    csr.write_bytes(make_csr(key, common_name="nw-alice"))
    out = tmp_path / "me.pem"
    env = {k: v for k, v in platform.env.items() if k != "PKI_PORT"}
    result = subprocess.run(
        [str(Path(__file__).resolve().parent.parent / "bin" / "manage"), "sign_csr",
         "--participant", "nw-alice", "--csr", str(csr), "--out", str(out)],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = run(["openssl", "x509", "-in", str(out), "-noout", "-text"]).stdout
    urls = set(re.findall(r"URI:(http://\S+)", text))
    assert urls, text
    assert all(url.startswith(platform.pki_url + "/") for url in urls), urls
    # And they answer: the CRL and the OCSP responder at those very URLs.
    crl_url = next(url for url in urls if url.endswith(".crl"))
    assert httpx.get(crl_url).status_code == 200
    ocsp = run(["openssl", "ocsp", "-issuer", str(platform.var / "ca" / "certs" / "client-ca.pem"),
                "-cert", str(out), "-url", next(u for u in urls if u.endswith("/ocsp")),
                "-CAfile", str(platform.root_pem)])  # fmt: skip
    assert "Response verify OK" in ocsp.stderr + ocsp.stdout, ocsp.stderr
    assert f"{out}: good" in ocsp.stdout, ocsp.stdout


# --- a forgotten trust decision reaches every worker ----------------------------------------------
def test_a_disabled_participant_is_refused_by_every_worker_right_after_the_change(
    platform: Platform, tmp_path: Path
):
    """Both gunicorn workers and the event pool hold the certificate's trust decision in
    memory; another process (`bin/manage shell`, as the admin or a command would) disables the
    participant. By the time it has returned, every worker refuses: the forget it published
    reached them all. (A participant, not a revocation: nginx would refuse a revoked
    certificate itself once the new CRL is in, and hide the app's answer.)"""
    trader = f"nw-near-{int(time.time())}"
    platform.manage(
        "shell", "-c",
        "from kernel.models import Firm, Participant;"
        " f = Firm.objects.get(lei='984500NWASSETMGT0185');"
        f" Participant.objects.create(firm=f, trader_id='{trader}', name='Near Cache',"
        f" email='near@example.com', role=Participant.Role.REQUESTER)",
    )  # fmt: skip
    key = ec_key()
    key_path, csr, out = tmp_path / "t.key", tmp_path / "t.csr", tmp_path / "t.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    csr.write_bytes(make_csr(key, common_name=trader))
    platform.manage("sign_csr", "--participant", trader, "--csr", str(csr), "--out", str(out))
    clients = [platform.api((out, key_path)) for _ in range(6)]
    try:
        # Warm every worker: requests over several connections, so both sync workers and the
        # event pool decide (and keep) this certificate; 36 reads, inside the certificate's
        # 50 reads/s.
        for _ in range(3):
            for client in clients:
                assert client.get("/api/v1/whoami/").status_code == 200
                assert client.get("/api/v1/events/?since=0").status_code == 200
        platform.manage(
            "shell", "-c",
            "from kernel.models import Participant;"
            f" p = Participant.objects.get(trader_id='{trader}'); p.is_active = False; p.save()",
        )  # fmt: skip
        answers = []
        for _ in range(4):
            for client in clients:
                answers.append(client.get("/api/v1/whoami/"))
                answers.append(client.get("/api/v1/events/?since=0"))
    finally:
        for client in clients:
            client.close()
    assert [a.status_code for a in answers] == [403] * len(answers)
    assert {a.json()["code"] for a in answers} == {"PARTICIPANT_DISABLED"}


def test_only_the_signing_worker_holds_the_ca_passphrase(platform: Platform):
    """As in deploy/: the web processes (gunicorn's pools, the OCSP responder) run without the
    CA passphrase, the Celery worker with it; an officer's "Sign" is done by the worker."""
    web, worker = [], []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if f"KEYLINE_VAR_DIR={platform.var}".encode() not in environ:
            continue  # another platform's, or not one of its processes
        passphrase = next(
            (e.split(b"=", 1)[1] for e in environ if e.startswith(b"KEYLINE_CA_PASSPHRASE_FILE=")),
            b"",
        )
        if "gunicorn" in cmdline or "uvicorn" in cmdline:
            web.append((cmdline[:80], passphrase))
        elif "celery" in cmdline and " worker " in cmdline:
            worker.append((cmdline[:80], passphrase))
    assert web, "no gunicorn or uvicorn process of the platform found"
    assert worker, "no Celery worker of the platform found"
    assert all(passphrase == b"" for _, passphrase in web), web
    assert all(passphrase != b"" for _, passphrase in worker), worker


def test_the_audit_chain_is_verified_when_the_platform_starts(platform: Platform):
    """bin/run verifies the chain after its set-up, so the officers' audit page has a verdict
    before the beat's first hourly check."""
    kept = platform.manage(
        "shell",
        "--no-imports",
        "-c",
        "from kernel.models import AuditCheck; "
        "c = AuditCheck.objects.filter(by='verify_audit command').order_by('id').first(); "
        "print(c.ok, c.checked)",
    ).split()[-2:]
    assert kept[0] == "True", kept
    assert int(kept[1]) > 0, kept
