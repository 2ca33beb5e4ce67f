"""Every CSR rejection, on hand-made hostile inputs. A rejected upload stores nothing but an
audit record, and an upload containing a private key leaves no trace of the key anywhere."""

import base64
import logging
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.hazmat.primitives.serialization import pkcs12

from kernel.models import AuditRecord
from pki import csr as codes
from pki.csr import CsrRejected, csr_parse
from pki.models import Certificate, CertificateRequest
from pki.services import csr_submit
from tests.keys import dsa_key, ec_key, key_pem, make_csr, rsa_key

pytestmark = pytest.mark.django_db


def _openssl_csr(tmp_path, digest: str) -> bytes:
    key = tmp_path / "k.pem"
    key.write_bytes(key_pem(rsa_key(2048)))
    return subprocess.run(
        ["openssl", "req", "-new", "-key", str(key), f"-{digest}", "-subj", "/CN=legacy"],
        capture_output=True,
        check=True,
    ).stdout


def _tampered() -> bytes:
    der = bytearray(make_csr(common_name="requested-name", encoding=serialization.Encoding.DER))
    at = der.index(b"requested-name")
    der[at] = ord("R")  # same length, still valid DER, no longer what the key signed
    return bytes(der)


def _self_signed_cert(encoding=serialization.Encoding.PEM) -> bytes:
    from datetime import UTC, datetime, timedelta

    key = ec_key()
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not-a-csr")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(encoding)


def _pkcs12() -> bytes:
    key = ec_key()
    return pkcs12.serialize_key_and_certificates(
        b"bundle", key, None, None, serialization.BestAvailableEncryption(b"pw")
    )


