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
            " for r in A.objects.filter(event='login.locked_out').order_by('sequence')]))",
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
