"""Distribution URLs belong to the CA: every certificate carries its issuer's recorded CRL,
OCSP and caIssuers URLs, whatever the settings or environment of the process that signs, and
``set_ca_urls`` is the one way to change them (validated, audited, with the certificates that
keep the old ones named)."""

import io
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from kernel.errors import Conflict
from kernel.models import AuditRecord
from pki import ocsp_http
from pki.checks import ca_ocsp_urls_served
from pki.models import CertificateAuthority
from pki.revocation import crl_publish
from pki.services import (
    CaUrls,
    ca_init,
    ca_urls_apply,
    ca_urls_plan,
    ocsp_responder_renew,
    server_certificate_issue,
)
from tests.conftest import run
from tests.factories import ParticipantFactory
from tests.keys import ec_key, make_csr
from tests.servers import NEEDS_POSTGRES, server_env

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent.parent
# What the CA rows say in these tests, and what the signing process's settings say instead:
# the incident's shell without PKI_PORT derived http://127.0.0.1:8080/pki.
CA_PKI = "http://pki.keyline.test:18080/pki"
PROCESS_PKI = "http://127.0.0.1:8080/pki"
OTHER_PKI = "http://pki.elsewhere.test:9999/pki"


def _process_settings(base: str) -> override_settings:
    return override_settings(
        KEYLINE_PKI_URL=base,
        KEYLINE_PKI_BASE_URL=base,
        KEYLINE_CRL_BASE_URL=f"{base}/crl",
        KEYLINE_OCSP_URL=f"{base}/ocsp",
        KEYLINE_CA_ISSUERS_BASE_URL=f"{base}/ca",
    )


def _set_urls(actor, **urls: str) -> list:
    return ca_urls_apply(ca_urls_plan(**urls), actor=actor)


