"""The officers' desk and the firm pages that act: the CSR review page, confirmations that name
what will happen (revoke, suspend/offboard, approve/reject without a default), the firm page,
refusals shown on the page they were asked from, styled error pages, the second factor's retry,
and the upload form an approving officer is not offered."""

import csv
import html
import io
import json
import re
from base64 import b32encode
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.audit import Actor, audit_chain, audit_record
from kernel.models import AuditCheck, AuditRecord, Firm
from pki.models import Certificate, CertificateRequest
from pki.services import csr_submit
from portal import services
from portal.models import Application, PortalAccount
from rfq.models import Quote, Rfq
from tests.factories import FirmFactory, ParticipantFactory, random_lei
from tests.keys import ec_key, make_csr
from tests.portal.conftest import PASSWORD, sign_in, totp_now, verify_session
from tests.rfq.conftest import desk, instruments, one_leg  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.KEYLINE_DOCUMENTS_DIR = str(tmp_path / "documents")


def error_code(response) -> str | None:
    found = re.search(rb'id="error-code">([A-Z0-9_]+)<', response.content)
    return found.group(1).decode() if found else None


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode())))


def follow_messages(client: Client, response) -> str:
    """The page a successful action redirected to, as the user then sees it."""
    assert response.status_code == 302, response.content[:500]
    return text(client.get(response["Location"]))


def pending_csr(participant=None) -> CertificateRequest:
    """A CSR submitted for ``participant`` (a new one by default), waiting for an officer."""
    participant = participant or ParticipantFactory()
    return csr_submit(participant=participant, data=make_csr(ec_key()), actor=Actor.system("t"))


def firm_admin(firm: Firm, name: str = "admin", *, verified: bool = True) -> Client:
    user = User.objects.create_user(name, f"{name}@firm.example", PASSWORD)
    PortalAccount.objects.create(user=user, firm=firm, role=PortalAccount.Role.ADMIN)
    client = Client()
    sign_in(client, name)
    if verified:
        verify_session(client, user)
    return client


# --- the CSR review page --------------------------------------------------------------------


def test_the_csr_review_page_shows_what_the_officer_must_see(cas, issue, make_officer):
    firm = FirmFactory(legal_name="Review Firm Ltd", jurisdiction="DE")
    participant = ParticipantFactory(firm=firm, trader_id="rv-desk")
    earlier = issue(participant, make_csr(ec_key()))
    key = ec_key()
    actor = Actor.system("test")
    first = csr_submit(
        participant=participant, data=make_csr(key, common_name="asks for this"), actor=actor
    )
    second = pending_csr(participant)
    officer, _ = make_officer("olga")

    response = officer.get(f"/officer/csrs/{first.pk}/")

    assert response.status_code == 200
    page = text(response)
    assert "CN=rv-desk,O=Review Firm Ltd,C=DE" in page  # from the verified identity
    assert first.spki_sha256 in page
    assert "asks for this" in page
    assert "Ignored" in page
    assert first.key_description in page
    assert earlier.serial[:13] in page  # the participant's history
    assert f"#{second.pk}" in page
    assert "1 other request for rv-desk is pending" in page
    dashboard = officer.get("/officer/").content.decode()
    assert f'href="/officer/csrs/{first.pk}/"' in dashboard
    assert "2 pending" in dashboard


def test_signing_from_the_review_page_lands_back_on_it_and_says_what_happened(cas, make_officer):
    csr = pending_csr(ParticipantFactory(trader_id="sign-me"))
    officer, _ = make_officer("olga")

    response = officer.post(f"/officer/csrs/{csr.pk}/decide/", {"decision": "sign"})

    assert response["Location"] == f"/officer/csrs/{csr.pk}/"
    certificate = Certificate.objects.get(request=csr)
    page = follow_messages(officer, response)
    assert f"Signed: certificate {certificate.serial} for sign-me" in page
    assert "nothing to decide" in page


@pytest.mark.parametrize(
    ("data", "code"),
    [({"decision": "reject", "reason": " "}, "REASON_REQUIRED"), ({}, "DECISION_REQUIRED")],
)
def test_a_refused_csr_decision_shows_the_review_page_again(cas, make_officer, data, code):
    csr = pending_csr()
    officer, _ = make_officer("olga")

    response = officer.post(f"/officer/csrs/{csr.pk}/decide/", data)

    assert response.status_code == 400
    assert error_code(response) == code
    assert 'id="sign-form"' in response.content.decode()  # the review page, not a dead end
    csr.refresh_from_db()
    assert csr.status == CertificateRequest.Status.SUBMITTED