HOSTILE = {
    "empty": (lambda _: b"", codes.CSR_EMPTY),
    "whitespace only": (lambda _: b" \r\n\t\n", codes.CSR_EMPTY),
    "over 64 KiB": (lambda _: make_csr() + b"\n" * (64 * 1024), codes.CSR_TOO_LARGE),
    "garbage bytes": (lambda _: b"\x00\x01hello, this is not a CSR", codes.CSR_MALFORMED),
    "broken base64": (
        lambda _: (
            b"-----BEGIN CERTIFICATE REQUEST-----\n!!!notbase64!!!\n"
            b"-----END CERTIFICATE REQUEST-----\n"
        ),
        codes.CSR_MALFORMED,
    ),
    "unterminated block": (lambda _: make_csr()[:-40], codes.CSR_MALFORMED),
    "leading junk": (
        lambda _: b"Certificate Request:\n    Data: ...\n" + make_csr(),
        codes.CSR_MALFORMED,
    ),
    "public key instead": (
        lambda _: (
            ec_key()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ),
        codes.CSR_MALFORMED,
    ),
    "two CSRs": (lambda _: make_csr() + make_csr(), codes.CSR_MULTIPLE_OBJECTS),
    "CSR and certificate": (lambda _: make_csr() + _self_signed_cert(), codes.CSR_MULTIPLE_OBJECTS),
    "CSR then its key": (lambda _: make_csr() + key_pem(ec_key()), codes.CSR_CONTAINS_PRIVATE_KEY),
    "key then CSR": (lambda _: key_pem(ec_key()) + make_csr(), codes.CSR_CONTAINS_PRIVATE_KEY),
    "encrypted PKCS#8 key": (
        lambda _: key_pem(ec_key(), password=b"secret"),
        codes.CSR_CONTAINS_PRIVATE_KEY,
    ),
    "traditional RSA key": (
        lambda _: rsa_key(2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        codes.CSR_CONTAINS_PRIVATE_KEY,
    ),
    "OpenSSH key": (
        lambda _: ec_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        codes.CSR_CONTAINS_PRIVATE_KEY,
    ),
    "DER PKCS#8 key": (
        lambda _: ec_key().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        codes.CSR_CONTAINS_PRIVATE_KEY,
    ),
    "DER encrypted PKCS#8 key": (
        lambda _: ec_key().private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        ),
        codes.CSR_CONTAINS_PRIVATE_KEY,
    ),
    "PKCS#12 bundle": (lambda _: _pkcs12(), codes.CSR_CONTAINS_PRIVATE_KEY),
    "certificate PEM": (lambda _: _self_signed_cert(), codes.CSR_IS_CERTIFICATE),
    "certificate DER": (
        lambda _: _self_signed_cert(serialization.Encoding.DER),
        codes.CSR_IS_CERTIFICATE,
    ),
    "tampered CSR": (lambda _: _tampered(), codes.CSR_BAD_SIGNATURE),
    "RSA-1024": (lambda _: make_csr(rsa_key(1024)), codes.CSR_KEY_NOT_ALLOWED),
    "RSA-4160": (lambda _: make_csr(rsa_key(4160)), codes.CSR_KEY_NOT_ALLOWED),
    "RSA exponent 3": (lambda _: make_csr(rsa_key(2048, exponent=3)), codes.CSR_KEY_NOT_ALLOWED),
    "EC secp256k1": (lambda _: make_csr(ec_key(ec.SECP256K1())), codes.CSR_KEY_NOT_ALLOWED),
    "EC P-521": (lambda _: make_csr(ec_key(ec.SECP521R1())), codes.CSR_KEY_NOT_ALLOWED),
    "DSA-2048": (lambda _: make_csr(dsa_key()), codes.CSR_KEY_NOT_ALLOWED),
    "Ed448": (lambda _: make_csr(ed448.Ed448PrivateKey.generate()), codes.CSR_KEY_NOT_ALLOWED),
    "SHA-1 signature": (lambda p: _openssl_csr(p, "sha1"), codes.CSR_WEAK_SIGNATURE),
    "MD5 signature": (lambda p: _openssl_csr(p, "md5"), codes.CSR_WEAK_SIGNATURE),
    "SHA-224 signature": (
        lambda _: make_csr(algorithm=hashes.SHA224()),
        codes.CSR_SIGNATURE_NOT_ALLOWED,
    ),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_upload_is_rejected_with_its_code_and_only_audited(
    case, participant, system_actor, tmp_path
):
    make, expected = HOSTILE[case]
    data = make(tmp_path)
    requests_before = CertificateRequest.objects.count()
    certificates_before = Certificate.objects.count()
    last_audit = AuditRecord.objects.order_by("-id").first()

    with pytest.raises(CsrRejected) as rejected:
        csr_submit(participant=participant, data=data, actor=system_actor)

    assert rejected.value.code == expected
    assert rejected.value.status_code == 400
    assert rejected.value.message == codes.MESSAGES[expected]
    assert CertificateRequest.objects.count() == requests_before
    assert Certificate.objects.count() == certificates_before
    (record,) = AuditRecord.objects.filter(pk__gt=last_audit.pk)  # one record, this one
    assert record.event == "csr.rejected"
    assert record.details["code"] == expected
    assert record.target_id == str(participant.pk)


def test_private_key_upload_leaves_no_trace_of_the_key(participant, system_actor, caplog):
    caplog.set_level(logging.DEBUG)
    secret = key_pem(ec_key())
    body = b"".join(secret.splitlines()[1:-1])  # the base64 key material
    with pytest.raises(CsrRejected) as rejected:
        csr_submit(participant=participant, data=make_csr() + secret, actor=system_actor)

    assert rejected.value.code == codes.CSR_CONTAINS_PRIVATE_KEY
    assert "keep your private key" in rejected.value.message.lower()
    record = AuditRecord.objects.order_by("-id").first()
    stored = str(record.details) + record.actor_label + record.target_id
    for chunk in (body[:24], body[-24:], base64.b64decode(body)[:16].hex()):
        text = chunk if isinstance(chunk, str) else chunk.decode()
        assert text not in stored
        assert text not in caplog.text
    assert not CertificateRequest.objects.filter(participant=participant).exists()


def test_cryptography_alone_would_have_accepted_the_hostile_bundles():
    """Why the raw-byte checks exist: the parser ignores what follows the first block."""
    bundle = make_csr() + key_pem(ec_key())
    assert x509.load_pem_x509_csr(bundle).is_signature_valid
    with pytest.raises(CsrRejected):
        csr_parse(bundle)


def test_key_reuse_is_409_and_changes_nothing(participant, system_actor, issue):
    key = ec_key()
    issue(participant, make_csr(key))
    before = CertificateRequest.objects.count()
    with pytest.raises(CsrRejected) as rejected:
        csr_submit(
            participant=participant, data=make_csr(key, common_name="again"), actor=system_actor
        )
    assert rejected.value.code == codes.CSR_KEY_REUSED
    assert rejected.value.status_code == 409
    assert CertificateRequest.objects.count() == before


def test_key_reuse_across_participants_is_refused_too(firm, system_actor, issue):
    from tests.factories import ParticipantFactory

    key = ec_key()
    issue(ParticipantFactory(firm=firm), make_csr(key))
    with pytest.raises(CsrRejected) as rejected:
        csr_submit(
            participant=ParticipantFactory(firm=firm), data=make_csr(key), actor=system_actor
        )
    assert rejected.value.code == codes.CSR_KEY_REUSED


def test_key_revoked_for_compromise_is_blocked_forever(participant, system_actor, issue):
    from django.utils import timezone

    key = ec_key()
    certificate = issue(participant, make_csr(key))
    certificate.mark_revoked(reason=Certificate.Reason.KEY_COMPROMISE, at=timezone.now())
    certificate.save()
    with pytest.raises(CsrRejected) as rejected:
        csr_submit(participant=participant, data=make_csr(key), actor=system_actor)
    assert rejected.value.code == codes.CSR_KEY_COMPROMISED
    assert rejected.value.status_code == 409


def test_same_csr_twice_while_pending_is_409(participant, system_actor):
    csr = make_csr()
    csr_submit(participant=participant, data=csr, actor=system_actor)
    with pytest.raises(CsrRejected) as rejected:
        csr_submit(participant=participant, data=csr, actor=system_actor)
    assert rejected.value.code == codes.CSR_ALREADY_SUBMITTED
    assert CertificateRequest.objects.filter(participant=participant).count() == 1


@pytest.mark.parametrize(
    "make_key",
    [lambda: rsa_key(2048), lambda: rsa_key(4096), ec_key, lambda: ec_key(ec.SECP384R1())],
    ids=["RSA-2048", "RSA-4096", "EC-P256", "EC-P384"],
)
def test_allowed_keys_are_accepted_in_pem_and_der(make_key, participant, system_actor):
    key = make_key()
    request = csr_submit(
        participant=participant,
        data=make_csr(key, encoding=serialization.Encoding.DER),
        actor=system_actor,
    )
    assert request.status == CertificateRequest.Status.SUBMITTED
    assert "BEGIN CERTIFICATE REQUEST" in request.csr_pem


def test_ed25519_and_new_certificate_request_label_are_accepted(participant, system_actor):
    from tests.keys import ed25519_key

    pem = make_csr(ed25519_key()).replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    request = csr_submit(participant=participant, data=pem, actor=system_actor)
    assert request.key_description == "Ed25519"


def test_hostile_subject_is_stored_escaped(participant, system_actor):
    request = csr_submit(
        participant=participant,
        data=make_csr(common_name="<script>x</script>\x00\r\nCN=admin"),
        actor=system_actor,
    )
    assert request.requested_subject.isprintable()
    assert "\\x0d\\x0a" in request.requested_subject  # CR/LF kept visible, not raw
