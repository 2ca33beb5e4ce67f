"""The trust contract on the app side: what the API does with the headers the terminator
sets. (Through a real nginx: tests/test_terminator.py.)"""

from datetime import timedelta
from urllib.parse import quote

import pytest
import time_machine
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory, override_settings
from rest_framework.request import Request

from kernel.api import exception_handler
from kernel.models import AuditRecord, Firm
from pki.revocation import certificate_revoke
from tests.conftest import refused
from tests.foreign_ca import foreign_certificate
from tests.keys import ec_key, make_csr

pytestmark = pytest.mark.django_db

WHOAMI = "/api/v1/whoami/"


@pytest.fixture
def leaf(participant, issue):
    return issue(participant, make_csr(ec_key()))


def forwarded(pem: str, *, secret: str | None = None, verify: str = "SUCCESS") -> dict:
    """The headers nginx sets (Django test client spelling)."""
    headers = {"HTTP_X_KEYLINE_CLIENT_VERIFY": verify, "HTTP_X_KEYLINE_CLIENT_CERT": quote(pem)}
    headers["HTTP_X_KEYLINE_TERMINATOR"] = (
        settings.KEYLINE_TERMINATOR_SECRET if secret is None else secret
    )
    return headers


def test_whoami_for_a_trusted_certificate(leaf, participant):
    response = Client().get(WHOAMI, **forwarded(leaf.pem))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["firm"] == {
        "legal_name": participant.firm.legal_name,
        "lei": participant.firm.lei,
        "role": participant.firm.role,
    }
    assert body["participant"]["trader_id"] == participant.trader_id
    assert body["participant"]["san_uri"] == participant.san_uri
    assert body["certificate"]["serial"] == leaf.serial
    assert body["certificate"]["fingerprint_sha256"] == leaf.fingerprint_sha256
    assert body["certificate"]["days_to_expiry"] in (89, 90)


@pytest.mark.parametrize("secret", ["", "wrong-secret", "test-terminator-secret-012345678"])
def test_no_or_wrong_terminator_secret_is_401_and_audited(leaf, secret):
    before = AuditRecord.objects.filter(event="api.authentication_refused").count()
    body = refused(
        Client().get(WHOAMI, **forwarded(leaf.pem, secret=secret)),
        401,
        "TERMINATOR_SECRET_INVALID",
    )
    record = AuditRecord.objects.filter(event="api.authentication_refused").latest("id")
    assert AuditRecord.objects.filter(event="api.authentication_refused").count() == before + 1
    assert record.details["code"] == "TERMINATOR_SECRET_INVALID"
    assert record.details["request_id"] == body["request_id"]


def test_without_a_configured_secret_everything_is_refused(leaf):
    with override_settings(KEYLINE_TERMINATOR_SECRET=""):
        refused(Client().get(WHOAMI, **forwarded(leaf.pem)), 503, "TERMINATOR_NOT_CONFIGURED")


@pytest.mark.parametrize(
    ("verify", "code"),
    [
        ("", "CLIENT_CERTIFICATE_MISSING"),
        ("NONE", "CLIENT_CERTIFICATE_MISSING"),
        ("FAILED:certificate has expired", "CLIENT_CERTIFICATE_UNVERIFIED"),
    ],
)
def test_nginx_verification_must_have_succeeded(leaf, verify, code):
    refused(Client().get(WHOAMI, **forwarded(leaf.pem, verify=verify)), 401, code)


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN CERTIFICATE-----\nnope\n",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
        "not a certificate",
    ],
    ids=["truncated", "not-base64", "empty", "junk"],
)
def test_an_unreadable_certificate_header_is_401(leaf, pem):
    refused(Client().get(WHOAMI, **forwarded(pem)), 401, "CLIENT_CERTIFICATE_INVALID")


def test_two_certificates_in_the_header_are_refused(leaf, participant, issue):
    other = issue(participant, make_csr(ec_key()))
    refused(
        Client().get(WHOAMI, **forwarded(leaf.pem + other.pem)), 401, "CLIENT_CERTIFICATE_INVALID"
    )


def test_a_certificate_we_did_not_issue_is_401(cas):
    # Same subject shape, made by a look-alike CA: only the fingerprint matters.
    pem, _ = foreign_certificate()
    refused(Client().get(WHOAMI, **forwarded(pem)), 401, "CERTIFICATE_UNKNOWN")


def test_a_revoked_certificate_is_refused_on_the_next_request(
    leaf, system_actor, django_capture_on_commit_callbacks
):
    assert Client().get(WHOAMI, **forwarded(leaf.pem)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        certificate_revoke(certificate=leaf, reason="keyCompromise", actor=system_actor)
    body = refused(Client().get(WHOAMI, **forwarded(leaf.pem)), 401, "CERTIFICATE_REVOKED")
    assert body["details"] == {"serial": leaf.serial}
    record = AuditRecord.objects.filter(event="api.authentication_refused").latest("id")
    assert (record.actor_type, record.actor_id) == ("certificate", leaf.serial)


def test_expired_certificate_is_401(leaf):
    with time_machine.travel(leaf.not_after + timedelta(seconds=1)):
        refused(Client().get(WHOAMI, **forwarded(leaf.pem)), 401, "CERTIFICATE_EXPIRED")


def test_disabled_participant_and_suspended_firm_are_403(
    leaf, participant, django_capture_on_commit_callbacks
):
    assert Client().get(WHOAMI, **forwarded(leaf.pem)).status_code == 200  # decision cached
    with django_capture_on_commit_callbacks(execute=True):
        participant.is_active = False
        participant.save()
    refused(Client().get(WHOAMI, **forwarded(leaf.pem)), 403, "PARTICIPANT_DISABLED")
    with django_capture_on_commit_callbacks(execute=True):
        participant.is_active = True
        participant.save()
    assert Client().get(WHOAMI, **forwarded(leaf.pem)).status_code == 200
    firm = participant.firm
    with django_capture_on_commit_callbacks(execute=True):
        firm.status = Firm.Status.SUSPENDED
        firm.save()
    refused(Client().get(WHOAMI, **forwarded(leaf.pem)), 403, "FIRM_INACTIVE")


def test_the_request_id_from_nginx_is_kept(leaf):
    response = Client().get(
        WHOAMI, HTTP_X_REQUEST_ID="3f2a9c0d11e24b7a", **forwarded(leaf.pem, secret="x")
    )
    assert refused(response, 401, "TERMINATOR_SECRET_INVALID")["request_id"] == ("3f2a9c0d11e24b7a")


def test_unknown_api_path_and_method_use_the_error_shape(leaf):
    response = Client().post(WHOAMI, **forwarded(leaf.pem))
    refused(response, 405, "METHOD_NOT_ALLOWED")


def test_djangos_permission_denied_in_an_api_view_uses_the_error_shape():
    # It reached the shape's code without DRF's ``.detail`` and ended in an AttributeError (500);
    # mypy found it. DRF's own handler converts it to its PermissionDenied, so does ours now.
    request = Request(RequestFactory().get("/api/v1/x", HTTP_X_REQUEST_ID="abc123"))
    response = exception_handler(PermissionDenied("Not yours."), {"request": request})
    assert response is not None
    assert response.status_code == 403
    assert response.data == {
        "code": "PERMISSION_DENIED",
        "message": "Not yours.",
        "request_id": "abc123",
        "details": {},
    }