# --- revoke, confirmed ----------------------------------------------------------------------


def test_revoking_asks_first_and_names_who_loses_access(cas, issue):
    firm = FirmFactory()
    participant = ParticipantFactory(firm=firm, trader_id="rv-1")
    certificate = issue(participant, make_csr(ec_key()))
    admin = firm_admin(firm)

    page = admin.get(f"/certificates/{certificate.pk}/").content.decode()
    assert f'href="/certificates/{certificate.pk}/revoke/"' in page
    assert "Revoke now" not in page  # no one-click revoke any more

    confirm = admin.get(f"/certificates/{certificate.pk}/revoke/")
    assert confirm.status_code == 200
    words = text(confirm)
    assert certificate.serial in words
    assert "rv-1 can no longer reach the RFQ API with this certificate" in words
    assert "no other live certificate" in words
    assert re.search(r'<option value="" selected>', confirm.content.decode())  # no default

    refused = admin.post(f"/certificates/{certificate.pk}/revoke/", {"reason": ""})
    assert refused.status_code == 400
    assert error_code(refused) == "INVALID_FORM"
    certificate.refresh_from_db()
    assert certificate.status == Certificate.Status.ACTIVE

    done = admin.post(f"/certificates/{certificate.pk}/revoke/", {"reason": "keyCompromise"})
    assert done["Location"] == f"/certificates/{certificate.pk}/"
    assert f"Certificate {certificate.serial} is revoked: rv-1 can no longer connect" in (
        follow_messages(admin, done)
    )
    certificate.refresh_from_db()
    assert certificate.status == Certificate.Status.REVOKED
    assert AuditRecord.objects.filter(event="certificate.revoked", actor_label="admin").exists()


def test_the_revoke_page_lists_the_participants_other_certificates(cas, issue):
    firm = FirmFactory()
    participant = ParticipantFactory(firm=firm, trader_id="rv-2")
    one = issue(participant, make_csr(ec_key()))
    other = issue(participant, make_csr(ec_key()))

    words = text(firm_admin(firm).get(f"/certificates/{one.pk}/revoke/"))

    assert "rv-2 keeps 1 other live certificate" in words
    assert other.serial[:13] in words


def test_a_trader_may_not_open_the_revoke_page(cas, issue):
    firm = FirmFactory()
    participant = ParticipantFactory(firm=firm)
    certificate = issue(participant, make_csr(ec_key()))
    user = User.objects.create_user("trader", "t@firm.example", PASSWORD)
    PortalAccount.objects.create(
        user=user, firm=firm, role=PortalAccount.Role.TRADER, participant=participant
    )
    client = Client()
    sign_in(client, "trader")

    response = client.get(f"/certificates/{certificate.pk}/revoke/")

    assert response.status_code == 403
    assert error_code(response) == "FIRM_ADMIN_REQUIRED"


# --- suspend and offboard, confirmed ------------------------------------------------------------


@pytest.fixture
def trading_firm(desk, instruments):  # noqa: F811 - the fixtures imported above
    """A requester firm with an open RFQ, quoted by a liquidity provider."""
    requester, maker = desk("requester"), desk("maker")
    Firm.objects.filter(pk=requester.firm.pk).update(legal_name="Suspend Me Ltd")
    requester.firm.refresh_from_db()
    rfq = requester.post("rfqs/", one_leg()).json()
    quote = maker.post(f"rfqs/{rfq['id']}/quotes/", {"bid_price": "100", "ask_price": "101"})
    assert quote.status_code == 201, quote.content
    return requester, maker, rfq["id"]


def test_suspending_names_everything_it_will_stop(trading_firm, make_officer):
    requester, _, rfq_id = trading_firm
    officer, _ = make_officer("olga")

    page = officer.get(f"/officer/firms/{requester.firm.pk}/suspend/")

    assert page.status_code == 200
    words = text(page)
    assert "Suspend Suspend Me Ltd?" in words
    assert "1 live certificate will be revoked" in words
    assert requester.certificate.serial[:15] in words
    assert "1 open RFQ will be cancelled" in words
    assert "1 other firm's quote on those RFQs will be cancelled" in words
    assert rfq_id[:10] in words
    assert "Type Suspend Me Ltd to confirm" in words


