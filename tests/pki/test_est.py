"""EST (RFC 7030) at the app, as the terminator forwards it (pki.est, pki.est_views): the
answers' formats read back by cryptography, pyasn1 and openssl; enrollment with a one-time
token, signed at once or after an officer; re-enrollment inside the window with a new key;
superseding on first use and after the grace period; and every refusal a specific code that
issues nothing and is audited. The same flows through nginx, with the trader's client, are in
tests/client/test_client_platform.py."""

import base64
import subprocess
import threading
from datetime import timedelta
from urllib.parse import quote

import pytest
import time_machine
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from django.conf import settings
from django.db import IntegrityError, connection
from django.test import Client
from django.utils import timezone
from pyasn1.codec.der.decoder import decode as der_decode
from pyasn1_alt_modules import rfc7030

from kernel.audit import Actor
from kernel.errors import DomainError
from kernel.models import AuditRecord
from pki import est
from pki.models import Certificate, CertificateRequest, EnrollmentToken
from pki.services import certificate_issue
from pki.trust import certificate_decide
from tests.factories import ParticipantFactory
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db

EST = "/.well-known/est/"
OFFICER = Actor.system("officer in the test")


def terminator(pem: str | None = None) -> dict:
    """What nginx forwards: its secret, and the client certificate when there is one."""
    headers = {"HTTP_X_KEYLINE_TERMINATOR": settings.KEYLINE_TERMINATOR_SECRET}
    if pem is None:
        headers["HTTP_X_KEYLINE_CLIENT_VERIFY"] = "NONE"
    else:
        headers["HTTP_X_KEYLINE_CLIENT_VERIFY"] = "SUCCESS"
        headers["HTTP_X_KEYLINE_CLIENT_CERT"] = quote(pem)
    return headers


def basic(trader_id: str, token: str) -> dict:
    return {
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{trader_id}:{token}".encode()).decode()
    }


def csr_b64(key) -> bytes:
    return base64.encodebytes(make_csr(key, encoding=serialization.Encoding.DER))


def enroll(client: Client, trader_id: str, token: str, key, **extra):
    return client.post(
        EST + "simpleenroll",
        csr_b64(key),
        content_type="application/pkcs10",
        **terminator(),
        **basic(trader_id, token),
        **extra,
    )


def reenroll(client: Client, certificate: Certificate, key):
    return client.post(
        EST + "simplereenroll",
        csr_b64(key),
        content_type="application/pkcs10",
        **terminator(certificate.pem),
    )


def issued(response) -> x509.Certificate:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert response["Content-Transfer-Encoding"] == "base64"
    (cert,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(response.content))
    return cert


def refusal(response, status: int, code: str) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert text.startswith(f"{code}: "), text
    return text


def clients():
    return Certificate.objects.filter(kind=Certificate.Kind.CLIENT)


