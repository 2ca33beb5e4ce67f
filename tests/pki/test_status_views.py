"""The public certificate status page, by serial or SHA-256 fingerprint: HTML for people and
JSON for programs, public facts only."""

import json

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.test import Client
from django.utils.html import escape

from pki.conf import pki_settings
from pki.models import Certificate
from pki.revocation import certificate_revoke, crl_publish
from pki.selectors import ocsp_responder_current
from tests.keys import make_csr

pytestmark = pytest.mark.django_db

STATUS_KEYS = {
    "serial",
    "fingerprint_sha256",
    "kind",
    "subject",
    "san",
    "issuer",
    "firm",
    "trader_id",
    "not_before",
    "not_after",
    "status",
    "revoked_at",
    "revocation_reason",
    "invalidity_date",
    "crl",
    "ocsp",
    "checked_at",
}


def _json(value):
    """A value as the JSON view renders it (DjangoJSONEncoder: ISO 8601, milliseconds, Z)."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _colons(hex_text: str) -> str:
    return ":".join(hex_text[i : i + 2] for i in range(0, len(hex_text), 2))


@pytest.fixture
def cert(participant, issue):
    return Certificate.objects.select_related("issuer", "participant__firm").get(
        pk=issue(participant, make_csr()).pk
    )


def _idents(cert: Certificate) -> dict[str, str]:
    return {
        "serial": cert.serial,
        "serial upper case": cert.serial.upper(),
        "serial with leading zeros": cert.serial.zfill(40),
        "fingerprint": cert.fingerprint_sha256,
        "fingerprint upper case": cert.fingerprint_sha256.upper(),
        "fingerprint with colons": _colons(cert.fingerprint_sha256.upper()),
    }


IDENTS = [
    "serial",
    "serial upper case",
    "serial with leading zeros",
    "fingerprint",
    "fingerprint upper case",
    "fingerprint with colons",
]


@pytest.mark.parametrize("ident", IDENTS)
def test_html_page_shows_the_public_facts_of_a_good_certificate(cert, ident):
    response = Client().get(f"/pki/status/{_idents(cert)[ident]}/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response["Cache-Control"] == "no-cache"
    page = response.content.decode()
    assert 'data-testid="status">good</span>' in page
    firm = cert.participant.firm
    for text in (
        f"<code>{cert.serial}</code>",
        f"<code>{cert.fingerprint_sha256}</code>",
        f"<code>{escape(cert.subject)}</code>",
        f"{escape(firm.legal_name)} (LEI <code>{firm.lei}</code>)",
        f"<code>{cert.participant.trader_id}</code>",
        f"{_time(cert.not_before)} \u2013 {_time(cert.not_after)} UTC",
        "no CRL published yet",
    ):
        assert text in page, text
    assert "Revoked</th>" not in page


def test_html_page_after_revocation_and_publishing(cert, system_actor):
    certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)
    cert.refresh_from_db()
    row = next(r for r in crl_publish(actor=system_actor) if r.ca_id == cert.issuer_id)

    page = Client().get(f"/pki/status/{cert.serial}/").content.decode()

    assert 'data-testid="status">revoked</span>' in page
    assert f"{_time(cert.revoked_at)} UTC, reason <code>key_compromise</code>" in page
    assert f"CRL #{row.number} of {_time(row.this_update)} UTC" in page
    assert "<strong>lists it as revoked</strong>" in page


def test_revoked_but_not_yet_published_says_the_crl_does_not_list_it(cert, system_actor):
    row = next(r for r in crl_publish(actor=system_actor) if r.ca_id == cert.issuer_id)
    certificate_revoke(certificate=cert, reason="superseded", actor=system_actor)

    data = Client().get(f"/pki/status/{cert.serial}/?format=json").json()

    assert data["status"] == "revoked"
    assert data["crl"]["number"] == row.number
    assert data["crl"]["lists_certificate"] is False


def test_json_has_exactly_the_public_fields(cert, system_actor, django_capture_on_commit_callbacks):
    good = Client().get(f"/pki/status/{cert.fingerprint_sha256}/?format=json")
    assert good.status_code == 200
    assert good["Content-Type"] == "application/json"
    assert good.json()["status"] == "good"
    assert good.json()["crl"] is None

    with django_capture_on_commit_callbacks(execute=True):  # publishes the CRLs (eager Celery)
        certificate_revoke(certificate=cert, reason="keyCompromise", actor=system_actor)
    cert.refresh_from_db()
    latest = cert.issuer.revocation_lists.order_by("-number").first()

    response = Client().get(f"/pki/status/{cert.serial}/?format=json")

    assert response.status_code == 200
    data = response.json()
    assert set(data) == STATUS_KEYS
    firm = cert.participant.firm
    expected = {
        "serial": cert.serial,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "kind": "client",
        "subject": cert.subject,
        "san": cert.san,
        "issuer": cert.issuer.subject,
        "firm": {"legal_name": firm.legal_name, "lei": firm.lei},
        "trader_id": cert.participant.trader_id,
        "not_before": _json(cert.not_before),
        "not_after": _json(cert.not_after),
        "status": "revoked",
        "revoked_at": _json(cert.revoked_at),
        "revocation_reason": "key_compromise",
        "invalidity_date": None,
        "crl": {
            "number": latest.number,
            "this_update": _json(latest.this_update),
            "next_update": _json(latest.next_update),
            "lists_certificate": True,
        },
    }
    assert {k: data[k] for k in expected} == expected
    # The pre-signed OCSP response (re-signed after the commit) lives in Redis only.
    if pki_settings().redis_url:
        assert data["ocsp"]["status"] == "revoked"
    else:
        assert data["ocsp"] is None


def test_serial_with_colons_is_found(cert):
    """docs/pki.md: "hex, colons and case ignored", as `openssl x509 -text` prints serials
    (and as ``revoke_cert --serial`` accepts them)."""
    pasted = _colons(cert.serial.upper().zfill(40))

    response = Client().get(f"/pki/status/{pasted}/?format=json")

    assert response.status_code == 200
    assert response.json()["serial"] == cert.serial


def test_certificate_without_participant_has_no_firm(cas):
    delegate = ocsp_responder_current()

    data = Client().get(f"/pki/status/{delegate.serial}/?format=json").json()

    assert (data["kind"], data["firm"], data["trader_id"]) == ("ocsp", None, None)
    assert data["status"] == "good"


def test_json_by_accept_header(cert):
    response = Client().get(f"/pki/status/{cert.serial}/", headers={"Accept": "application/json"})
    assert response["Content-Type"] == "application/json"
    assert response.json()["serial"] == cert.serial


@pytest.mark.parametrize(
    "ident",
    [
        "abcdef0123",
        "0" * 64,
        "AB:" * 31 + "AB",
    ],
)
def test_unknown_certificate_is_404(cas, ident):
    html = Client().get(f"/pki/status/{ident}/")
    assert html.status_code == 404

    response = Client().get(f"/pki/status/{ident}/?format=json")
    assert response.status_code == 404
    assert response.json()["code"] == "CERTIFICATE_NOT_FOUND"
    assert set(response.json()) == {"code", "message"}


@pytest.mark.parametrize("ident", ["xyz", "1" * 41, "1" * 63, "1" * 65])
def test_malformed_identifiers_are_404(cas, ident):
    assert Client().get(f"/pki/status/{ident}/").status_code == 404


def test_page_does_not_leak_contact_details(cert, system_actor):
    firm, participant = cert.participant.firm, cert.participant
    certificate_revoke(certificate=cert, reason="affiliationChanged", actor=system_actor)
    crl_publish(actor=system_actor)

    html = Client().get(f"/pki/status/{cert.serial}/").content.decode()
    raw_json = Client().get(f"/pki/status/{cert.serial}/?format=json").content.decode()

    for body in (html, raw_json):
        for private in (
            firm.contact_email,
            firm.contact_phone,
            firm.contact_name,
            participant.email,
        ):
            assert private
            assert private not in body
            assert escape(private) not in body


def test_only_get(cert):
    assert Client().post(f"/pki/status/{cert.serial}/").status_code == 405
    assert Client().put(f"/pki/status/{cert.serial}/?format=json").status_code == 405
