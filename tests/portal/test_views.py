"""The portal's home page: public CA downloads for everyone; staff go to the officer desk."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from kernel.audit import Actor, audit_chain, audit_record

pytestmark = pytest.mark.django_db


def test_anonymous_sees_the_cas_but_no_firm(firm):
    page = Client().get("/").content.decode()
    assert "Keyline RFQ Client Issuing CA" in page
    assert "/pki/ca/root.crt" in page
    assert firm.legal_name not in page


def test_staff_go_to_the_officer_desk_after_the_second_factor(participant, make_officer):
    client, _ = make_officer("staff", verified=False)
    assert client.get("/")["Location"] == "/officer/"
    assert client.get("/officer/")["Location"].startswith("/accounts/verify/")
    client, _ = make_officer("staff2")
    page = client.get("/officer/").content.decode()
    assert participant.firm.legal_name in page
    found = client.get("/officer/", {"q": participant.trader_id}).content.decode()
    assert participant.trader_id in found


def test_login_page_has_csrf_protection(db):
    page = Client().get("/accounts/login/").content.decode()
    assert "csrfmiddlewaretoken" in page


def test_the_admin_needs_the_second_factor_too(make_officer):
    client, _ = make_officer("half", verified=False)
    assert client.get("/admin/").status_code == 302
    verified, _ = make_officer("full")
    assert verified.get("/admin/").status_code == 200


def test_sign_ins_failures_and_lockouts_are_audited(db):
    from kernel.models import AuditRecord

    get_user_model().objects.create_user("carl", password="a right password 1")
    for _ in range(5):
        Client().post("/accounts/login/", {"username": "carl", "password": "wrong"})
    right = {"username": "carl", "password": "a right password 1"}
    assert Client().post("/accounts/login/", right).status_code == 429
    events = list(AuditRecord.objects.values_list("event", flat=True))
    assert events.count("login.failed") == 6  # five wrong passwords, then the locked-out one
    assert "login.locked_out" in events
    assert "login.succeeded" not in events


def test_a_wrong_second_factor_code_is_audited(make_officer):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from kernel.models import AuditRecord
    from tests.portal.conftest import totp_now

    client, user = make_officer("wrongcode", verified=False)
    valid = totp_now(TOTPDevice.objects.get(user=user))
    wrong = f"{(int(valid) + 500_000) % 1_000_000:06d}"  # never today's code, nor a neighbour's
    response = client.post("/accounts/verify/", {"token": wrong})
    assert response.status_code == 400
    record = AuditRecord.objects.get(event="officer.second_factor_failed")
    assert record.actor_id == str(user.pk)


def test_the_dashboard_shows_a_record_waiting_for_the_chainer_as_chaining(make_officer):
    client, _ = make_officer("carla")
    audit_chain()
    audit_record(event="test.waiting", actor=Actor.system("test"))
    page = client.get("/officer/").content.decode()
    assert "chaining…" in page
    assert "#None" not in page
    assert re.search(r"Audit records waiting to be chained: [1-9]", page)
    audit_chain()
    page = client.get("/officer/").content.decode()
    assert "chaining…" not in page
    assert "Audit records waiting to be chained: 0" in page