def test_a_suspension_with_the_wrong_name_typed_changes_nothing(trading_firm, make_officer):
    requester, _, rfq_id = trading_firm
    officer, _ = make_officer("olga")

    response = officer.post(
        f"/officer/firms/{requester.firm.pk}/suspend/",
        {"reason": "sanctions hit", "confirm_name": "Suspend Me"},
    )

    assert response.status_code == 400
    assert error_code(response) == "FIRM_NAME_MISMATCH"
    assert 'id="stop-form"' in response.content.decode()
    requester.firm.refresh_from_db()
    assert requester.firm.status == Firm.Status.APPROVED
    assert Rfq.objects.get(pk=rfq_id).state == Rfq.State.OPEN
    assert Certificate.objects.get(pk=requester.certificate.pk).status == "active"


def test_a_confirmed_suspension_does_what_the_page_said(
    trading_firm, make_officer, django_capture_on_commit_callbacks
):
    requester, _maker, rfq_id = trading_firm
    officer, _ = make_officer("olga")

    with django_capture_on_commit_callbacks(execute=True):  # rfq cancels after the commit
        response = officer.post(
            f"/officer/firms/{requester.firm.pk}/suspend/",
            {"reason": "sanctions hit", "confirm_name": "Suspend Me Ltd"},
        )

    assert response["Location"] == "/officer/"
    assert "Suspend Me Ltd is suspended: 1 certificate revoked" in follow_messages(
        officer, response
    )
    requester.firm.refresh_from_db()
    assert requester.firm.status == Firm.Status.SUSPENDED
    assert Certificate.objects.get(pk=requester.certificate.pk).status == "revoked"
    assert Rfq.objects.get(pk=rfq_id).state == Rfq.State.CANCELLED
    assert not Quote.objects.filter(rfq_id=rfq_id).unclosed().exists()


def test_the_dashboard_offers_no_one_click_suspension(cas, make_officer):
    FirmFactory(legal_name="Calm Firm Ltd", status=Firm.Status.APPROVED)
    officer, _ = make_officer("olga")

    page = officer.get("/officer/").content.decode()

    assert "Suspend…" in page
    assert 'action="/officer/firms/' not in page
    assert "0 participants" in page


# --- approve / reject without a default ------------------------------------------------------


def _prepared_case(make_officer) -> tuple[Application, Client]:
    application, token = services.application_submit(
        fields={
            "legal_name": "Four Eyes Ltd",
            "lei": random_lei(),
            "jurisdiction": "GB",
            "role": "client",
            "contact_name": "Casey",
            "contact_email": "casey@four.example",
            "contact_phone": "+44 20 7946 0000",
        },
        actor=Actor.anonymous("applicant"),
    )
    preparer, preparer_user = make_officer("preparer")
    code = services.callback_start(
        application_id=application.pk, phone="+44 1632 960000", source="GLEIF", user=preparer_user
    )
    services.callback_confirm(token=token, code=code)
    for kind in ("lei_registry", "sanctions", "callback", "documents"):
        services.check_record(
            application_id=application.pk,
            user=preparer_user,
            kind=kind,
            outcome="passed",
            evidence="seen",
        )
    services.application_prepare(application_id=application.pk, user=preparer_user)
    return application, preparer


def test_the_decision_has_no_default_and_a_missing_choice_is_refused_on_the_case(make_officer):
    application, _ = _prepared_case(make_officer)
    decider, _ = make_officer("decider")

    page = decider.get(f"/officer/cases/{application.pk}/").content.decode()
    assert 'name="decision"' in page
    assert not re.search(r'<input[^>]*name="decision"[^>]*checked', page)

    refused = decider.post(f"/officer/cases/{application.pk}/decide/", {"reason": "fine"})
    assert refused.status_code == 400
    assert error_code(refused) == "INVALID_FORM"
    assert "Choose approve or reject." in text(refused)
    assert 'id="decide-form"' in refused.content.decode()  # the case page again
    application.refresh_from_db()
    assert application.decided_at is None


