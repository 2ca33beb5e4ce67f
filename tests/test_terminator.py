"""The trust contract end to end: a real nginx terminating mTLS in front of gunicorn on a unix
socket, real client certificates, real TLS clients (httpx, curl, Python's ssl)."""

import json
import socket
import ssl
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import time_machine
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from kernel.models import Firm
from pki.revocation import certificate_revoke, crl_publish
from tests.conftest import run
from tests.factories import ParticipantFactory
from tests.foreign_ca import foreign_certificate
from tests.keys import ec_key, key_pem, make_csr

pytestmark = pytest.mark.django_db(transaction=True)

WHOAMI = "/api/v1/whoami/"


class Holder:
    """A participant's certificate and key as files, the way a trader keeps them."""

    def __init__(self, directory: Path, name: str, cert_pem: str, key: bytes, row=None):
        self.cert = directory / f"{name}.pem"
        self.key = directory / f"{name}.key"
        self.cert.write_text(cert_pem)
        self.key.write_bytes(key)
        self.row = row


@pytest.fixture
def holder(firm, issue, tmp_path):
    def make(name: str = "trader", participant=None, **kwargs) -> Holder:
        key = ec_key()
        cert = issue(participant or ParticipantFactory(firm=firm), make_csr(key), **kwargs)
        return Holder(tmp_path, name, cert.pem, key_pem(key), cert)

    return make


def tls(terminator, who: Holder | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(terminator.root_pem))
    if who is not None:
        context.load_cert_chain(str(who.cert), str(who.key))
    return context


def get(terminator, who: Holder | None, path: str = WHOAMI, headers=None) -> httpx.Response:
    with httpx.Client(verify=tls(terminator, who), timeout=10) as client:
        return client.get(terminator.api + path, headers=headers or {})


def assert_refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert set(body) == {"code", "message", "request_id", "details"}
    return body


