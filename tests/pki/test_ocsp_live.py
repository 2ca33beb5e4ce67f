"""The published revocation services over real HTTP (gunicorn serving ``keyline.wsgi`` on
loopback), checked by openssl's OCSP client and CRL fetcher at the URLs written into the
certificates."""

import base64
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp

from pki.revocation import certificate_revoke, crl_publish
from pki.services import ca_urls_apply, ca_urls_plan
from tests.conftest import run
from tests.factories import ParticipantFactory
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db(transaction=True)


def _aia_ocsp_url(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    (url,) = [d.access_location.value for d in aia if d.access_method.dotted_string.endswith("1")]
    return url


@pytest.fixture
def files(tmp_path, cas) -> dict[str, Path]:
    paths = {"root": tmp_path / "root.pem", "ca": tmp_path / "client-ca.pem"}
    paths["root"].write_text(cas["root"].certificate_pem)
    paths["ca"].write_text(cas["client"].certificate_pem)
    return paths


@pytest.fixture
def live_leaf(app_server, firm, issue, tmp_path, system_actor):
    """A certificate whose CRL DP and OCSP URLs point at the live server: its CA's URLs are
    moved there first (host and port; the path stays the one the server answers at). The
    session's CA rows come back with the flush that ends the test."""
    ca_urls_apply(ca_urls_plan(ca="client", pki_url=f"{app_server.url}/pki"), actor=system_actor)
    cert = issue(ParticipantFactory(firm=firm), make_csr(ec_key()))
    path = tmp_path / f"{cert.serial}.pem"
    path.write_text(cert.pem)
    return cert, path


def _openssl_ocsp(files, *target: str, url: str, nonce: bool = True) -> tuple[int, list[str]]:
    args = ["openssl", "ocsp", "-issuer", str(files["ca"]), *target, "-url", url]
    args += ["-CAfile", str(files["root"]), "-verify_other", str(files["ca"])]
    if not nonce:
        args.append("-no_nonce")
    result = run(args, timeout=20)
    return result.returncode, (result.stdout + result.stderr).splitlines()


@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "no-nonce"])
def test_openssl_ocsp_good_then_revoked(files, live_leaf, system_actor, nonce):
    cert, path = live_leaf
    url = _aia_ocsp_url(cert.pem)
    rc, lines = _openssl_ocsp(files, "-cert", str(path), url=url, nonce=nonce)
    # openssl exits 0 whatever the status, and prints "good" even when verification fails
    # (docs/pki.md): require all of rc, the verify line, the exact status line and no warning.
    assert rc == 0, lines
    assert "Response verify OK" in lines
    assert f"{path}: good" in lines
    assert not [line for line in lines if "WARNING" in line]

    certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)
    rc, lines = _openssl_ocsp(files, "-cert", str(path), url=url, nonce=nonce)
    assert rc == 0, lines
    assert "Response verify OK" in lines
    assert f"{path}: revoked" in lines
    assert "\tReason: keyCompromise" in lines
    assert not [line for line in lines if "WARNING" in line]


def test_openssl_ocsp_for_a_serial_never_issued(files, live_leaf):
    cert, _ = live_leaf
    rc, lines = _openssl_ocsp(files, "-serial", "0x5EED", url=_aia_ocsp_url(cert.pem))
    assert rc == 0, lines
    assert "Response verify OK" in lines
    assert "0x5EED: revoked" in lines
    assert "\tReason: certificateHold" in lines
    assert "\tRevocation Time: Jan  1 00:00:00 1970 GMT" in lines


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def test_get_with_base64_path_and_caching_headers(files, live_leaf):
    cert, _ = live_leaf
    request = (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(
            x509.load_pem_x509_certificate(cert.pem.encode()),
            x509.load_pem_x509_certificate(files["ca"].read_bytes()),
            hashes.SHA1(),  # noqa: S303 - what nginx sends
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    encoded = quote(base64.b64encode(request).decode(), safe="")
    status, headers, body = _get(f"{_aia_ocsp_url(cert.pem)}/{encoded}")
    assert status == 200
    assert headers["Content-Type"] == "application/ocsp-response"
    assert headers["Cache-Control"].startswith("max-age=")
    assert headers["Cache-Control"].endswith(", public, no-transform, must-revalidate")
    assert {"Last-Modified", "Expires", "ETag"} <= set(headers)
    response = x509_ocsp.load_der_ocsp_response(body)
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == cert.serial_int


def test_http_errors_are_ocsp_errors(live_leaf):
    cert, _ = live_leaf
    url = _aia_ocsp_url(cert.pem)
    status, _, body = _get(f"{url}/not-base64!")
    assert status == 200
    assert x509_ocsp.load_der_ocsp_response(body).response_status == (
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    request = urllib.request.Request(url, data=b"x", method="PUT")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    refused.value.close()
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "GET, POST"


def test_openssl_fetches_the_crl_from_the_distribution_point(files, live_leaf, system_actor):
    cert, path = live_leaf
    chain = ["-CAfile", str(files["root"]), "-untrusted", str(files["ca"])]
    crl_publish(actor=system_actor)
    result = run(["openssl", "verify", "-crl_check", "-crl_download", *chain, str(path)])
    assert (result.returncode, result.stdout.strip()) == (0, f"{path}: OK"), result.stderr
    certificate_revoke(certificate=cert, reason="affiliationChanged", actor=system_actor)
    result = run(["openssl", "verify", "-crl_check", "-crl_download", *chain, str(path)])
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr
