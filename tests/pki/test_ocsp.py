"""The RFC 6960 responder core (``pki.ocsp.respond``), in process: every answer it can give,
checked by parsing and verifying the DER with cryptography and by pkilint's OCSP linter."""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from django.test import override_settings

from pki import ocsp
from pki.conf import pki_settings
from pki.models import Certificate
from pki.revocation import certificate_revoke
from pki.selectors import ca_certificate, ocsp_responder_current
from pki.services import server_certificate_issue
from tests.conftest import run, tool
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db

NEEDS_REDIS = pytest.mark.skipif(
    not pki_settings().redis_url,
    reason="pre-signed responses are cached only in Redis (REDIS_URL); without it every "
    "response is signed live, which the other tests cover",
)


@pytest.fixture
def leaf(participant, issue):
    return issue(participant, make_csr(ec_key()))


def _x509(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _request(cert, issuer, *, algorithm=None, nonce: bytes | None = None) -> bytes:
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(
        _x509(cert.pem),
        ca_certificate(issuer),
        algorithm or hashes.SHA1(),  # noqa: S303 - the default CertID hash
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def _request_for_serial(issuer, serial: int) -> bytes:
    ca = ca_certificate(issuer)
    key_bits = ca.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        hashlib.sha1(ca.subject.public_bytes()).digest(),  # noqa: S324 - RFC 6960 CertID
        hashlib.sha1(key_bits).digest(),  # noqa: S324
        serial,
        hashes.SHA1(),  # noqa: S303
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


def _signed(answer: ocsp.Answer) -> x509_ocsp.OCSPResponse:
    """Parse a successful response and check its signature against the current delegate."""
    response = x509_ocsp.load_der_ocsp_response(answer.body)
    assert response.response_status == x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    delegate = _x509(ocsp_responder_current().pem)
    assert response.certificates == [delegate]
    assert response.responder_key_hash == (
        x509.SubjectKeyIdentifier.from_public_key(delegate.public_key()).digest
    )
    delegate.public_key().verify(
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),
    )
    return response


def test_good(leaf, cas):
    now = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        response = _signed(ocsp.respond(_request(leaf, cas["client"])))
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == leaf.serial_int
    assert response.this_update_utc == now
    assert response.next_update_utc == now + timedelta(hours=4)
    assert isinstance(response.hash_algorithm, hashes.SHA1)
    assert list(response.extensions) == []


def test_the_answer_uses_the_requests_hash_algorithm(leaf, cas):
    request = _request(leaf, cas["client"], algorithm=hashes.SHA256())
    response = _signed(ocsp.respond(request))
    parsed = x509_ocsp.load_der_ocsp_request(request)
    assert isinstance(response.hash_algorithm, hashes.SHA256)
    assert response.issuer_key_hash == parsed.issuer_key_hash
    assert response.issuer_name_hash == parsed.issuer_name_hash
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.GOOD


@pytest.mark.parametrize(
    ("reason", "flag"),
    [
        ("keyCompromise", x509.ReasonFlags.key_compromise),
        ("affiliationChanged", x509.ReasonFlags.affiliation_changed),
        ("superseded", x509.ReasonFlags.superseded),
        ("cessationOfOperation", x509.ReasonFlags.cessation_of_operation),
        ("privilegeWithdrawn", x509.ReasonFlags.privilege_withdrawn),
        ("unspecified", None),
    ],
)
def test_revoked_with_time_and_reason(leaf, cas, system_actor, reason, flag):
    revoked = certificate_revoke(certificate=leaf, reason=reason, actor=system_actor)
    response = _signed(ocsp.respond(_request(leaf, cas["client"])))
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == revoked.revoked_at.replace(microsecond=0)
    assert response.revocation_reason == flag


def test_never_issued_serial_is_revoked_with_extended_revoke(cas):
    serial = 0x1234567890ABCDEF
    answer = ocsp.respond(_request_for_serial(cas["client"], serial))
    response = _signed(answer)
    assert response.serial_number == serial
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_time_utc == datetime(1970, 1, 1, tzinfo=UTC)
    assert response.revocation_reason == x509.ReasonFlags.certificate_hold
    (extension,) = response.extensions
    assert extension.oid.dotted_string == "1.3.6.1.5.5.7.48.1.9"
    assert answer.cacheable is False


def test_nonce_is_echoed_and_the_answer_is_not_cacheable(leaf, cas):
    nonce = bytes(range(16))
    answer = ocsp.respond(_request(leaf, cas["client"], nonce=nonce))
    response = _signed(answer)
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert answer.cacheable is False
    assert ("Cache-Control", "no-store") in answer.headers()


def _status_only(body: bytes) -> x509_ocsp.OCSPResponseStatus:
    return x509_ocsp.load_der_ocsp_response(body).response_status


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30\x03\x02\x01\x01",
        b"garbage" * 10,
        b"\x30" + b"\x82\xff\xff" + b"\x00" * 5000,  # over the size limit
    ],
    ids=["empty", "not-an-ocsp-request", "junk", "too-big"],
)
def test_malformed_requests(data, cas):
    answer = ocsp.respond(data)
    assert _status_only(answer.body) == x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert ("Cache-Control", "no-store") in answer.headers()


@pytest.mark.parametrize("size", [0, 33])
def test_nonce_outside_rfc_8954_bounds_is_malformed(leaf, cas, size):
    request = _request(leaf, cas["client"], nonce=b"\x01" * size)
    assert _status_only(ocsp.respond(request).body) == (
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


def test_two_certificates_in_one_request_are_malformed(tmp_path, participant, issue, cas):
    first, second = (issue(participant, make_csr(ec_key())) for _ in range(2))
    paths = {}
    for name, pem in {
        "ca": cas["client"].certificate_pem,
        "a": first.pem,
        "b": second.pem,
    }.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_text(pem)
    request = tmp_path / "req.der"
    result = run(
        [
            "openssl", "ocsp", "-issuer", str(paths["ca"]), "-cert", str(paths["a"]),
            "-cert", str(paths["b"]), "-reqout", str(request),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _status_only(ocsp.respond(request.read_bytes()).body) == (
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


def test_another_issuer_is_unauthorized(cas, system_actor):
    server = server_certificate_issue(
        dns_names=["rfq.keyline.example"], ip_addresses=[], actor=system_actor
    )
    request = _request(server.certificate, cas["server"])
    assert _status_only(ocsp.respond(request).body) == x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
    # The root's key and name: not ours to answer for either.
    assert _status_only(ocsp.respond(_request_for_serial(cas["root"], 5)).body) == (
        x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
    )


def test_rfc_5019_caching_headers(leaf, cas):
    now = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(now, tick=False):
        answer = ocsp.respond(_request(leaf, cas["client"]))
        headers = dict(answer.headers(now + timedelta(minutes=10)))
    assert headers["Content-Type"] == "application/ocsp-response"
    assert headers["Content-Length"] == str(len(answer.body))
    assert headers["Cache-Control"] == "max-age=13800, public, no-transform, must-revalidate"
    assert headers["Last-Modified"] == format_datetime(now, usegmt=True)
    assert headers["Expires"] == format_datetime(now + timedelta(hours=4), usegmt=True)
    assert headers["ETag"] == f'"{hashlib.sha1(answer.body).hexdigest()}"'  # noqa: S324


@NEEDS_REDIS
def test_presigned_answers_come_from_the_cache(leaf, cas):
    signed_at = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    with time_machine.travel(signed_at, tick=False):
        assert ocsp.presign([leaf.serial]) == 1
    with time_machine.travel(signed_at + timedelta(minutes=3), tick=False):
        first = ocsp.respond(_request(leaf, cas["client"]))
        second = ocsp.respond(_request(leaf, cas["client"]))
    assert first.body == second.body
    assert first.cacheable
    assert _signed(first).this_update_utc == signed_at  # not signed now: served from Redis


@NEEDS_REDIS
def test_a_status_change_drops_the_cached_answer_at_once(
    leaf, cas, system_actor, django_capture_on_commit_callbacks
):
    ocsp.presign([leaf.serial])
    ctx = ocsp.context()
    key = ocsp._cache_key(ctx, "sha1", leaf.serial_int)
    assert ocsp._store().get(key) is not None
    ocsp.responses_forget([leaf])
    assert ocsp._store().get(key) is None

    ocsp.presign([leaf.serial])
    with django_capture_on_commit_callbacks(execute=True):
        certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
    # The re-sign queued by the change (run eagerly here) put the revoked answer back in the
    # cache, before anyone asked.
    cached = x509_ocsp.load_der_ocsp_response(ocsp.Answer.unpack(ocsp._store().get(key)).body)
    assert cached.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
    response = _signed(ocsp.respond(_request(leaf, cas["client"])))
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED


def _lint(path) -> list[tuple[str, str]]:
    result = run([tool("lint_ocsp_response"), "lint", "-f", "JSON", str(path)])
    assert result.stderr == ""
    return [
        (d["severity"], d["code"])
        for r in json.loads(result.stdout)["results"]
        for d in r["finding_descriptions"]
    ]


def test_pkilint_finds_no_error_in_any_answer(
    tmp_path, leaf, participant, issue, cas, system_actor
):
    revoked = issue(participant, make_csr(ec_key()))
    certificate_revoke(certificate=revoked, reason="keyCompromise", actor=system_actor)
    answers = {
        "good": ocsp.respond(_request(leaf, cas["client"], nonce=b"\x07" * 16)),
        "revoked": ocsp.respond(_request(revoked, cas["client"])),
        "never-issued": ocsp.respond(_request_for_serial(cas["client"], 77)),
    }
    for name, answer in answers.items():
        path = tmp_path / f"{name}.der"
        path.write_bytes(answer.body)
        findings = _lint(path)
        assert [f for f in findings if f[0] in ("ERROR", "FATAL")] == [], (name, findings)


def test_the_responder_needs_only_the_ocsp_key_passphrase(leaf, cas):
    """A responder host holds the delegate key's passphrase, never the CA passphrase."""
    with override_settings(KEYLINE_CA_PASSPHRASE="", KEYLINE_CA_PASSPHRASE_FILE=""):
        answer = ocsp.respond(_request(leaf, cas["client"], nonce=b"\x01" * 8))  # signs live
    assert _signed(answer).certificate_status == x509_ocsp.OCSPCertStatus.GOOD


def test_forgetting_and_reading_answers_needs_no_key(leaf, cas):
    """Web processes drop and read cached answers; only signing opens the delegate key."""
    no_secrets = {
        "KEYLINE_CA_PASSPHRASE": "",
        "KEYLINE_CA_PASSPHRASE_FILE": "",
        "KEYLINE_OCSP_KEY_PASSPHRASE": "",
        "KEYLINE_OCSP_KEY_PASSPHRASE_FILE": "",
    }
    with override_settings(**no_secrets):
        ocsp.responses_forget([leaf])
        assert ocsp.cached_status(leaf) is None
        answer = ocsp.respond(_request(leaf, cas["client"]))  # a live signature: refused
    assert _status_only(answer.body) == x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR


@NEEDS_REDIS
def test_an_answer_signed_before_a_revocation_is_never_cached_after_it(
    leaf, cas, system_actor, monkeypatch
):
    """The race: a cache miss reads "good", the certificate is revoked and its answers are
    forgotten, then the miss would cache its stale "good". The generation check refuses."""
    read_status = ocsp._status

    def status_then_revoke(ctx, serial):
        status = read_status(ctx, serial)
        certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
        ocsp.responses_forget([leaf])  # what the revocation's on-commit hook does
        return status

    monkeypatch.setattr(ocsp, "_status", status_then_revoke)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):  # noqa: S303
        ocsp.responses_forget([leaf])
        leaf.refresh_from_db()
        Certificate.objects.filter(pk=leaf.pk).update(status="active", revoked_at=None)
        stale = ocsp.respond(_request(leaf, cas["client"], algorithm=algorithm))
        assert _signed(stale).certificate_status == x509_ocsp.OCSPCertStatus.GOOD
        monkeypatch.setattr(ocsp, "_status", read_status)
        fresh = ocsp.respond(_request(leaf, cas["client"], algorithm=algorithm))
        assert _signed(fresh).certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
        monkeypatch.setattr(ocsp, "_status", status_then_revoke)


@NEEDS_REDIS
def test_a_presign_run_never_caches_an_answer_made_stale_during_the_run(
    leaf, cas, system_actor, monkeypatch
):
    sign = ocsp._sign

    def sign_then_revoke(*args, **kwargs):
        answer = sign(*args, **kwargs)
        if (
            kwargs["status"].revoked_at is None
            and not Certificate.objects.get(pk=leaf.pk).revoked_at
        ):
            certificate_revoke(certificate=leaf, reason="superseded", actor=system_actor)
            ocsp.responses_forget([leaf])
        return answer

    monkeypatch.setattr(ocsp, "_sign", sign_then_revoke)
    assert ocsp.presign([leaf.serial]) == 0  # signed "good", revoked meanwhile: not cached
    monkeypatch.setattr(ocsp, "_sign", sign)
    assert ocsp.cached_status(leaf) is None
    assert ocsp.presign([leaf.serial]) == 1
    assert ocsp.cached_status(leaf)["status"] == "revoked"
