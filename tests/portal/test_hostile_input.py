"""Hostile and malformed input through the portal's pages: markup is escaped wherever it is
shown, bad identifiers are refused at once with the field's own error, oversized and disguised
uploads are refused before anything is stored, a private key is never stored nor echoed, and
the applicant's call-back code and the officer's call-back number cannot be gamed."""

import html
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from kernel.audit import Actor
from kernel.lei import lei_with_check_digits
from kernel.models import AuditRecord, Firm, Participant
from pki.models import CertificateRequest
from portal import services
from portal.models import Application, CallbackChallenge, Document, Invitation, PortalAccount
from tests.factories import FirmFactory, ParticipantFactory
from tests.keys import ec_key, key_pem, make_csr
from tests.portal.conftest import PASSWORD, verify_session

pytestmark = pytest.mark.django_db

PHONE = "+44 20 7946 0999"
VALID_LEI = lei_with_check_digits("984500HOSTILE00001")


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.KEYLINE_DOCUMENTS_DIR = str(tmp_path / "documents")


def fields(**changes) -> dict:
    return {
        "legal_name": "Plain Ltd",
        "lei": VALID_LEI,
        "jurisdiction": "GB",
        "role": "both",
        "contact_name": "Pat Plain",
        "contact_email": "pat@plain.example",
        "contact_phone": PHONE,
        **changes,
    }


def error_code(response) -> str | None:
    found = re.search(rb'id="error-code">([A-Z0-9_]+)<', response.content)
    return found.group(1).decode() if found else None


def assert_escaped(response, *payloads: str) -> None:
    page = response.content.decode()
    for payload in payloads:
        assert payload not in page, f"{payload!r} is in the page unescaped"
        assert html.escape(payload) in page, f"{payload!r} is not shown (escaped) at all"


def firm_admin(firm: Firm, name: str = "admin") -> Client:
    user = User.objects.create_user(name, f"{name}@firm.example", PASSWORD)
    PortalAccount.objects.create(user=user, firm=firm, role=PortalAccount.Role.ADMIN)
    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    verify_session(client, user)  # administrators add traders with a second factor
    return client


# --- markup in names and free text ---------------------------------------------------------

XSS = {
    "legal_name": "<script>alert('legal')</script> Ltd",
    "contact_name": '<img src=x onerror="alert(1)">',
    "evidence": "GLEIF ok <script>alert('evidence')</script>",
    "source": "<a href=javascript:alert('source')>registry</a>",
    "title": "<svg onload=alert('title')>",
    "reason": "<b onmouseover=alert('reason')>fine</b>",
    "participant": "<script>alert('participant')</script>",
    "csr_reason": "<iframe src=//evil.example>",
    "query": "<script>alert('query')</script>",
}


def test_an_applicants_markup_is_escaped_on_every_page(cas, make_officer):
    applicant = Client()
    response = applicant.post(
        "/apply/", fields(legal_name=XSS["legal_name"], contact_name=XSS["contact_name"])
    )
    assert response.status_code == 201, response.content
    assert_escaped(response, XSS["legal_name"], XSS["contact_name"])
    case_url = re.search(rb'id="case-link" href="([^"]+)"', response.content).group(1).decode()
    assert_escaped(applicant.get(case_url), XSS["legal_name"])

    alice, _ = make_officer("alice")
    bob, _ = make_officer("bob")
    application = Application.objects.get()
    base = f"/officer/cases/{application.pk}/"
    assert_escaped(alice.get("/officer/"), XSS["legal_name"])
    for kind in ("lei_registry", "documents", "sanctions"):
        r = alice.post(
            base + "checks/", {"kind": kind, "outcome": "passed", "evidence": XSS["evidence"]}
        )
        assert r.status_code == 302
    r = alice.post(base + "callback/", {"phone": "+44 1632 960 001", "source": XSS["source"]})
    assert r.status_code == 302
    code = re.search(r'id="callback-code">(\d{6})<', alice.get(base).content.decode()).group(1)
    assert applicant.post(case_url, {"code": code}).status_code == 302
    r = alice.post(base + "checks/", {"kind": "callback", "outcome": "passed", "evidence": "ok"})
    assert r.status_code == 302
    pdf = SimpleUploadedFile("x.pdf", b"%PDF-1.7\n%%EOF\n", "application/pdf")
    assert alice.post(base + "documents/", {"title": XSS["title"], "file": pdf}).status_code == 302
    assert alice.post(base + "prepare/").status_code == 302
    r = bob.post(base + "decide/", {"decision": "approve", "reason": XSS["reason"]})
    assert r.status_code == 302

    page = bob.get(base)
    assert_escaped(
        page,
        XSS["legal_name"],
        XSS["contact_name"],
        XSS["evidence"],
        XSS["source"],
        XSS["title"],
        XSS["reason"],
    )
    assert b"<br" not in page.content.split(b'id="checks"')[1].split(b"</table>")[0]
    found = bob.get("/officer/", {"q": XSS["query"]})
    assert_escaped(found, XSS["query"])
    found = bob.get("/officer/", {"q": "<script>alert('legal')"})
    assert_escaped(found, XSS["legal_name"])


