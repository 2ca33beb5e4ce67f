"""The portal's side of EST: enrollment tokens made by a firm administrator or an officer
(shown once, stored as a hash, listed, withdrawn, audited), the officer's per-firm EST policy,
and certificate pages that say "renewed by EST from <serial>"."""

import base64
import re

import pytest
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.test import Client

from kernel.audit import Actor
from kernel.errors import Unauthenticated
from kernel.models import AuditRecord
from pki import est
from pki.models import Certificate, EnrollmentToken, EstPolicy
from pki.services import certificate_issue
from tests.factories import FirmFactory, ParticipantFactory
from tests.keys import ec_key, make_csr
from tests.portal.test_desk import firm_admin

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def est_actor() -> Actor:
    return Actor.system("test")


def token_of(response) -> str:
    found = re.search(rb'id="enrollment-token">(est_[A-Za-z0-9_-]+)<', response.content)
    assert found, response.content[:2000]
    return found.group(1).decode()


def test_an_administrator_makes_a_token_that_is_shown_once_and_enrolls(cas):
    firm = FirmFactory()
    trader = ParticipantFactory(firm=firm)
    admin = firm_admin(firm)
    est.policy_set(firm=firm, actor=est_actor(), auto_sign_enrollment=True)

    response = admin.post(f"/participants/{trader.pk}/enrollment-tokens/")

    assert response.status_code == 201
    token = token_of(response)
    page = response.content.decode()
    assert f"keyline enroll --token {token}" in page
    assert f'api_url = "{settings.KEYLINE_API_URL}"' in page
    row = EnrollmentToken.objects.get()
    assert row.token_sha256 == est.token_sha256(token)
    assert token not in admin.get(f"/firm/participants/{trader.pk}/").content.decode()
    record = AuditRecord.objects.get(event="est.token_created")
    assert record.actor_label == "admin"
    assert token not in str(record.details)
    # The token works at the EST endpoint, as the page says.
    body = base64.encodebytes(make_csr(ec_key(), encoding=serialization.Encoding.DER))
    auth = base64.b64encode(f"{trader.trader_id}:{token}".encode()).decode()
    answer = Client().post(
        "/.well-known/est/simpleenroll",
        body,
        content_type="application/pkcs10",
        HTTP_AUTHORIZATION=f"Basic {auth}",
        HTTP_X_KEYLINE_TERMINATOR=settings.KEYLINE_TERMINATOR_SECRET,
        HTTP_X_KEYLINE_CLIENT_VERIFY="NONE",
    )
    assert answer.status_code == 200, answer.content
    listing = admin.get(f"/firm/participants/{trader.pk}/").content.decode()
    assert re.search(r"used \(request #\d+\)", listing)


def test_an_open_token_is_withdrawn_and_then_refused(cas):
    firm = FirmFactory()
    trader = ParticipantFactory(firm=firm)
    admin = firm_admin(firm)
    token = token_of(admin.post(f"/participants/{trader.pk}/enrollment-tokens/"))
    row = EnrollmentToken.objects.get()

    response = admin.post(f"/enrollment-tokens/{row.pk}/revoke/", follow=True)

    assert response.redirect_chain == [(f"/firm/participants/{trader.pk}/", 302)]
    assert f"Enrollment token #{row.pk} for {trader.trader_id} is withdrawn" in (
        response.content.decode()
    )
    row.refresh_from_db()
    assert row.state() == "revoked"
    again = admin.post(f"/enrollment-tokens/{row.pk}/revoke/")
    assert again.status_code == 409
    assert b'id="error-code">EST_TOKEN_NOT_OPEN<' in again.content
    with pytest.raises(Unauthenticated, match="EST_TOKEN_REVOKED"):
        est.enroll(trader_id=trader.trader_id, token=token, csr=make_csr(ec_key()))


def test_an_officer_sets_the_firms_est_policy_and_makes_tokens(cas, make_officer):
    firm = FirmFactory()
    trader = ParticipantFactory(firm=firm)
    officer, _ = make_officer("desk")
    page = officer.get(f"/officer/firms/{firm.pk}/").content.decode()
    assert 'id="est-policy"' in page
    assert 'value="33"' in page  # the default window

    response = officer.post(
        f"/officer/firms/{firm.pk}/est-policy/",
        {"auto_sign_enrollment": "on", "renewal_window_percent": "50", "renewal_blocked": "on"},
    )

    assert response.status_code == 302
    policy = EstPolicy.objects.get(firm=firm)
    assert (policy.auto_sign_enrollment, policy.auto_sign_renewal) == (True, False)
    assert (policy.renewal_window_percent, policy.renewal_blocked) == (50, True)
    assert policy.updated_by == "desk"
    changed = AuditRecord.objects.get(event="est.policy_changed")
    assert changed.details["changes"]["renewal_window_percent"] == {"from": 33, "to": 50}
    bad = officer.post(f"/officer/firms/{firm.pk}/est-policy/", {"renewal_window_percent": "0"})
    assert bad.status_code == 400
    assert b'id="error-code">EST_POLICY_INVALID<' in bad.content
    assert EstPolicy.objects.get(firm=firm).renewal_window_percent == 50

    made = officer.post(f"/participants/{trader.pk}/enrollment-tokens/")
    assert made.status_code == 201
    assert f"/officer/firms/{firm.pk}/" in made.content.decode()  # back to the firm page
    assert EnrollmentToken.objects.get().created_by == "desk"


def test_a_renewed_certificate_says_where_it_came_from(cas, issue, make_officer):
    trader = ParticipantFactory()
    old = issue(trader, make_csr(ec_key()))
    est.policy_set(firm=trader.firm, actor=est_actor(), renewal_window_percent=100)
    submission = est.reenroll(
        certificate=old, csr=make_csr(ec_key(), encoding=serialization.Encoding.DER)
    )
    new = certificate_issue(request=submission.request, actor=est_actor())
    officer, _ = make_officer("desk")
    page = officer.get(f"/certificates/{new.pk}/").content.decode()
    assert "renewed by EST from" in page
    assert old.serial in page
    old_page = officer.get(f"/certificates/{old.pk}/").content.decode()
    assert new.serial in old_page
    assert 'id="renewed-by"' in old_page
    assert Certificate.objects.filter(kind="client").count() == 2
