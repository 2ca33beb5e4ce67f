"""The onboarding workflow through the portal's pages (Django test client)."""

import re

import pytest
from django.core import mail
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from kernel.lei import lei_with_check_digits
from kernel.models import Firm
from portal.models import Application, PortalAccount
from tests.keys import ec_key, make_csr
from tests.portal.conftest import totp_now

pytestmark = pytest.mark.django_db(transaction=True)  # e-mail goes out on commit


def test_application_to_certificate(cas, settings, tmp_path, make_officer):
    settings.KEYLINE_DOCUMENTS_DIR = str(tmp_path / "docs")
    applicant = Client()
    lei = lei_with_check_digits("984500FLOWTESTFIRM")
    response = applicant.post(
        "/apply/",
        {"legal_name": "Flow Test <b>Ltd</b>", "lei": lei, "jurisdiction": "gb", "role": "client",
         "contact_name": "Fay", "contact_email": "fay@flow.example",
         "contact_phone": "+44 20 7946 0999"},
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert b"Flow Test &lt;b&gt;Ltd&lt;/b&gt;" in response.content
    case_url = re.search(rb'id="case-link" href="([^"]+)"', response.content).group(1).decode()
    assert case_url in mail.outbox[0].body
    application = Application.objects.get(firm__lei=lei)

    alice, _ = make_officer("alice")
    bob, _ = make_officer("bob")
    base = f"/officer/cases/{application.pk}/"
    for kind in ("lei_registry", "documents", "sanctions"):
        r = alice.post(
            base + "checks/", {"kind": kind, "outcome": "passed", "evidence": f"{kind} ok"}
        )
        assert r.status_code == 302, r.content
    # The call-back to the application's own number is refused.
    r = alice.post(base + "callback/", {"phone": "+44 20 7946 0999", "source": "application"})
    assert r.status_code == 400
    assert b"PHONE_NOT_INDEPENDENT" in r.content
    r = alice.post(
        base + "callback/", {"phone": "+44 20 7946 0123", "source": "Companies House filing"}
    )
    assert r.status_code == 302
    page = alice.get(base).content.decode()
    code = re.search(r'id="callback-code">(\d{6})<', page).group(1)
    # Recording the call-back before the contact confirmed is refused.
    r = alice.post(
        base + "checks/", {"kind": "callback", "outcome": "passed", "evidence": "called"}
    )
    assert r.status_code == 409
    assert (
        applicant.post(case_url, {"code": "000000" if code != "000000" else "111111"}).status_code
        == 400
    )
    assert applicant.post(case_url, {"code": code}).status_code == 302
    r = alice.post(
        base + "checks/",
        {"kind": "callback", "outcome": "passed", "evidence": "called, code matched"},
    )
    assert r.status_code == 302
    assert alice.post(base + "prepare/").status_code == 302
    # Four eyes: the preparing officer cannot decide.
    r = alice.post(base + "decide/", {"decision": "approve", "reason": "all good"})
    assert r.status_code == 403
    assert b"FOUR_EYES" in r.content
    r = bob.post(base + "decide/", {"decision": "approve", "reason": "checks complete"})
    assert r.status_code == 302, r.content
    assert Firm.objects.get(lei=lei).status == "approved"
    invite_url = re.search(r"https?://[^/]+(/invite/[^/\s]+/)", mail.outbox[-1].body).group(1)

    admin = Client()
    r = admin.post(
        invite_url,
        {
            "username": "fay",
            "password": "a long pass phrase 42",
            "password2": "a long pass phrase 42",
        },
    )
    assert r.status_code == 302, r.content
    assert admin.get(invite_url).status_code == 404  # single use
    assert (
        admin.post(
            "/accounts/login/", {"username": "fay", "password": "a long pass phrase 42"}
        ).status_code
        == 302
    )
    assert PortalAccount.objects.get(user__username="fay").role == "admin"
    # Adding a trader needs a second factor: fay sets up an authenticator app first.
    r = admin.get("/firm/participants/new/")
    assert r["Location"] == "/accounts/security/?next=/firm/participants/new/"
    assert admin.get(r["Location"]).status_code == 200
    device = TOTPDevice.objects.get(user__username="fay", confirmed=False)
    r = admin.post(r["Location"], {"token": totp_now(device)})
    assert r["Location"] == "/firm/participants/new/"
    r = admin.post(
        "/firm/participants/new/",
        {
            "trader_id": "fay-desk",
            "name": "Fay Desk",
            "email": "desk@flow.example",
            "role": "requester",
        },
    )
    assert r.status_code == 302, r.content
    participant_url = r["Location"]
    r = admin.post(participant_url, {"csr_text": make_csr(ec_key()).decode()})
    assert r.status_code == 302, r.content
    dashboard = bob.get("/officer/").content.decode()
    csr_id = re.search(r'href="/officer/csrs/(\d+)/"', dashboard).group(1)
    review = bob.get(f"/officer/csrs/{csr_id}/").content.decode()  # the officer reviews it
    assert "fay-desk" in review
    assert f'action="/officer/csrs/{csr_id}/decide/"' in review
    assert bob.post(f"/officer/csrs/{csr_id}/decide/", {"decision": "sign"}).status_code == 302
    cert_url = re.search(
        r'href="(/certificates/\d+/)"', admin.get(participant_url).content.decode()
    ).group(1)
    pem = admin.get(cert_url + "download/cert/")
    assert pem.status_code == 200
    assert pem.content.startswith(b"-----BEGIN CERTIFICATE-----")
    r = admin.post(cert_url + "revoke/", {"reason": "keyCompromise"})
    assert r.status_code == 302
    assert b"Revoked" in admin.get(cert_url).content