def test_a_firms_markup_is_escaped_on_the_firm_pages(cas, issue, make_officer):
    firm = FirmFactory(legal_name=XSS["legal_name"])
    admin = firm_admin(firm)
    assert_escaped(admin.get("/firm/"), XSS["legal_name"])

    r = admin.post(
        "/firm/participants/new/",
        {
            "trader_id": "desk-1",
            "name": XSS["participant"],
            "email": "desk@firm.example",
            "role": "requester",
        },
    )
    assert r.status_code == 302, r.content
    participant = Participant.objects.get(trader_id="desk-1")
    assert_escaped(admin.get("/firm/"), XSS["participant"])
    assert_escaped(admin.get(r["Location"]), XSS["participant"])

    certificate = issue(participant, make_csr(ec_key()))
    assert_escaped(admin.get(f"/certificates/{certificate.pk}/"), XSS["legal_name"])

    # An officer's rejection reason is shown to the firm.
    assert admin.post(r["Location"], {"csr_text": make_csr(ec_key()).decode()}).status_code == 302
    officer, _ = make_officer("olga")
    assert_escaped(officer.get("/officer/"), XSS["legal_name"])
    pending = CertificateRequest.objects.get(status="submitted")
    r2 = officer.post(
        f"/officer/csrs/{pending.pk}/decide/", {"decision": "reject", "reason": XSS["csr_reason"]}
    )
    assert r2.status_code == 302
    assert_escaped(admin.get(r["Location"]), XSS["csr_reason"])

    # The invitation page names the firm.
    invitation = Invitation.objects.get(participant=participant)
    token = "hostile-invitation-token"
    Invitation.objects.filter(pk=invitation.pk).update(token_hash=services.token_hash(token))
    assert_escaped(Client().get(f"/invite/{token}/"), XSS["legal_name"])


# --- identifiers ---------------------------------------------------------------------------

LEI_FORMAT = "An LEI is 20 characters"
LEI_CHECKSUM = "check digits do not match"


@pytest.mark.parametrize(
    ("lei", "message"),
    [
        (VALID_LEI[:18] + f"{(int(VALID_LEI[18:]) + 1) % 100:02d}", LEI_CHECKSUM),
        (VALID_LEI[:5] + VALID_LEI[6] + VALID_LEI[5] + VALID_LEI[7:], LEI_CHECKSUM),  # swapped
        (VALID_LEI[:19], LEI_FORMAT),
        (VALID_LEI + "0", LEI_FORMAT),
        (VALID_LEI[:18] + "AB", LEI_FORMAT),
        (VALID_LEI[:10] + "-" + VALID_LEI[11:], LEI_FORMAT),
        ("\uff19" + VALID_LEI[1:], LEI_FORMAT),  # a full-width digit
        ("", "This field is required"),
    ],
    ids=["check-digits", "transposed", "19-chars", "21-chars", "letters-as-check", "dash",
         "full-width", "empty"],
)  # fmt: skip
def test_a_bad_lei_is_refused_at_once_with_its_own_error(db, lei, message):
    response = Client().post("/apply/", fields(lei=lei))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == ["lei"], errors
    assert message in errors["lei"][0]
    assert message in response.content.decode()
    assert not Firm.objects.exists()


@pytest.mark.parametrize("written", [VALID_LEI.lower(), f"  {VALID_LEI}  ", VALID_LEI.title()])
def test_an_lei_in_lower_case_or_with_spaces_is_normalised(db, written):
    response = Client().post("/apply/", fields(lei=written))
    assert response.status_code == 201, response.context["form"].errors
    assert Firm.objects.get().lei == VALID_LEI


@pytest.mark.parametrize(
    ("jurisdiction", "message"),
    [
        ("GBR", "at most 2 characters"),
        ("G1", "ISO 3166-1 alpha-2"),
        ("12", "ISO 3166-1 alpha-2"),
        ("G", "ISO 3166-1 alpha-2"),
        ("Ü1", "ISO 3166-1 alpha-2"),
        ("", "This field is required"),
    ],
)
def test_a_jurisdiction_that_is_not_two_letters_is_refused(db, jurisdiction, message):
    response = Client().post("/apply/", fields(jurisdiction=jurisdiction))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == ["jurisdiction"], errors
    assert message in errors["jurisdiction"][0]
    assert not Firm.objects.exists()