def spki(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def trader(cas):
    return ParticipantFactory()


@pytest.fixture
def auto_signed(trader):
    est.policy_set(firm=trader.firm, actor=OFFICER, auto_sign_enrollment=True)
    return trader


def new_token(participant) -> str:
    return est.enrollment_token_create(participant=participant, actor=OFFICER)[1]


# --- cacerts and csrattrs ---------------------------------------------------------------------


def test_cacerts_is_the_client_chain_as_certs_only_pkcs7(client, cas, tmp_path):
    response = client.get(EST + "cacerts", **terminator())
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"
    der = base64.b64decode(response.content)
    certs = pkcs7.load_der_pkcs7_certificates(der)
    subjects = [c.subject.rfc4514_string() for c in certs]
    assert len(certs) == 2, subjects
    (root,) = [c for c in certs if c.issuer == c.subject]
    (issuing,) = [c for c in certs if c.issuer != c.subject]
    assert issuing.issuer == root.subject
    # openssl reads the answer as the RFC's own shell flow does.
    (tmp_path / "cacerts.p7").write_bytes(response.content)
    out = subprocess.run(
        ["sh", "-c", f"base64 -d {tmp_path}/cacerts.p7 | openssl pkcs7 -inform DER -print_certs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.count("-----BEGIN CERTIFICATE-----") == 2


def test_csrattrs_asks_for_an_ec_p256_key_and_ecdsa_sha256(client, cas):
    response = client.get(EST + "csrattrs", **terminator())
    assert response.status_code == 200
    assert response["Content-Type"] == "application/csrattrs"
    attrs, rest = der_decode(base64.b64decode(response.content), asn1Spec=rfc7030.CsrAttrs())
    assert rest == b""
    assert str(attrs[0]["oid"]) == "1.2.840.10045.4.3.2"
    attribute = attrs[1]["attribute"]
    assert str(attribute["attrType"]) == "1.2.840.10045.2.1"
    curve, _ = der_decode(bytes(attribute["attrValues"][0]))
    assert str(curve) == "1.2.840.10045.3.1.7"  # secp256r1


def test_nothing_answers_without_the_terminator(client, cas):
    for method, path in (("get", "cacerts"), ("get", "csrattrs"), ("post", "simpleenroll")):
        response = getattr(client, method)(EST + path)
        refusal(response, 401, "TERMINATOR_SECRET_INVALID")


# --- simpleenroll -----------------------------------------------------------------------------


def test_a_token_enrolls_a_first_certificate_signed_at_once(client, auto_signed):
    token = new_token(auto_signed)
    key = ec_key()

    cert = issued(enroll(client, auto_signed.trader_id, token, key))

    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == spki(key)
    # The subject is the participant's verified identity, not the CSR's "requested-name".
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == (
        auto_signed.trader_id
    )
    row = EnrollmentToken.objects.get()
    assert row.state() == "used"
    assert row.request.status == CertificateRequest.Status.ISSUED
    assert row.token_sha256 == est.token_sha256(token)
    assert token not in str(list(AuditRecord.objects.values_list("details", flat=True)))
    events = list(AuditRecord.objects.order_by("pk").values_list("event", flat=True))
    assert events[-3:] == ["csr.submitted", "est.enrolled", "certificate.issued"]


def test_without_auto_signing_the_request_waits_for_an_officer(client, trader):
    token, key = new_token(trader), ec_key()

    waiting = enroll(client, trader.trader_id, token, key)

    assert waiting.status_code == 202, waiting.content
    assert waiting["Retry-After"] == str(settings.KEYLINE_EST_RETRY_AFTER_SECONDS)
    assert waiting.content.decode().startswith("EST_PENDING: ")
    # The client asks again with the same request: still waiting, and no second request.
    assert enroll(client, trader.trader_id, token, key).status_code == 202
    assert CertificateRequest.objects.count() == 1
    # An officer signs in the portal; the next retry gets the certificate.
    certificate_issue(request=CertificateRequest.objects.get(), actor=OFFICER)
    assert issued(enroll(client, trader.trader_id, token, key)).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == spki(key)


def test_a_spent_token_is_refused_and_issues_nothing(client, auto_signed):
    token = new_token(auto_signed)
    issued(enroll(client, auto_signed.trader_id, token, ec_key()))
    before = clients().count()

    response = enroll(client, auto_signed.trader_id, token, ec_key())

    refusal(response, 401, "EST_TOKEN_SPENT")
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert clients().count() == before
    assert AuditRecord.objects.filter(event="est.refused", details__code="EST_TOKEN_SPENT").exists()


def test_token_refusals(client, auto_signed):
    trader = auto_signed
    token = new_token(trader)
    refusal(enroll(client, "someone-else", token, ec_key()), 401, "EST_TOKEN_INVALID")
    refusal(enroll(client, trader.trader_id, "est_not-a-token", ec_key()), 401, "EST_TOKEN_INVALID")
    with time_machine.travel(timezone.now() + timedelta(hours=settings.KEYLINE_EST_TOKEN_HOURS)):
        refusal(enroll(client, trader.trader_id, token, ec_key()), 401, "EST_TOKEN_EXPIRED")
    row = EnrollmentToken.objects.get()
    est.enrollment_token_revoke(token=row, actor=OFFICER)
    refusal(enroll(client, trader.trader_id, token, ec_key()), 401, "EST_TOKEN_REVOKED")
    no_auth = client.post(
        EST + "simpleenroll", csr_b64(ec_key()), content_type="application/pkcs10", **terminator()
    )
    refusal(no_auth, 401, "EST_AUTHENTICATION_REQUIRED")
    assert not clients().exists()
    codes = set(
        AuditRecord.objects.filter(event="est.refused").values_list("details__code", flat=True)
    )
    assert codes == {
        "EST_TOKEN_INVALID",
        "EST_TOKEN_EXPIRED",
        "EST_TOKEN_REVOKED",
        "EST_AUTHENTICATION_REQUIRED",
    }


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (b"MIIB", "application/json", "EST_CONTENT_TYPE"),
        (b"not base64 !!", "application/pkcs10", "EST_BODY_NOT_BASE64"),
        (b"", "application/pkcs10", "EST_BODY_EMPTY"),
        (base64.encodebytes(b"\x30\x03\x02\x01\x00"), "application/pkcs10", "CSR_MALFORMED"),
    ],
)
def test_a_bad_body_is_a_400_and_does_not_spend_the_token(
    client, auto_signed, body, content_type, code
):
    token = new_token(auto_signed)
    response = client.post(
        EST + "simpleenroll",
        body,
        content_type=content_type,
        **terminator(),
        **basic(auto_signed.trader_id, token),
    )
    refusal(response, 400, code)
    assert EnrollmentToken.objects.get().state() == "open"
    issued(enroll(client, auto_signed.trader_id, token, ec_key()))  # still good


# --- simplereenroll ---------------------------------------------------------------------------


@pytest.fixture
def enrolled(client, auto_signed):
    """A participant with a certificate enrolled by EST, and its key."""
    key = ec_key()
    issued(enroll(client, auto_signed.trader_id, new_token(auto_signed), key))
    return Certificate.objects.get(participant=auto_signed), key


def in_window(certificate: Certificate):
    return time_machine.travel(certificate.not_after - timedelta(days=5), tick=False)


def test_renewal_outside_the_window_is_refused(client, enrolled):
    certificate, _ = enrolled
    text = refusal(reenroll(client, certificate, ec_key()), 403, "EST_OUTSIDE_RENEWAL_WINDOW")
    assert "Renewal opens at" in text
    assert clients().count() == 1


def test_renewal_inside_the_window_issues_a_successor(client, enrolled):
    certificate, _ = enrolled
    new_key = ec_key()
    with in_window(certificate):
        cert = issued(reenroll(client, certificate, new_key))
        again = issued(reenroll(client, certificate, new_key))  # a retry: the same answer
    assert cert.serial_number == again.serial_number
    successor = Certificate.objects.get(serial=format(cert.serial_number, "x"))
    assert successor.request.renewal_of == certificate
    assert successor.subject == certificate.subject
    certificate.refresh_from_db()
    assert certificate.status == Certificate.Status.ACTIVE  # until the successor is used


def test_renewal_refusals(client, enrolled):
    certificate, old_key = enrolled
    with in_window(certificate):
        refusal(reenroll(client, certificate, old_key), 409, "CSR_KEY_REUSED")
        est.policy_set(firm=certificate.participant.firm, actor=OFFICER, renewal_blocked=True)
        refusal(reenroll(client, certificate, ec_key()), 403, "EST_RENEWAL_BLOCKED")
        est.policy_set(firm=certificate.participant.firm, actor=OFFICER, renewal_blocked=False)
        issued(reenroll(client, certificate, ec_key()))
        refusal(reenroll(client, certificate, ec_key()), 409, "EST_ALREADY_RENEWED")
    assert clients().count() == 2


def test_a_revoked_certificate_cannot_renew(client, enrolled, django_capture_on_commit_callbacks):
    from pki.revocation import certificate_revoke

    certificate, _ = enrolled
    with django_capture_on_commit_callbacks(execute=True):  # the revocation's announcement
        certificate_revoke(certificate=certificate, reason="key_compromise", actor=OFFICER)
    with in_window(certificate):
        response = reenroll(client, certificate, ec_key())
    refusal(response, 401, "CERTIFICATE_REVOKED")
    assert clients().count() == 1


def test_a_wider_window_set_by_an_officer_opens_renewal_earlier(client, enrolled):
    certificate, _ = enrolled
    est.policy_set(firm=certificate.participant.firm, actor=OFFICER, renewal_window_percent=100)
    issued(reenroll(client, certificate, ec_key()))
    assert AuditRecord.objects.filter(event="est.policy_changed").exists()


# --- superseding ------------------------------------------------------------------------------


def test_the_first_use_of_the_successor_revokes_its_predecessor(
    client, enrolled, django_capture_on_commit_callbacks
):
    certificate, _ = enrolled
    est.policy_set(firm=certificate.participant.firm, actor=OFFICER, renewal_window_percent=100)
    successor_cert = issued(reenroll(client, certificate, ec_key()))
    successor = Certificate.objects.get(serial=format(successor_cert.serial_number, "x"))
    assert certificate_decide(certificate.fingerprint_sha256).ok

    with django_capture_on_commit_callbacks(execute=True):  # the revocation's announcement
        whoami = client.get("/api/v1/whoami/", **terminator(successor.pem))

    assert whoami.status_code == 200, whoami.content
    certificate.refresh_from_db()
    assert certificate.status == Certificate.Status.REVOKED
    assert certificate.revocation_reason == Certificate.Reason.SUPERSEDED
    assert certificate_decide(certificate.fingerprint_sha256).code == "CERTIFICATE_REVOKED"
    assert certificate_decide(successor.fingerprint_sha256).supersedes is None
    revoked = AuditRecord.objects.get(event="certificate.revoked", target_id=str(certificate.pk))
    assert (revoked.actor_type, revoked.actor_id) == ("certificate", successor.serial)


def test_an_unused_successor_supersedes_after_the_grace_period(client, enrolled):
    certificate, _ = enrolled
    est.policy_set(firm=certificate.participant.firm, actor=OFFICER, renewal_window_percent=100)
    issued(reenroll(client, certificate, ec_key()))
    assert est.supersede_due() == []
    later = timezone.now() + timedelta(hours=settings.KEYLINE_EST_SUPERSEDE_GRACE_HOURS, minutes=1)
    assert est.supersede_due(later) == [certificate.pk]
    certificate.refresh_from_db()
    assert certificate.revocation_reason == Certificate.Reason.SUPERSEDED
    revoked = AuditRecord.objects.get(event="certificate.revoked", target_id=str(certificate.pk))
    assert revoked.actor_type == "system"
    assert "grace period" in revoked.actor_label
    assert est.supersede_due(later) == []


# --- races ------------------------------------------------------------------------------------


def _race(calls) -> list:
    """Runs the calls at once, each in a thread with its own connection: their outcomes (a
    value or the exception)."""
    start = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(i, call) -> None:
        try:
            start.wait()
            outcomes[i] = call()
        except Exception as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_one_token_used_at_once_with_two_keys_enrolls_once(cas, trader):
    token = new_token(trader)
    csrs = [make_csr(ec_key(), encoding=serialization.Encoding.DER) for _ in range(2)]

    outcomes = _race(
        [lambda c=c: est.enroll(trader_id=trader.trader_id, token=token, csr=c) for c in csrs]
    )

    spent = [o for o in outcomes if isinstance(o, DomainError)]
    submitted = [o for o in outcomes if isinstance(o, est.Submission)]
    assert len(submitted) == 1, outcomes
    assert [o.code for o in spent] == ["EST_TOKEN_SPENT"]
    assert CertificateRequest.objects.filter(participant=trader).count() == 1


@pytest.mark.django_db(transaction=True)
def test_one_certificate_renewed_at_once_with_two_keys_renews_once(cas, trader, issue):
    est.policy_set(firm=trader.firm, actor=OFFICER, renewal_window_percent=100)
    current = issue(trader, make_csr(ec_key()))
    csrs = [make_csr(ec_key(), encoding=serialization.Encoding.DER) for _ in range(2)]

    outcomes = _race([lambda c=c: est.reenroll(certificate=current, csr=c) for c in csrs])

    refused = [o for o in outcomes if isinstance(o, DomainError)]
    assert len([o for o in outcomes if isinstance(o, est.Submission)]) == 1, outcomes
    assert [o.code for o in refused] == ["EST_RENEWAL_PENDING"]
    assert CertificateRequest.objects.filter(renewal_of=current).count() == 1


def test_a_second_renewal_waits_behind_the_first(client, enrolled):
    certificate, _ = enrolled
    est.policy_set(firm=certificate.participant.firm, actor=OFFICER, auto_sign_renewal=False)
    with in_window(certificate):
        assert reenroll(client, certificate, ec_key()).status_code == 202
        refusal(reenroll(client, certificate, ec_key()), 409, "EST_RENEWAL_PENDING")
    with pytest.raises(IntegrityError):  # and the database says so too
        CertificateRequest.objects.create(
            participant=certificate.participant,
            csr_pem="x",
            spki_sha256="0" * 64,
            key_description="EC-secp256r1",
            renewal_of=certificate,
        )