def _parsed_urls(pem: str) -> dict[str, list[str]]:
    """The URLs in a certificate as the ``cryptography`` parser reads them."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    found: dict[str, list[str]] = {"crl": [], "ocsp": [], "ca_issuers": []}
    try:
        for point in cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value:
            found["crl"] += [name.value for name in point.full_name]
    except x509.ExtensionNotFound:
        pass
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        access = []
    for description in access:
        key = (
            "ocsp"
            if description.access_method == x509.AuthorityInformationAccessOID.OCSP
            else "ca_issuers"
        )
        found[key].append(description.access_location.value)
    return found


def _openssl_text(pem: str, tmp_path: Path) -> str:
    path = tmp_path / "cert.pem"
    path.write_text(pem)
    result = run(["openssl", "x509", "-in", str(path), "-noout", "-text"])
    assert result.returncode == 0, result.stderr
    return result.stdout


def _assert_carries(pem: str, urls: CaUrls, tmp_path: Path, *, ocsp: bool) -> None:
    """Both parsers see exactly the CA's URLs, and openssl sees nothing of the process's."""
    assert _parsed_urls(pem) == {
        "crl": [urls.crl_url],
        "ocsp": [urls.ocsp_url] if ocsp else [],
        "ca_issuers": [urls.ca_issuers_url],
    }
    text = _openssl_text(pem, tmp_path)
    assert f"URI:{urls.crl_url}" in text
    assert f"CA Issuers - URI:{urls.ca_issuers_url}" in text
    assert (f"OCSP - URI:{urls.ocsp_url}" in text) is ocsp
    assert PROCESS_PKI not in text
    assert "127.0.0.1" not in text


# --- signing reads the issuing CA's row ----------------------------------------------------


def test_a_client_certificate_carries_its_cas_urls_not_the_signing_process(
    participant, issue, cas, system_actor, tmp_path
):
    _set_urls(system_actor, pki_url=CA_PKI)
    client = CertificateAuthority.objects.get(pk=cas["client"].pk)
    assert CaUrls.of(client) == CaUrls(
        crl_url=f"{CA_PKI}/crl/client-ca.crl",
        ocsp_url=f"{CA_PKI}/ocsp",
        ca_issuers_url=f"{CA_PKI}/ca/client-ca.crt",
    )
    with _process_settings(PROCESS_PKI):  # the environment, as this process sees it
        certificate = issue(participant, make_csr())
    _assert_carries(certificate.pem, CaUrls.of(client), tmp_path, ocsp=True)


def test_a_server_certificate_carries_the_server_cas_urls_and_no_ocsp(cas, system_actor, tmp_path):
    _set_urls(system_actor, pki_url=CA_PKI)
    server = CertificateAuthority.objects.get(pk=cas["server"].pk)
    assert server.ocsp_url == ""  # no responder answers for the server CA
    with _process_settings(PROCESS_PKI):
        issued = server_certificate_issue(
            dns_names=["localhost"], ip_addresses=[], actor=system_actor
        )
    _assert_carries(issued.certificate.pem, CaUrls.of(server), tmp_path, ocsp=False)


def test_the_ocsp_delegate_carries_no_urls_whatever_the_settings(cas, system_actor):
    _set_urls(system_actor, pki_url=CA_PKI)
    with _process_settings(PROCESS_PKI):
        delegate = ocsp_responder_renew(actor=system_actor, force=True)
    # RFC 6960 §4.2.2.2.1: ocsp-nocheck; it is not checked by CRL or OCSP, so names neither.
    assert _parsed_urls(delegate.pem) == {"crl": [], "ocsp": [], "ca_issuers": []}


def test_init_ca_records_the_settings_and_signs_the_intermediates_with_the_roots_row(
    tmp_path, system_actor
):
    with override_settings(KEYLINE_CA_DIR=str(tmp_path / "ca")), _process_settings(CA_PKI):
        created = ca_init(force=True, actor=system_actor)
    for ca in (created.root, created.client, created.server):
        assert CaUrls.of(ca) == CaUrls(
            crl_url=f"{CA_PKI}/crl/{ca.slug}.crl",
            ocsp_url=f"{CA_PKI}/ocsp" if ca.kind == "client" else "",
            ca_issuers_url=f"{CA_PKI}/ca/{ca.slug}.crt",
        )
    for intermediate in (created.client, created.server):
        _assert_carries(intermediate.certificate_pem, CaUrls.of(created.root), tmp_path, ocsp=False)
    record = AuditRecord.objects.filter(event="ca.initialised").order_by("-sequence").first()
    assert record.details["urls"]["client-ca"]["ocsp_url"] == f"{CA_PKI}/ocsp"


@pytest.mark.django_db(transaction=True)
def test_sign_csr_in_a_shell_with_another_pki_url_writes_the_cas_urls(
    cas, firm, tmp_path, system_actor
):
    """The incident: ``bin/manage sign_csr`` from a shell without the platform's PKI_PORT.
    Another process (its own settings, its own environment) signs; the CA's URLs win."""
    if connection.vendor != "postgresql":
        pytest.skip(NEEDS_POSTGRES)
    participant = ParticipantFactory(firm=firm)
    _set_urls(system_actor, pki_url=CA_PKI)
    csr, out = tmp_path / "t.csr", tmp_path / "t.pem"
    csr.write_bytes(make_csr(ec_key()))
    env = server_env(
        KEYLINE_PKI_URL=PROCESS_PKI,
        KEYLINE_PKI_BASE_URL=PROCESS_PKI,
        KEYLINE_CRL_BASE_URL=f"{PROCESS_PKI}/crl",
        KEYLINE_OCSP_URL=f"{PROCESS_PKI}/ocsp",
        KEYLINE_CA_ISSUERS_BASE_URL=f"{PROCESS_PKI}/ca",
    )
    env.pop("PKI_PORT", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "sign_csr", "--participant", participant.trader_id,
         "--csr", str(csr), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    client = CertificateAuthority.objects.get(pk=cas["client"].pk)
    _assert_carries(out.read_text(), CaUrls.of(client), tmp_path, ocsp=True)


# --- set_ca_urls ---------------------------------------------------------------------------


def _urls_by_slug() -> dict[str, CaUrls]:
    return {ca.slug: CaUrls.of(ca) for ca in CertificateAuthority.objects.filter(is_active=True)}


def _set_ca_urls(*args: str) -> str:
    out = io.StringIO()
    call_command("set_ca_urls", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_set_ca_urls_changes_every_ca_audits_and_names_the_certificates_left_behind(
    participant, issue, cas
):
    before = _urls_by_slug()
    old = issue(participant, make_csr())

    output = _set_ca_urls("--pki-url", f"{OTHER_PKI}/")

    after = _urls_by_slug()
    assert after == {
        slug: CaUrls(
            crl_url=f"{OTHER_PKI}/crl/{slug}.crl",
            ocsp_url=f"{OTHER_PKI}/ocsp" if slug == "client-ca" else "",
            ca_issuers_url=f"{OTHER_PKI}/ca/{slug}.crt",
        )
        for slug in ("root", "client-ca", "server-ca")
    }
    records = {
        r.details["ca"]: r
        for r in AuditRecord.objects.filter(event="ca.urls_changed").order_by("id")
    }
    assert set(records) == {"root", "client-ca", "server-ca"}
    client = records["client-ca"]
    assert client.actor_label.startswith("manage.py set_ca_urls (os user ")
    assert client.target_id == str(cas["client"].pk)
    assert client.details["before"] == before["client-ca"].as_dict()
    assert client.details["after"] == after["client-ca"].as_dict()
    assert client.details["live_certificates_with_other_urls"] == 1
    assert client.details["listed"] == [old.serial]
    # The root's certificates are the two intermediates, which keep the old root URLs.
    assert records["root"].details["live_certificates_with_other_urls"] == 2
    assert f"CRL: {before['client-ca'].crl_url} -> {after['client-ca'].crl_url}" in output
    assert "1 live certificate(s) of this CA carry other URLs" in output
    assert old.serial in output
    assert before["client-ca"].ocsp_url in output
    assert "Changed the URLs of root, client-ca, server-ca" in output

    new = issue(ParticipantFactory(firm=participant.firm), make_csr())
    assert _parsed_urls(new.pem) == {
        "crl": [after["client-ca"].crl_url],
        "ocsp": [after["client-ca"].ocsp_url],
        "ca_issuers": [after["client-ca"].ca_issuers_url],
    }
    assert _parsed_urls(old.pem)["crl"] == [before["client-ca"].crl_url]  # until renewed


def test_individual_urls_change_one_part_of_one_ca(cas):
    before = _urls_by_slug()
    _set_ca_urls("--ca", "client", "--ocsp-url", "http://ocsp.keyline.test:8888/pki/ocsp")
    after = _urls_by_slug()
    assert after["client-ca"] == CaUrls(
        crl_url=before["client-ca"].crl_url,
        ocsp_url="http://ocsp.keyline.test:8888/pki/ocsp",
        ca_issuers_url=before["client-ca"].ca_issuers_url,
    )
    assert after["root"] == before["root"]
    assert after["server-ca"] == before["server-ca"]
    _set_ca_urls("--ca", "server", "--crl-base-url", "http://crl.keyline.test/crls/")
    assert _urls_by_slug()["server-ca"].crl_url == "http://crl.keyline.test/crls/server-ca.crl"
    assert AuditRecord.objects.filter(event="ca.urls_changed").count() == 2


def test_the_list_of_certificates_left_behind_is_bounded(participant, issue, cas):
    for _ in range(3):
        issue(ParticipantFactory(firm=participant.firm), make_csr())
    output = _set_ca_urls("--ca", "client", "--pki-url", OTHER_PKI, "--show", "1")
    assert "3 live certificate(s) of this CA carry other URLs" in output
    assert "… and 2 more" in output


def test_dry_run_and_a_repeat_change_nothing(participant, issue, cas):
    issue(participant, make_csr())
    before = _urls_by_slug()
    output = _set_ca_urls("--pki-url", OTHER_PKI, "--dry-run")
    assert "Dry run: 3 CA(s) would change; nothing was changed." in output
    assert "1 live certificate(s) of this CA carry other URLs" in output
    assert _urls_by_slug() == before
    assert not AuditRecord.objects.filter(event="ca.urls_changed").exists()
    _set_ca_urls("--pki-url", OTHER_PKI)
    assert AuditRecord.objects.filter(event="ca.urls_changed").count() == 3
    output = _set_ca_urls("--pki-url", OTHER_PKI)
    assert output.splitlines()[-1] == "Nothing to change."
    assert AuditRecord.objects.filter(event="ca.urls_changed").count() == 3


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--pki-url", "ftp://pki.keyline.test/pki"], "CA_URL_INVALID"),
        (["--pki-url", "pki.keyline.test/pki"], "CA_URL_INVALID"),
        (["--pki-url", "http:///pki"], "CA_URL_INVALID"),
        (["--pki-url", "http://operator:secret@pki.keyline.test/pki"], "CA_URL_INVALID"),
        (["--pki-url", "http://pki.keyline.test/pki?x=1"], "CA_URL_INVALID"),
        (["--pki-url", "http://pki.keyline.test:99999/pki"], "CA_URL_INVALID"),
        (["--pki-url", "http://pki.keyline.test/p ki"], "CA_URL_INVALID"),
        (["--pki-url", "http://pki.kéyline.test/pki"], "CA_URL_INVALID"),
        (["--crl-base-url", "http://pki.keyline.test/" + "c" * 400], "CA_URL_INVALID"),
        (["--ocsp-url", "http://pki.keyline.test/"], "CA_URL_INVALID"),
        (["--ca", "server", "--ocsp-url", "http://pki.keyline.test/pki/ocsp"], "CA_URL_INVALID"),
        # Valid syntax that pkilint refuses (an empty DNS label): refused now, not at issuance.
        (["--pki-url", "http://pki..keyline.test/pki"], "CA_URL_INVALID"),
        (["--pki-url", "http://pki.keyline.test/elsewhere"], "CA_OCSP_URL_NOT_SERVED"),
        (["--ocsp-url", "http://pki.keyline.test/ocsp"], "CA_OCSP_URL_NOT_SERVED"),
        ([], "CA_URLS_MISSING"),
    ],
)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(args, code, cas):
    before = _urls_by_slug()
    with pytest.raises(CommandError) as refused:
        _set_ca_urls(*args)
    message = str(refused.value)
    assert message.startswith(f"{code}: "), message
    assert "\n" not in message
    assert refused.value.returncode == 2
    assert _urls_by_slug() == before
    assert not AuditRecord.objects.filter(event="ca.urls_changed").exists()