def test_a_lower_case_jurisdiction_is_normalised(db):
    assert Client().post("/apply/", fields(jurisdiction="gb")).status_code == 201
    assert Firm.objects.get().jurisdiction == "GB"


@pytest.mark.parametrize("again", [VALID_LEI, VALID_LEI.lower()])
def test_a_second_application_for_the_same_lei_is_refused(db, again):
    assert Client().post("/apply/", fields()).status_code == 201
    response = Client().post("/apply/", fields(lei=again, legal_name="Copycat Ltd"))
    assert response.status_code == 400
    assert "already exists" in response.context["form"].errors["lei"][0]
    assert Firm.objects.count() == 1
    assert Application.objects.count() == 1


# --- documents -----------------------------------------------------------------------------


@pytest.fixture
def case(db, make_officer) -> tuple[Client, Application]:
    application, _ = services.application_submit(
        fields=fields(), actor=Actor.anonymous("applicant")
    )
    client, _ = make_officer("dora")
    return client, application


def _documents_stored(settings) -> list[Path]:
    directory = Path(settings.KEYLINE_DOCUMENTS_DIR)
    return list(directory.iterdir()) if directory.exists() else []


def test_a_document_over_10_mb_is_refused(case, settings):
    client, application = case
    big = b"%PDF-1.7\n" + b"0" * (10 * 1024 * 1024)
    upload = SimpleUploadedFile("big.pdf", big, "application/pdf")
    response = client.post(
        f"/officer/cases/{application.pk}/documents/", {"title": "Big", "file": upload}
    )
    assert response.status_code == 400
    assert error_code(response) == "DOCUMENT_TOO_LARGE"
    assert not Document.objects.exists()
    assert _documents_stored(settings) == []


@pytest.mark.parametrize(
    ("name", "content", "content_type"),
    [
        ("passport.pdf", b"<html><script>alert(1)</script></html>", "application/pdf"),
        ("passport.pdf", b"MZ\x90\x00 an executable", "application/pdf"),
        ("passport.pdf", b" %PDF-1.7 (the magic is not at the start)", "application/pdf"),
        ("scan.png", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/png"),
        ("scan.jpg", b"GIF89a not a jpeg", "image/jpeg"),
        ("empty.pdf", b"", "application/pdf"),
    ],
    ids=["html", "exe", "late-magic", "svg-as-png", "gif-as-jpeg", "empty"],
)
def test_a_document_whose_content_is_not_what_its_name_says_is_refused(
    case, settings, name, content, content_type
):
    client, application = case
    upload = SimpleUploadedFile(name, content, content_type)
    response = client.post(
        f"/officer/cases/{application.pk}/documents/", {"title": "ID", "file": upload}
    )
    assert response.status_code == 400
    assert error_code(response) in ("DOCUMENT_TYPE", "INVALID_FORM")  # empty: Django refuses
    if content:
        assert error_code(response) == "DOCUMENT_TYPE"
    assert not Document.objects.exists()
    assert _documents_stored(settings) == []


def test_a_real_pdf_is_kept_with_its_detected_type_and_served_as_an_attachment(case):
    client, application = case
    upload = SimpleUploadedFile("x.exe", b"%PDF-1.7\n%%EOF\n", "application/x-msdownload")
    r = client.post(f"/officer/cases/{application.pk}/documents/", {"title": "ok", "file": upload})
    assert r.status_code == 302
    document = Document.objects.get()
    assert document.content_type == "application/pdf"
    served = client.get(f"/officer/cases/{application.pk}/documents/{document.pk}/")
    assert served["Content-Type"] == "application/pdf"
    assert served["Content-Disposition"] == f'attachment; filename="document-{document.pk}"'
    assert served["X-Content-Type-Options"] == "nosniff"


# --- CSR uploads ---------------------------------------------------------------------------


@pytest.fixture
def upload_page(cas, firm) -> tuple[Client, str]:
    participant = ParticipantFactory(firm=firm)
    return firm_admin(firm), f"/firm/participants/{participant.pk}/"


def _key_material(key_bytes: bytes) -> list[str]:
    """Lines of the key's base64 body: none of them may appear anywhere we send or keep."""
    return [line for line in key_bytes.decode().splitlines() if not line.startswith("-----")]


def _post_csr(client: Client, url: str, how: str, data: bytes):
    if how == "file":
        return client.post(url, {"csr_file": SimpleUploadedFile("trader.csr", data)})
    return client.post(url, {"csr_text": data.decode()})


def test_an_oversized_csr_file_is_refused_before_parsing(upload_page):
    client, url = upload_page
    data = make_csr(ec_key()) + b"\n" + b"A" * (17 * 1024)
    response = _post_csr(client, url, "file", data)
    assert response.status_code == 400
    assert "too large" in response.content.decode()
    assert not CertificateRequest.objects.exists()


def test_an_oversized_pasted_csr_is_refused(upload_page):
    client, url = upload_page
    data = make_csr(ec_key()) + b"\n" + b"A" * (17 * 1024)
    response = _post_csr(client, url, "text", data)
    assert response.status_code == 400
    assert "at most 16384 characters" in response.content.decode()
    assert not CertificateRequest.objects.exists()
    assert b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" not in response.content


KEYS = {
    "csr+key": lambda key: make_csr(key) + key_pem(key),
    "key+csr": lambda key: key_pem(key) + make_csr(key),
    "key only": lambda key: key_pem(key),
    "encrypted key": lambda key: key_pem(key, b"a passphrase"),
    "traditional key": lambda key: key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ),
}