def test_the_upload_form_is_not_offered_to_the_officer_who_would_decide(make_officer):
    application, preparer = _prepared_case(make_officer)
    decider, _ = make_officer("decider")

    as_decider = decider.get(f"/officer/cases/{application.pk}/").content.decode()
    as_preparer = preparer.get(f"/officer/cases/{application.pk}/").content.decode()

    assert 'id="document-form"' not in as_decider
    assert 'id="no-upload"' in as_decider
    assert 'id="decide-form"' in as_decider
    assert 'id="document-form"' in as_preparer  # who took part already may still add one


# --- the firm page ------------------------------------------------------------------------------


def test_the_firm_page_gathers_the_firm(cas, issue, make_officer):
    firm = FirmFactory(legal_name="Whole Firm Ltd")
    participant = ParticipantFactory(firm=firm, trader_id="wf-1")
    certificate = issue(participant, make_csr(ec_key()))
    officer, _ = make_officer("olga")

    response = officer.get(f"/officer/firms/{firm.pk}/")

    assert response.status_code == 200
    words = text(response)
    assert "Whole Firm Ltd" in words
    assert firm.lei in words
    assert "wf-1" in words
    assert "1 live certificate" in words
    assert certificate.serial[:13] in words
    assert "certificate.issued" in words  # the firm's audit trail
    search = officer.get("/officer/", {"q": "Whole Firm"}).content.decode()
    assert f'href="/officer/firms/{firm.pk}/"' in search


# --- refusals and error pages ----------------------------------------------------------------


