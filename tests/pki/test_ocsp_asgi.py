"""The production OCSP responder (uvicorn + ``pki.ocsp_asgi``) over real HTTP: openssl's
client, the in-memory cache and its invalidation by a revocation made in another process."""

import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp as x509_ocsp
from django.conf import settings

from pki import ocsp
from pki.revocation import certificate_revoke
from tests.conftest import run
from tests.keys import ec_key, make_csr

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL,
        reason="the responder's caches and their invalidation need Redis (REDIS_URL)",
    ),
]


@pytest.fixture
def leaf(participant, issue, tmp_path):
    cert = issue(participant, make_csr(ec_key()))
    path = tmp_path / "leaf.pem"
    path.write_text(cert.pem)
    return cert, path


@pytest.fixture
def files(tmp_path, cas):
    root, ca = tmp_path / "root.pem", tmp_path / "client-ca.pem"
    root.write_text(cas["root"].certificate_pem)
    ca.write_text(cas["client"].certificate_pem)
    return {"root": root, "ca": ca}


def _post(url: str, request: bytes) -> x509_ocsp.OCSPResponse:
    http = urllib.request.Request(  # noqa: S310 - loopback test URL
        url, data=request, headers={"Content-Type": "application/ocsp-request"}
    )
    with urllib.request.urlopen(http, timeout=10) as response:  # noqa: S310
        assert response.headers["Content-Type"] == "application/ocsp-response"
        return x509_ocsp.load_der_ocsp_response(response.read())


def _request(cert, cas) -> bytes:
    return (
        x509_ocsp.OCSPRequestBuilder()
        .add_certificate(
            x509.load_pem_x509_certificate(cert.pem.encode()),
            x509.load_pem_x509_certificate(cas["client"].certificate_pem.encode()),
            hashes.SHA1(),  # noqa: S303 - what nginx sends
        )
        .build()
        .public_bytes(serialization.Encoding.DER)
    )


@pytest.mark.parametrize("nonce", [True, False], ids=["nonce", "no-nonce"])
def test_openssl_ocsp_against_the_asgi_responder(ocsp_server, files, leaf, nonce):
    _, path = leaf
    args = ["openssl", "ocsp", "-issuer", str(files["ca"]), "-cert", str(path)]
    args += ["-url", f"{ocsp_server.url}/pki/ocsp", "-CAfile", str(files["root"])]
    result = run([*args] if nonce else [*args, "-no_nonce"], timeout=20)
    lines = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, lines
    assert "Response verify OK" in lines
    assert f"{path}: good" in lines
    assert not [line for line in lines if "WARNING" in line]


def test_a_revocation_reaches_the_memory_cache_of_another_process(
    ocsp_server, leaf, cas, system_actor
):
    cert, _ = leaf
    url, request = f"{ocsp_server.url}/pki/ocsp", _request(cert, cas)
    ocsp.presign([cert.serial])
    for _ in range(3):  # now in Redis and in the responder's memory
        assert _post(url, request).certificate_status == x509_ocsp.OCSPCertStatus.GOOD

    certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)
    started = time.monotonic()
    while (status := _post(url, request).certificate_status) != x509_ocsp.OCSPCertStatus.REVOKED:
        assert time.monotonic() - started < 1.0, "still good a second after the revocation"
        time.sleep(0.005)
    assert status == x509_ocsp.OCSPCertStatus.REVOKED
    for _ in range(3):  # and it stays revoked
        assert _post(url, request).certificate_status == x509_ocsp.OCSPCertStatus.REVOKED


def test_errors_and_other_paths(ocsp_server):
    malformed = _post_raw(f"{ocsp_server.url}/pki/ocsp", b"junk")
    assert x509_ocsp.load_der_ocsp_response(malformed).response_status == (
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(f"{ocsp_server.url}/admin/", timeout=10)  # noqa: S310
    not_found.value.close()
    assert not_found.value.code == 404
    put = urllib.request.Request(f"{ocsp_server.url}/pki/ocsp", data=b"x", method="PUT")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(put, timeout=10)  # noqa: S310
    refused.value.close()
    assert refused.value.code == 405


def _post_raw(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body)  # noqa: S310 - loopback test URL
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return response.read()