@pytest.mark.parametrize("how", ["text", "file"])
@pytest.mark.parametrize("what", list(KEYS))
def test_a_private_key_is_refused_never_stored_and_never_echoed(upload_page, what, how):
    client, url = upload_page
    key = ec_key()
    data = KEYS[what](key)
    audit_before = AuditRecord.objects.order_by("-id").values_list("id", flat=True).first() or 0

    response = _post_csr(client, url, how, data)

    assert response.status_code == 400
    page = response.content.decode()
    assert "(CSR_CONTAINS_PRIVATE_KEY)" in page
    assert "PRIVATE KEY-----" not in page
    secret_lines = [line for line in _key_material(data) if len(line) > 20]
    secret_lines = [line for line in secret_lines if line not in make_csr(key).decode()]
    assert secret_lines
    for line in secret_lines:
        assert line not in page, "the private key was echoed back"
    assert not CertificateRequest.objects.exists()
    (record,) = AuditRecord.objects.filter(pk__gt=audit_before)
    assert record.event == "csr.rejected"
    assert record.details["code"] == "CSR_CONTAINS_PRIVATE_KEY"
    assert not any(line in str(record.details) for line in secret_lines)


def test_a_pasted_csr_that_fails_is_not_echoed_either(upload_page):
    client, url = upload_page
    response = _post_csr(client, url, "text", b"-----BEGIN CERTIFICATE REQUEST-----\nnot\n")
    assert response.status_code == 400
    assert "(CSR_MALFORMED)" in response.content.decode()
    assert not CertificateRequest.objects.exists()


# --- invitations ---------------------------------------------------------------------------


def _invitation(firm: Firm, token: str, **changes) -> Invitation:
    return Invitation.objects.create(
        firm=firm,
        email="invitee@firm.example",
        role=PortalAccount.Role.ADMIN,
        token_hash=services.token_hash(token),
        created_by="test",
        expires_at=changes.pop("expires_at", timezone.now() + timedelta(days=7)),
        **changes,
    )


ACCEPT = {
    "username": "invitee",
    "password": "a long pass phrase 42",
    "password2": "a long pass phrase 42",
}


@pytest.mark.parametrize(
    "state", ["unknown token", "truncated token", "used", "expired", "expired this second"]
)
def test_a_bad_invitation_is_404_and_creates_nobody(firm, state):
    token = "a-valid-looking-invitation-token-0123456789"
    if state == "used":
        _invitation(firm, token, used_at=timezone.now() - timedelta(hours=1))
    elif state == "expired":
        _invitation(firm, token, expires_at=timezone.now() - timedelta(minutes=1))
    elif state == "expired this second":
        _invitation(firm, token, expires_at=timezone.now())
    elif state == "truncated token":
        _invitation(firm, token)
        token = token[:-1]
    users = User.objects.count()
    for response in (
        Client().get(f"/invite/{token}/"),
        Client().post(f"/invite/{token}/", ACCEPT),
    ):
        assert response.status_code == 404
        assert error_code(response) == "INVITATION_INVALID"
    assert User.objects.count() == users


def test_an_invitation_works_once(firm):
    _invitation(firm, "one-time-token")
    assert Client().post("/invite/one-time-token/", ACCEPT).status_code == 302
    again = Client().post("/invite/one-time-token/", {**ACCEPT, "username": "invitee2"})
    assert again.status_code == 404
    assert not User.objects.filter(username="invitee2").exists()