def test_a_valid_certificate_reaches_whoami_with_httpx_and_curl(terminator, holder, firm):
    alice = holder("alice")
    response = get(terminator, alice)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["certificate"]["serial"] == alice.row.serial
    assert body["firm"]["lei"] == firm.lei
    result = run(
        ["curl", "-sS", "--cacert", str(terminator.root_pem), "--cert", str(alice.cert),
         "--key", str(alice.key), terminator.api + WHOAMI]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["participant"]["trader_id"] == alice.row.participant.trader_id


def test_no_certificate_is_refused_by_nginx(terminator):
    assert_refused(get(terminator, None), 401, "CLIENT_CERTIFICATE_MISSING")


def test_a_look_alike_ca_with_the_same_subject_is_refused_by_nginx(terminator, tmp_path, holder):
    real = holder("real")
    cert_pem, key = foreign_certificate(subject_cn=real.row.participant.trader_id)
    fake = Holder(tmp_path, "fake", cert_pem, key)
    body = assert_refused(get(terminator, fake), 401, "CLIENT_CERTIFICATE_UNVERIFIED")
    assert body["details"]["verify"].startswith("FAILED:")


def test_an_expired_certificate_is_refused_by_nginx(terminator, holder):
    with time_machine.travel(timezone.now() - timedelta(days=3)):
        old = holder("old", validity_days=1)
    body = assert_refused(get(terminator, old), 401, "CLIENT_CERTIFICATE_UNVERIFIED")
    assert body["details"]["verify"] == "FAILED:certificate has expired"


def test_a_revoked_certificate_is_refused_by_the_app_then_by_nginx(
    terminator, holder, system_actor
):
    bob = holder("bob")
    assert get(terminator, bob).status_code == 200
    certificate_revoke(certificate=bob.row, reason="keyCompromise", actor=system_actor)
    # The very next request: nginx has not reloaded any CRL yet, the app refuses.
    assert_refused(get(terminator, bob), 401, "CERTIFICATE_REVOKED")
    with override_settings(KEYLINE_CRL_RELOAD_COMMAND=terminator.reload_command):
        crl_publish(actor=system_actor)
    deadline = time.monotonic() + 10
    while (response := get(terminator, bob)).json()["code"] != "CLIENT_CERTIFICATE_UNVERIFIED":
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    assert response.json()["details"]["verify"] == "FAILED:certificate revoked"


def test_disabled_participant_and_suspended_firm_are_403(terminator, holder, firm):
    carol = holder("carol")
    participant = carol.row.participant
    assert get(terminator, carol).status_code == 200  # trusted, and the decision cached
    participant.is_active = False
    participant.save()  # as the portal or the admin does: the cached decision is forgotten
    assert_refused(get(terminator, carol), 403, "PARTICIPANT_DISABLED")
    participant.is_active = True
    participant.save()
    assert get(terminator, carol).status_code == 200
    firm.status = Firm.Status.SUSPENDED
    firm.save()
    assert_refused(get(terminator, carol), 403, "FIRM_INACTIVE")


def test_a_resumed_tls_session_after_revocation_is_still_refused_by_the_app(
    terminator, holder, system_actor
):
    dave = holder("dave")
    context = tls(terminator, dave)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs: resumable in nginx 1.22

    def request(session=None) -> tuple[int, dict, ssl.SSLSession, bool]:
        raw = socket.create_connection(("127.0.0.1", terminator.api_port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls_sock:
            tls_sock.sendall(b"GET " + WHOAMI.encode() + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while chunk := tls_sock.recv(65536):
                data += chunk
            resumed, new_session = tls_sock.session_reused, tls_sock.session
        head, body = data.split(b"\r\n\r\n", 1)
        return int(head.split(b" ", 2)[1]), json.loads(body), new_session, resumed

    status, _, session, _ = request()
    assert status == 200
    certificate_revoke(certificate=dave.row, reason="keyCompromise", actor=system_actor)
    with override_settings(KEYLINE_CRL_RELOAD_COMMAND=terminator.reload_command):
        crl_publish(actor=system_actor)  # a full handshake would now fail in nginx
    time.sleep(0.5)  # the old nginx worker finishes; the session cache survives reloads
    status, body, _, reused = request(session)
    assert reused, "the TLS session was not resumed"
    assert (status, body["code"]) == (401, "CERTIFICATE_REVOKED")


def test_straight_to_gunicorn_forged_headers_are_refused(terminator, holder):
    victim = holder("victim")
    forged = {
        settings.KEYLINE_HEADER_VERIFY: "SUCCESS",
        settings.KEYLINE_HEADER_CERT: quote(victim.cert.read_text()),
    }
    for secret in (None, "not-the-secret"):
        headers = dict(forged)
        if secret is not None:
            headers[settings.KEYLINE_HEADER_SECRET] = secret
        transport = httpx.HTTPTransport(uds=str(terminator.app.socket))
        with httpx.Client(transport=transport, timeout=10) as client:
            response = client.get("http://localhost" + WHOAMI, headers=headers)
        assert_refused(response, 401, "TERMINATOR_SECRET_INVALID")


def test_a_clients_own_copies_of_the_headers_never_reach_the_app(terminator, holder):
    mallory, victim = holder("mallory"), holder("victim2")
    forged = {
        settings.KEYLINE_HEADER_VERIFY: "SUCCESS",
        settings.KEYLINE_HEADER_CERT: quote(victim.cert.read_text()),
        settings.KEYLINE_HEADER_SECRET: settings.KEYLINE_TERMINATOR_SECRET,  # even the secret
    }
    response = get(terminator, mallory, headers=forged)
    assert response.status_code == 200
    assert response.json()["certificate"]["serial"] == mallory.row.serial
    # Without a certificate of one's own, the forged ones get nothing.
    assert_refused(get(terminator, None, headers=forged), 401, "CLIENT_CERTIFICATE_MISSING")


def test_the_portal_and_the_pki_endpoints_are_served_too(terminator, cas, system_actor):
    crl_publish(actor=system_actor)
    with httpx.Client(verify=tls(terminator), timeout=10) as client:
        assert client.get(f"https://127.0.0.1:{terminator.portal_port}/").status_code == 200
        # The API is never forwarded without mutual TLS, whatever headers come along.
        forged = {settings.KEYLINE_HEADER_SECRET: settings.KEYLINE_TERMINATOR_SECRET}
        api = client.get(f"https://127.0.0.1:{terminator.portal_port}{WHOAMI}", headers=forged)
        assert_refused(api, 404, "NOT_FOUND")
    response = httpx.get(f"http://127.0.0.1:{terminator.pki_port}/pki/crl/client-ca.crl")
    assert response.headers["content-type"] == "application/pkix-crl"


def test_an_unknown_api_path_is_json_404(terminator, holder):
    assert_refused(get(terminator, holder("eve"), "/nope"), 404, "NOT_FOUND")


def test_identity_is_the_certificate_never_the_address(terminator, holder):
    """The same certificate works from 127.0.0.2 and 127.0.0.3; an address a trusted firm
    used a moment ago gets nothing without that firm's certificate."""
    alice = holder("alice-ip")

    def from_address(address: str, who: Holder | None) -> httpx.Response:
        transport = httpx.HTTPTransport(verify=tls(terminator, who), local_address=address)
        with httpx.Client(transport=transport, timeout=10) as client:
            return client.get(terminator.api + WHOAMI)

    for address in ("127.0.0.2", "127.0.0.3"):
        response = from_address(address, alice)
        assert response.status_code == 200, response.text
        assert response.json()["certificate"]["serial"] == alice.row.serial
    assert_refused(from_address("127.0.0.2", None), 401, "CLIENT_CERTIFICATE_MISSING")