def test_an_unknown_url_gets_the_styled_not_found_page(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    page = response.content.decode()
    assert "css/site.css" in page
    assert "Not found" in page
    assert "/no-such-page/" in page
    assert error_code(response) == "NOT_FOUND"
    api = client.get("/api/v1/no-such-thing/")
    assert api.status_code == 404
    assert api.json()["code"] == "NOT_FOUND"


def test_the_error_page_links_to_the_desk_not_to_history(make_officer):
    officer, _ = make_officer("olga")

    response = officer.get("/officer/csrs/999999/")

    assert response.status_code == 404
    assert error_code(response) == "CSR_NOT_FOUND"
    page = response.content.decode()
    assert "history.back" not in page
    assert 'href="/officer/" id="back"' in page


def test_a_form_posted_without_its_csrf_token_gets_the_styled_page(make_officer):
    user = User.objects.create_user("csrf", "c@x.example", PASSWORD)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post("/accounts/verify/", {"token": "123456"})

    assert response.status_code == 403
    assert error_code(response) == "CSRF_FAILED"
    assert "css/site.css" in response.content.decode()


# --- the second factor's retry ------------------------------------------------------------------


def test_a_correct_code_right_after_a_wrong_one_is_accepted():
    user = User.objects.create_user("otp", "o@venue.example", PASSWORD, is_staff=True)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = Client()
    sign_in(client, "otp")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        wrong = client.post("/accounts/verify/", {"token": "000000"})
        assert wrong.status_code == 400
        assert "That code is not valid: check it and try again." in text(wrong)
        clock.shift(timedelta(seconds=1))  # a person retyping
        right = client.post("/accounts/verify/", {"token": totp_now(device)})
    assert right.status_code == 302
    assert right["Location"] == "/officer/"


def test_after_many_wrong_codes_the_page_says_how_long_to_wait():
    user = User.objects.create_user("otp", "o@venue.example", PASSWORD, is_staff=True)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    client = Client()
    sign_in(client, "otp")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _ in range(10):
            client.post("/accounts/verify/", {"token": "000000"})
            clock.shift(timedelta(seconds=60))
        client.post("/accounts/verify/", {"token": "000000"})  # the eleventh: 102.4 s
        refused = client.post("/accounts/verify/", {"token": totp_now(device)})
        assert refused.status_code == 400
        assert "Too many wrong codes: wait 103 seconds" in text(refused)
        clock.shift(timedelta(seconds=103))
        accepted = client.post("/accounts/verify/", {"token": totp_now(device)})
    assert accepted.status_code == 302


# --- the audit browser --------------------------------------------------------------------------


def _records(n: int, **kwargs) -> list[AuditRecord]:
    actor = Actor.system(kwargs.pop("actor", "seeder"))
    return [
        audit_record(event=kwargs.get("event", "test.seeded"), actor=actor, n=i) for i in range(n)
    ]


def test_the_audit_browser_pages_by_keyset_without_losing_or_repeating(make_officer):
    _records(120)
    officer, _ = make_officer("olga")
    seen: list[int] = []
    url = "/officer/audit/?event=test.seeded"
    pages = 0
    while url:
        response = officer.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        rows = re.findall(r'"n": (\d+)', text(response))
        assert len(rows) <= 50
        seen += [int(n) for n in rows]
        found = re.search(r'href="(\?[^"]*before=\d+[^"]*)" id="older"', page)
        url = "/officer/audit/" + found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert pages == 3
    assert 'href="/officer/audit/?event=test.seeded" id="newest"' in page  # back to the first
    assert seen == list(range(119, -1, -1))  # newest first, each once


def test_the_audit_browser_filters_by_firm_actor_action_and_day(cas, issue, make_officer):
    mine = FirmFactory(legal_name="Filter Me Ltd")
    other = FirmFactory(legal_name="Not Me Ltd")
    certificate = issue(ParticipantFactory(firm=mine), make_csr(ec_key()))
    issue(ParticipantFactory(firm=other), make_csr(ec_key()))
    with time_machine.travel("2026-01-15 12:00:00Z"):
        audit_record(event="test.dated", actor=Actor.system("night-batch"), target=mine)
    officer, _ = make_officer("olga")

    by_firm = officer.get("/officer/audit/", {"firm": mine.lei}).content.decode()
    assert f'href="/certificates/{certificate.pk}/"' in by_firm  # linked to its object
    assert f'href="/officer/firms/{mine.pk}/"' in by_firm
    assert "certificate.issued" in by_firm
    assert str(other.pk) not in re.findall(r"/officer/firms/(\d+)/", by_firm)
    by_actor = officer.get("/officer/audit/", {"actor": "night-bat"}).content.decode()
    assert "test.dated" in by_actor
    assert "certificate.issued" not in by_actor
    by_event = officer.get("/officer/audit/", {"event": "certificate."}).content.decode()
    assert "certificate.issued" in by_event
    assert "test.dated" not in by_event
    by_day = officer.get("/officer/audit/", {"since": "2026-01-15", "until": "2026-01-15"})
    assert "test.dated" in by_day.content.decode()
    assert "certificate.issued" not in by_day.content.decode()
    refused = officer.get("/officer/audit/", {"since": "2026-02-01", "until": "2026-01-01"})
    assert refused.status_code == 400
    assert error_code(refused) == "INVALID_FILTER"
    unknown = officer.get("/officer/audit/", {"firm": "NOSUCHLEI0000000000X"})
    assert unknown.status_code == 404
    assert error_code(unknown) == "FIRM_NOT_FOUND"


def test_the_export_is_the_filtered_view_as_csv_and_is_audited(make_officer):
    _records(3, event="test.exported-me")
    _records(2, event="test.not-me")
    officer, user = make_officer("olga")

    response = officer.get("/officer/audit/export.csv", {"event": "test.exported"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="keyline-audit-')
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["sequence", "created_at", "event"]
    assert [r[2] for r in rows[1:]] == ["test.exported-me"] * 3
    assert [json.loads(r[8])["n"] for r in rows[1:]] == [0, 1, 2]  # oldest first
    export = AuditRecord.objects.get(event="audit.exported")
    assert export.actor_id == str(user.pk)
    assert export.details == {"filters": {"event": "test.exported"}}


def test_the_audit_page_shows_the_chain_state_and_verifies_on_request(make_officer):
    officer, _ = make_officer("olga")
    assert "not verified yet" in text(officer.get("/officer/audit/"))
    _records(5)
    audit_chain()

    response = officer.post("/officer/audit/verify/")  # the task runs eagerly in tests

    assert response["Location"] == "/officer/audit/"
    page = follow_messages(officer, response)
    check = AuditCheck.objects.get()
    assert check.ok
    assert check.by == "olga"
    assert f"intact Records #1\N{EN DASH}#{check.checked} verified" in page
    assert AuditRecord.objects.filter(event="audit.verify_requested").exists()
    AuditCheck.objects.create(
        checked_at=timezone.now(), by="hourly schedule", ok=False, checked=3,
        broken_sequence=4, reason="record #4 was altered after it was written",
    )  # fmt: skip
    assert "broken At record #4: record #4 was altered" in text(officer.get("/officer/audit/"))


def test_every_link_the_audit_browser_offers_opens(cas, issue, make_officer):
    """Server and OCSP certificates have no portal page: their records are not linked."""
    from pki.services import server_certificate_issue

    server_certificate_issue(dns_names=["localhost"], ip_addresses=[], actor=Actor.system("t"))
    issue(ParticipantFactory(), make_csr(ec_key()))
    officer, _ = make_officer("olga")

    page = officer.get("/officer/audit/").content.decode()

    links = set(re.findall(r'<td><a href="(/[^"#]+)[^"]*">', page))
    assert any(link.startswith("/certificates/") for link in links), links
    for link in links:
        assert officer.get(link).status_code == 200, link


# --- firm administrators act with a second factor ------------------------------------------------


def test_an_administrator_sets_up_a_second_factor_before_adding_a_trader(cas):
    firm = FirmFactory()
    admin = firm_admin(firm, "fay", verified=False)

    response = admin.get("/firm/participants/new/")

    assert response["Location"] == "/accounts/security/?next=/firm/participants/new/"
    page = admin.get(response["Location"])
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.content.decode()).group(1)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        wrong = admin.post(response["Location"], {"token": "000000"})
        assert wrong.status_code == 400
        assert "That code is not valid" in text(wrong)
        device = TOTPDevice.objects.get(user__username="fay")
        assert not device.confirmed
        assert b32encode(device.bin_key).decode() == secret  # what the page showed is the key
        clock.shift(timedelta(seconds=2))
        confirmed = admin.post(response["Location"], {"token": totp_now(device)})
    assert confirmed["Location"] == "/firm/participants/new/"
    device.refresh_from_db()
    assert device.confirmed
    assert admin.get("/firm/participants/new/").status_code == 200  # verified: may add
    assert AuditRecord.objects.filter(event="second_factor.enrolled", actor_label="fay").exists()


def test_an_administrator_with_a_factor_verifies_it_before_revoking(cas, issue):
    firm = FirmFactory()
    certificate = issue(ParticipantFactory(firm=firm), make_csr(ec_key()))
    admin = firm_admin(firm, "fay", verified=False)
    device = TOTPDevice.objects.create(user=User.objects.get(username="fay"), confirmed=True)
    url = f"/certificates/{certificate.pk}/revoke/"

    refused = admin.post(url, {"reason": "keyCompromise"})

    assert refused["Location"] == f"/accounts/verify/?next={url}"
    assert Certificate.objects.get(pk=certificate.pk).status == "active"
    verified = admin.post(refused["Location"], {"token": totp_now(device)})
    assert verified["Location"] == url
    assert admin.post(url, {"reason": "keyCompromise"}).status_code == 302
    assert Certificate.objects.get(pk=certificate.pk).status == "revoked"
    assert AuditRecord.objects.filter(event="user.second_factor_verified").exists()


def test_a_sign_the_worker_has_not_answered_yet_says_so(cas, make_officer, monkeypatch, settings):
    """The web process holds no CA key: "Sign" queues the signing worker's task and waits a
    few seconds. A worker that has not answered (here: a queue nobody reads) leaves the request
    pending and the page says it is queued."""
    from pki import tasks

    monkeypatch.setattr(tasks.certificate_issue_task, "delay", lambda *args, **kwargs: None)
    settings.KEYLINE_SIGNING_WAIT_SECONDS = 0.2
    csr = pending_csr()
    officer, _ = make_officer("olga")

    response = officer.post(f"/officer/csrs/{csr.pk}/decide/", {"decision": "sign"})

    assert "Queued for signing" in follow_messages(officer, response)
    csr.refresh_from_db()
    assert csr.status == CertificateRequest.Status.SUBMITTED
    assert not Certificate.objects.filter(request=csr).exists()


def test_a_key_the_worker_rejects_is_refused_with_its_code(cas, make_officer, monkeypatch):
    from pki import tasks

    def worker_rejects(request_id, actor):
        CertificateRequest.objects.filter(pk=request_id).update(
            status=CertificateRequest.Status.REJECTED,
            rejection_code="CSR_KEY_REUSED",
            rejection_reason="This key was certified before.",
        )

    monkeypatch.setattr(tasks.certificate_issue_task, "delay", worker_rejects)
    csr = pending_csr()
    officer, _ = make_officer("olga")

    response = officer.post(f"/officer/csrs/{csr.pk}/decide/", {"decision": "sign"})

    assert response.status_code == 409
    assert error_code(response) == "CSR_KEY_REUSED"