def test_https_and_hosts_django_would_refuse_are_warned_about_not_refused(cas):
    err = io.StringIO()
    call_command(
        "set_ca_urls",
        "--pki-url",
        "https://pki.elsewhere.test/pki",
        stdout=io.StringIO(),
        stderr=err,
    )
    assert "warning: https URLs" in err.getvalue()
    assert "warning: pki.elsewhere.test not in DJANGO_ALLOWED_HOSTS here" in err.getvalue()
    assert _urls_by_slug()["root"].crl_url == "https://pki.elsewhere.test/pki/crl/root.crl"
    err = io.StringIO()
    with override_settings(ALLOWED_HOSTS=[".elsewhere.test"]):
        call_command("set_ca_urls", "--pki-url", OTHER_PKI, stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""


def test_a_change_made_meanwhile_is_not_overwritten(cas, system_actor):
    plan = ca_urls_plan(ca="client", pki_url=OTHER_PKI)
    CertificateAuthority.objects.filter(pk=cas["client"].pk).update(crl_url=f"{CA_PKI}/x.crl")
    with pytest.raises(Conflict) as refused:
        ca_urls_apply(plan, actor=system_actor)
    assert refused.value.code == "CA_URLS_CHANGED_CONCURRENTLY"
    assert CertificateAuthority.objects.get(pk=cas["client"].pk).crl_url == f"{CA_PKI}/x.crl"
    assert not AuditRecord.objects.filter(event="ca.urls_changed").exists()


# --- serving follows ------------------------------------------------------------------------


def _ocsp_request(leaf_pem: str, issuer_pem: str) -> bytes:
    return (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(
            x509.load_pem_x509_certificate(leaf_pem.encode()),
            x509.load_pem_x509_certificate(issuer_pem.encode()),
            hashes.SHA1(),  # noqa: S303 - what nginx sends
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


def test_a_ca_whose_ocsp_url_moved_is_still_answered(
    participant, issue, cas, client, system_actor, monkeypatch
):
    """Host and port are the CA's to change; the path is where this deployment listens, so
    the moved URL is answered by both the bare WSGI responder and Django's fallback."""
    # What Django's test client does for its own requests: keep the test's transaction.
    monkeypatch.setattr(ocsp_http, "close_old_connections", lambda: None)
    _set_urls(system_actor, pki_url=CA_PKI)
    leaf = issue(participant, make_csr())
    (url,) = _parsed_urls(leaf.pem)["ocsp"]
    assert url == f"{CA_PKI}/ocsp"
    body = _ocsp_request(leaf.pem, cas["client"].certificate_pem)

    def not_django(environ, start_response):
        raise AssertionError("the OCSP path must not reach Django")

    answered: list[str] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": urlsplit(url).path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    wsgi_body = b"".join(
        ocsp_http.with_ocsp(not_django)(environ, lambda status, headers: answered.append(status))
    )
    django_body = client.post(
        urlsplit(url).path, data=body, content_type="application/ocsp-request"
    ).content
    assert answered == ["200 OK"]
    for answer in (wsgi_body, django_body):
        response = x509_ocsp.load_der_ocsp_response(answer)
        assert response.response_status == x509_ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.certificate_status == x509_ocsp.OCSPCertStatus.GOOD
        assert response.serial_number == leaf.serial_int


def test_system_check_flags_a_ca_ocsp_url_the_responder_no_longer_serves(cas):
    assert ca_ocsp_urls_served(None, databases=["default"]) == []
    assert ca_ocsp_urls_served(None) == []  # a database check: only when asked
    with override_settings(KEYLINE_OCSP_URL="http://127.0.0.1:8080/ocsp-v2"):
        warnings = ca_ocsp_urls_served(None, databases=["default"])
    assert [(w.id, "client-ca" in w.msg) for w in warnings] == [("pki.W002", True)]


def test_crls_and_ca_certificates_are_served_at_the_moved_urls(cas, client, system_actor):
    """The CRL and caIssuers views serve by path, so a CA whose host or port moved is served
    as before; its CRL names no URL (no issuing distribution point), so it also covers the
    certificates that still carry the old one."""
    _set_urls(system_actor, pki_url=CA_PKI)
    published = {row.ca.slug: row for row in crl_publish(actor=system_actor)}
    for slug, urls in _urls_by_slug().items():
        response = client.get(urlsplit(urls.crl_url).path)
        assert response.status_code == 200
        assert response.content == bytes(published[slug].der)
        crl = x509.load_der_x509_crl(response.content)
        with pytest.raises(x509.ExtensionNotFound):
            crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        response = client.get(urlsplit(urls.ca_issuers_url).path)
        assert response.status_code == 200
        issued_by = x509.load_der_x509_certificate(response.content)
        assert issued_by.subject.rfc4514_string() == next(
            ca.subject for ca in cas.values() if ca.slug == slug
        )