# --- the call-back -------------------------------------------------------------------------


@pytest.fixture
def callback(db, make_officer):
    """(applicant client, case url, officer client, application, code)."""
    application, token = services.application_submit(
        fields=fields(), actor=Actor.anonymous("applicant")
    )
    officer, _ = make_officer("carl")
    base = f"/officer/cases/{application.pk}/"
    r = officer.post(base + "callback/", {"phone": "+44 1632 960 123", "source": "GLEIF"})
    assert r.status_code == 302
    code = re.search(r'id="callback-code">(\d{6})<', officer.get(base).content.decode()).group(1)
    return Client(), f"/apply/case/{token}/", officer, application, code


def _wrong(code: str, n: int) -> str:
    return f"{(int(code) + n) % 10**6:06d}"


def test_five_wrong_callback_codes_lock_the_challenge(callback):
    applicant, case_url, officer, application, code = callback
    for n in range(1, 6):
        response = applicant.post(case_url, {"code": _wrong(code, n)})
        assert response.status_code == 400
        assert "That is not the code" in response.content.decode()
    locked = applicant.post(case_url, {"code": code})
    assert locked.status_code == 409
    assert error_code(locked) == "CALLBACK_LOCKED"
    challenge = CallbackChallenge.objects.get()
    assert challenge.confirmed_at is None
    assert challenge.attempts == 5
    assert AuditRecord.objects.filter(event="callback.code_wrong").count() == 5
    assert not AuditRecord.objects.filter(event="callback.confirmed").exists()
    # The officer cannot record the call-back as passed ...
    base = f"/officer/cases/{application.pk}/"
    r = officer.post(base + "checks/", {"kind": "callback", "outcome": "passed", "evidence": "x"})
    assert error_code(r) == "CALLBACK_NOT_CONFIRMED"
    # ... until a new call gives a new code, which works.
    officer.post(base + "callback/", {"phone": "+44 1632 960 123", "source": "GLEIF"})
    new_code = re.search(r'id="callback-code">(\d{6})<', officer.get(base).content.decode())[1]
    assert applicant.post(case_url, {"code": code if code != new_code else "x"}).status_code in (
        400,
        409,
    )
    assert applicant.post(case_url, {"code": new_code}).status_code == 302


def test_a_malformed_code_does_not_use_an_attempt(callback):
    applicant, case_url, _, _, code = callback
    for bad in ("12345", "1234567", ""):
        assert applicant.post(case_url, {"code": bad}).status_code == 400
    assert CallbackChallenge.objects.get().attempts == 0
    assert applicant.post(case_url, {"code": code}).status_code == 302


def test_an_expired_callback_code_is_refused(callback):
    applicant, case_url, _, _, code = callback
    CallbackChallenge.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = applicant.post(case_url, {"code": code})
    assert response.status_code == 409
    assert error_code(response) == "CALLBACK_NOT_PENDING"
    assert CallbackChallenge.objects.get().confirmed_at is None


@pytest.mark.parametrize(
    "dialled",
    [
        PHONE,
        "+44-20-7946-0999",
        "+44.20.7946.0999",
        "(+44) 20 7946 0999",
        "+442079460999",
        " +44 20 7946 0999 ",
        "0044 20 7946 0999",  # the international prefix spelled out
        "020 7946 0999",  # the national format
        "+44 (0)20 7946 0999",  # both at once
    ],
)
def test_a_callback_to_the_applications_own_number_is_refused(db, make_officer, dialled):
    application, _ = services.application_submit(
        fields=fields(), actor=Actor.anonymous("applicant")
    )
    officer, _ = make_officer("cora")
    response = officer.post(
        f"/officer/cases/{application.pk}/callback/", {"phone": dialled, "source": "website"}
    )
    assert response.status_code == 400
    assert error_code(response) == "PHONE_NOT_INDEPENDENT"
    assert not CallbackChallenge.objects.exists()


@pytest.mark.parametrize("dialled", ["+44 20 7946 0998", "+1 212 555 0199", "+44 20 7946 09990"])
def test_a_callback_to_another_number_is_allowed(db, make_officer, dialled):
    application, _ = services.application_submit(
        fields=fields(), actor=Actor.anonymous("applicant")
    )
    officer, _ = make_officer("cora")
    response = officer.post(
        f"/officer/cases/{application.pk}/callback/", {"phone": dialled, "source": "website"}
    )
    assert response.status_code == 302
    assert CallbackChallenge.objects.count() == 1
