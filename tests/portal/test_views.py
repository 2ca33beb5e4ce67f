"""The portal's home page: public CA downloads for everyone, firms for staff only."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db


def test_anonymous_sees_the_cas_but_no_firm(firm):
    page = Client().get("/").content.decode()
    assert "Keyline RFQ Client Issuing CA" in page
    assert "/pki/ca/root.crt" in page
    assert firm.legal_name not in page


def test_staff_sees_firms_and_participants(participant):
    staff = get_user_model().objects.create_user(
        "staff", password="a-long-password-1", is_staff=True
    )
    client = Client()
    client.force_login(staff)
    page = client.get("/").content.decode()
    assert participant.firm.legal_name in page
    assert participant.trader_id in page


def test_login_page_has_csrf_protection(db):
    page = Client().get("/accounts/login/").content.decode()
    assert "csrfmiddlewaretoken" in page
