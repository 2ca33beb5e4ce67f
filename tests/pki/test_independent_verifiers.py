"""What the CA emits, checked by tools that are not ours: pkilint (its CLI, JSON output) and
`openssl verify`. Both CA key types are covered."""

import contextlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import override_settings

from pki.lint import is_allowed_false_positive
from pki.selectors import ocsp_responder_current
from pki.services import ca_init, server_certificate_issue
from tests.conftest import openssl_verify, run, tool
from tests.keys import ec_key, ed25519_key, make_csr, rsa_key

pytestmark = pytest.mark.django_db

_QUOTED = re.compile(r'"([^"]*)"')


def _write(directory: Path, name: str, pem: str) -> str:
    path = directory / name
    path.write_text(pem)
    return str(path)


@pytest.fixture(params=["ec-p256", "rsa-3072"])
def emitted(request, tmp_path, participant, system_actor, issue, cas):
    """Every kind of certificate the CA emits, as files, for one CA key type."""
    if request.param == "ec-p256":
        active = cas
    else:
        with override_settings(KEYLINE_CA_DIR=str(tmp_path / "ca-rsa")):
            new = ca_init(key_type="rsa-3072", force=True, actor=system_actor)
        active = {"root": new.root, "client": new.client, "server": new.server}
    with (
        override_settings(KEYLINE_CA_DIR=str(tmp_path / "ca-rsa"))
        if request.param != "ec-p256"
        else contextlib.nullcontext()
    ):
        leaves = {
            "client-ec": issue(participant, make_csr(ec_key())).pem,
            "client-p384": issue(participant, make_csr(ec_key(ec.SECP384R1()))).pem,
            "client-rsa": issue(participant, make_csr(rsa_key(2048))).pem,
            "client-ed25519": issue(participant, make_csr(ed25519_key())).pem,
            "server": server_certificate_issue(
                dns_names=["localhost", "rfq.keyline.example"],
                ip_addresses=["127.0.0.1", "::1"],
                actor=system_actor,
            ).certificate.pem,
        }
    ocsp = ocsp_responder_current()
    files = {
        "root": _write(tmp_path, "root.pem", active["root"].certificate_pem),
        "client-ca": _write(tmp_path, "client-ca.pem", active["client"].certificate_pem),
        "server-ca": _write(tmp_path, "server-ca.pem", active["server"].certificate_pem),
        "ocsp": _write(tmp_path, "ocsp.pem", ocsp.pem),
    }
    for name, pem in leaves.items():
        files[name] = _write(tmp_path, f"{name}.pem", pem)
    return files


def _findings(output: str) -> list[tuple[str, str, str]]:
    """(severity, code, message) of every finding in pkilint's JSON report."""
    found = []
    for result in json.loads(output)["results"]:
        for description in result["finding_descriptions"]:
            found.append(
                (description["severity"], description["code"], description.get("message") or "")
            )
    return found


def _unexpected(findings: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    bad = []
    for severity, code, message in findings:
        quoted = _QUOTED.search(message)
        if quoted and is_allowed_false_positive(code, quoted.group(1)):
            continue
        bad.append((severity, code, message))
    return bad


def _lint_jobs(files: dict[str, str]) -> list[list[str]]:
    single = [
        [tool("lint_pkix_cert"), "lint", "-s", "WARNING", "-f", "JSON", path]
        for path in files.values()
    ]
    chain = [
        ("root", "root"),
        ("root", "client-ca"),
        ("root", "server-ca"),
        ("client-ca", "ocsp"),
        ("client-ca", "client-ec"),
        ("client-ca", "client-rsa"),
        ("client-ca", "client-p384"),
        ("client-ca", "client-ed25519"),
        ("server-ca", "server"),
    ]
    pairs = [
        [
            tool("lint_pkix_signer_signee_cert_chain"),
            "lint",
            "-s",
            "WARNING",
            "-f",
            "JSON",
            files[i],
            files[s],
        ]
        for i, s in chain
    ]
    return single + pairs


def test_pkilint_finds_nothing_but_its_known_false_positives(emitted):
    jobs = _lint_jobs(emitted)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, jobs))
    allowed_seen = set()
    for job, result in zip(jobs, results, strict=True):
        assert result.stderr == "", (job, result.stderr)
        findings = _findings(result.stdout)
        assert _unexpected(findings) == [], (job[-1], findings)
        allowed_seen |= {code for _, code, _ in findings}
    # The allow-list is exercised (urn: SAN, "localhost" dNSName), so it is not dead code.
    assert allowed_seen == {"pkix.invalid_uri_syntax", "pkix.invalid_domain_name_syntax"}


def test_allow_list_is_exact():
    assert is_allowed_false_positive("pkix.invalid_uri_syntax", "urn:keyline:firm:X:trader:y")
    assert is_allowed_false_positive("pkix.invalid_uri_syntax", "http://localhost:8000/pki/ocsp")
    assert is_allowed_false_positive("pkix.invalid_domain_name_syntax", "localhost")
    assert not is_allowed_false_positive("pkix.invalid_uri_syntax", "http://exa mple.com/")
    assert not is_allowed_false_positive("pkix.invalid_uri_syntax", "spiffe://trust/x")
    assert not is_allowed_false_positive("pkix.invalid_domain_name_syntax", "bad_name.example")
    assert not is_allowed_false_positive("pkix.invalid_domain_name_syntax", "-bad")
    assert not is_allowed_false_positive("pkix.authority_key_identifier_critical", "urn:x")


@pytest.mark.parametrize("leaf", ["client-ec", "client-p384", "client-rsa", "client-ed25519"])
def test_openssl_accepts_client_certificates_for_client_auth(emitted, leaf):
    rc, out = openssl_verify(
        emitted[leaf],
        root=emitted["root"],
        untrusted=emitted["client-ca"],
        purpose="sslclient",
        strict=True,
    )
    assert (rc, out.strip()) == (0, f"{emitted[leaf]}: OK")


def test_openssl_refuses_client_certificate_as_server_and_without_chain(emitted):
    rc, out = openssl_verify(
        emitted["client-ec"],
        root=emitted["root"],
        untrusted=emitted["client-ca"],
        purpose="sslserver",
    )
    assert rc != 0
    assert "unsuitable certificate purpose" in out
    rc, out = openssl_verify(emitted["client-ec"], root=emitted["root"])
    assert rc != 0
    assert "unable to get local issuer certificate" in out


def test_openssl_accepts_the_server_certificate_only_as_server(emitted):
    chain = {"root": emitted["root"], "untrusted": emitted["server-ca"]}
    rc, out = openssl_verify(emitted["server"], **chain, purpose="sslserver", strict=True)
    assert rc == 0, out
    rc, out = openssl_verify(emitted["server"], **chain, purpose="sslclient")
    assert rc != 0
    assert "unsuitable certificate purpose" in out


def test_ocsp_delegate_is_an_ocsp_signer_from_the_client_ca(emitted):
    rc, out = openssl_verify(
        emitted["ocsp"],
        root=emitted["root"],
        untrusted=emitted["client-ca"],
        purpose="ocsphelper",
        strict=True,
    )
    assert rc == 0, out
    text = run(["openssl", "x509", "-in", emitted["ocsp"], "-noout", "-text"]).stdout
    assert "OCSP Signing" in text
    assert "OCSP No Check" in text
