"""Passkeys as a second factor (portal.passkeys around django-otp-webauthn), driven with a
software authenticator (tests/portal/softkey.py) through the portal's own ceremony endpoints:
who may add one, that one verifies a session and only its owner's, that every refusal is a
4xx with a project code that changes nothing and is audited, and that a passkey never opens
a way around the factor a user already holds. The browser test does the same with Chromium's
virtual authenticator through nginx (tests/e2e/test_browser_passkeys.py)."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.contrib.auth.models import User
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from kernel.models import AuditRecord
from portal.models import PortalAccount
from tests.factories import FirmFactory
from tests.portal.conftest import PASSWORD, sign_in, totp_now, verify_session
from tests.portal.softkey import SoftPasskey

pytestmark = pytest.mark.django_db

REG_BEGIN = "/accounts/passkeys/registration/begin/"
REG_COMPLETE = "/accounts/passkeys/registration/complete/"
AUTH_BEGIN = "/accounts/passkeys/authentication/begin/"
AUTH_COMPLETE = "/accounts/passkeys/authentication/complete/"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def softkey(settings):
    def _make() -> SoftPasskey:
        return SoftPasskey(settings.OTP_WEBAUTHN_RP_ID, settings.OTP_WEBAUTHN_ALLOWED_ORIGINS[0])

    return _make


def admin(name: str = "admin") -> tuple[Client, User]:
    """A firm administrator signed in with the password only."""
    user = User.objects.create_user(name, f"{name}@firm.example", PASSWORD)
    PortalAccount.objects.create(user=user, firm=FirmFactory(), role=PortalAccount.Role.ADMIN)
    client = Client()
    sign_in(client, name)
    return client, user


def officer(name: str = "officer", *, totp: bool = True) -> tuple[Client, User, TOTPDevice | None]:
    """An officer signed in with the password only (with a TOTP device unless ``totp=False``)."""
    user = User.objects.create_user(name, f"{name}@venue.example", PASSWORD, is_staff=True)
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True) if totp else None
    client = Client()
    sign_in(client, name)
    return client, user, device


def register(client: Client, key: SoftPasskey, **answer):
    options = client.post(REG_BEGIN)
    assert options.status_code == 200, options.content
    return client.post(REG_COMPLETE, key.register(options.json(), **answer), "application/json")


def authenticate(client: Client, passkey: SoftPasskey, query: str = "", **answer):
    options = client.post(AUTH_BEGIN)
    assert options.status_code == 200, options.content
    answer = passkey.sign_in(options.json(), **answer)
    return client.post(AUTH_COMPLETE + query, answer, "application/json")


def is_verified(client: Client) -> bool:
    """What the portal thinks of the session: the officer desk or a verify redirect."""
    response = client.get("/accounts/security/")
    return 'id="session-state" class="ok"' in response.content.decode()


def events(user: User, prefix: str = "") -> list[tuple[str, dict]]:
    return [
        (r.event, r.details)
        for r in AuditRecord.objects.filter(target_id=str(user.pk), event__contains="second_factor")
        .filter(event__startswith=prefix)
        .order_by("pk")
    ]


def state() -> tuple:
    return (
        list(WebAuthnCredential.objects.values_list("pk", "sign_count", "name")),
        list(TOTPDevice.objects.values_list("pk", "confirmed")),
    )


# --- adding a passkey -----------------------------------------------------------------------


def test_a_firm_administrators_first_passkey_is_their_second_factor(softkey):
    client, user = admin()
    assert client.get("/firm/participants/new/")["Location"].startswith("/accounts/security/")

    response = register(client, softkey())

    assert response.status_code == 200, response.content
    device = WebAuthnCredential.objects.get(user=user)
    assert device.name == "passkey 1"
    assert response.json() == {"id": device.pk}
    # The session that set it up is verified with it, as with the authenticator app.
    assert is_verified(client)
    assert client.get("/firm/participants/new/").status_code == 200
    assert events(user) == [
        ("second_factor.enrolled", {"method": "passkey", "device": device.pk, "name": "passkey 1"})
    ]
    record = AuditRecord.objects.get(event="second_factor.enrolled")
    assert record.actor_id == str(user.pk)


def test_a_second_passkey_needs_the_session_verified_with_the_first(softkey):
    client, user = admin()
    first = softkey()
    assert register(client, first).status_code == 200
    fresh = Client()
    sign_in(fresh, "admin")  # password only

    before = state()
    refused = fresh.post(REG_BEGIN)

    assert refused.status_code == 403
    assert refused.json()["code"] == "PASSKEY_USER_NOT_VERIFIED"
    assert state() == before
    assert events(user, "second_factor.enrollment_failed") == [
        (
            "second_factor.enrollment_failed",
            {"method": "passkey", "code": "PASSKEY_USER_NOT_VERIFIED"},
        )
    ]
    # Verified with the first passkey, the same session adds a second one.
    assert authenticate(fresh, first).status_code == 200
    assert register(fresh, softkey()).status_code == 200
    assert list(WebAuthnCredential.objects.filter(user=user).values_list("name", flat=True)) == [
        "passkey 1",
        "passkey 2",
    ]


def test_an_administrator_with_an_app_adds_a_passkey_only_after_the_app_code(softkey):
    client, user = admin()
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    assert client.post(REG_BEGIN).json()["code"] == "PASSKEY_USER_NOT_VERIFIED"
    client.post("/accounts/verify/", {"token": totp_now(device)})
    assert register(client, softkey()).status_code == 200
    # The session stays verified with the app it was verified with.
    assert client.session["otp_device_id"] == device.persistent_id


def test_officers_never_give_themselves_a_first_factor(softkey):
    """An officer's first factor comes with the account (add_officer): an officer without
    one cannot make one from the password alone."""
    client, user, _ = officer(totp=False)
    before = state()

    refused = client.post(REG_BEGIN)

    assert refused.status_code == 403
    assert refused.json()["code"] == "PASSKEY_OFFICER_NOT_VERIFIED"
    assert "verify this session first" in refused.json()["detail"]
    # Nor an authenticator app from the Security page.
    page = client.get("/accounts/security/").content.decode()
    assert "totp-secret" not in page
    assert "manage.py add_officer" in page
    refused = client.post("/accounts/security/", {"token": "123456"})
    assert refused.status_code == 403
    assert b"SECOND_FACTOR_FROM_ADMINISTRATOR" in refused.content
    assert state() == before
    assert not TOTPDevice.objects.filter(user=user).exists()


def test_an_officer_adds_a_passkey_after_the_app_code_and_then_signs_in_with_it(softkey):
    client, user, device = officer()
    assert client.post(REG_BEGIN).json()["code"] == "PASSKEY_USER_NOT_VERIFIED"
    client.post("/accounts/verify/", {"token": totp_now(device)})
    key = softkey()
    assert register(client, key).status_code == 200

    fresh = Client()
    sign_in(fresh, "officer")
    assert fresh.get("/officer/")["Location"] == "/accounts/verify/?next=/officer/"
    page = fresh.get("/accounts/verify/?next=/officer/").content.decode()
    assert 'id="passkey-verification-placeholder"' in page
    assert 'name="token"' in page  # the app still works too

    response = authenticate(fresh, key, "?next=/officer/audit/")

    assert response.status_code == 200, response.content
    assert response.json()["redirect_url"] == "/officer/audit/"
    assert fresh.get("/officer/").status_code == 200
    passkey = WebAuthnCredential.objects.get(user=user)
    assert passkey.sign_count == 1
    assert passkey.last_used_at is not None
    assert events(user, "officer.second_factor_verified")[-1] == (
        "officer.second_factor_verified",
        {"method": "passkey", "device": passkey.pk},
    )


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"])
def test_the_passkey_sign_in_never_sends_the_browser_to_another_site(softkey, target):
    client, _ = admin()
    key = softkey()
    register(client, key)
    response = authenticate(client, key, f"?next={target}")
    assert response.json()["redirect_url"] == "/firm/"


# --- refusals -------------------------------------------------------------------------------


def test_a_forged_signature_is_refused_audited_and_verifies_nothing(softkey):
    owner, user = admin()
    key = softkey()
    register(owner, key)
    fresh = Client()
    sign_in(fresh, "admin")
    before = state()

    forged = authenticate(fresh, key, key=ec.generate_private_key(ec.SECP256R1()))

    assert forged.status_code == 422
    assert forged.json()["code"] == "PASSKEY_INVALID_AUTHENTICATION_RESPONSE"
    assert not is_verified(fresh)
    assert state() == before
    assert events(user, "user.second_factor_failed") == [
        (
            "user.second_factor_failed",
            {"method": "passkey", "code": "PASSKEY_INVALID_AUTHENTICATION_RESPONSE"},
        )
    ]


def test_an_answer_for_another_site_is_refused(softkey):
    client, _ = admin()
    key = softkey()
    refused = register(client, key, origin="https://portal.evil.example")
    assert refused.status_code == 422
    assert refused.json()["code"] == "PASSKEY_INVALID_REGISTRATION_RESPONSE"
    assert not WebAuthnCredential.objects.exists()
    assert not is_verified(client)


def test_another_users_passkey_does_not_verify_this_user(softkey):
    alice, _ = admin("alice")
    alices_key = softkey()
    register(alice, alices_key)
    bob, _ = admin("bob")
    register(bob, softkey())
    fresh_bob = Client()
    sign_in(fresh_bob, "bob")

    refused = authenticate(fresh_bob, alices_key)

    assert refused.status_code == 403
    assert refused.json()["code"] == "PASSKEY_CREDENTIAL_USER_MISMATCH"
    assert not is_verified(fresh_bob)


def test_an_answer_is_good_once(softkey):
    """The challenge leaves the session when it is answered, accepted or not."""
    client, _ = admin()
    key = softkey()
    register(client, key)
    fresh = Client()
    sign_in(fresh, "admin")
    answer = key.sign_in(fresh.post(AUTH_BEGIN).json())
    assert fresh.post(AUTH_COMPLETE, answer, "application/json").status_code == 200

    replay = fresh.post(AUTH_COMPLETE, answer, "application/json")

    assert replay.status_code == 400
    assert replay.json()["code"] == "PASSKEY_INVALID_STATE"
    options = client.post(REG_BEGIN).json()
    registration = softkey().register(options)
    assert client.post(REG_COMPLETE, registration, "application/json").status_code == 200
    again = client.post(REG_COMPLETE, registration, "application/json")
    assert again.json()["code"] == "PASSKEY_INVALID_STATE"


@pytest.mark.parametrize(
    "body",
    ["[]", '"x"', "{}", '{"id": 5}', '{"id": "", "rawId": "", "response": []}', "not json", "null"],
)
@pytest.mark.parametrize("ceremony", ["registration", "authentication"])
def test_a_malformed_answer_is_a_4xx_with_a_code_and_changes_nothing(softkey, body, ceremony):
    client, _ = admin()
    key = softkey()
    register(client, key)
    fresh = Client()
    sign_in(fresh, "admin")
    if ceremony == "registration":
        authenticate(fresh, key)  # verified, so it may add one
    begin = REG_BEGIN if ceremony == "registration" else AUTH_BEGIN
    complete = REG_COMPLETE if ceremony == "registration" else AUTH_COMPLETE
    assert fresh.post(begin).status_code == 200
    before = state()

    response = fresh.post(complete, body, "application/json")

    assert 400 <= response.status_code < 500, response.content
    assert response.json()["code"].startswith("PASSKEY_")
    assert state() == before


def test_no_ceremony_without_the_password():
    anonymous = Client()
    for url in (REG_BEGIN, REG_COMPLETE):
        response = anonymous.post(url)
        assert response.status_code == 403
        assert response.json()["code"] == "PASSKEY_NOT_AUTHENTICATED"
    for url in (AUTH_BEGIN, AUTH_COMPLETE):
        response = anonymous.post(url)
        assert response.status_code == 403
        assert response.json()["code"] == "PASSKEY_PASSWORDLESS_LOGIN_DISABLED"
    assert not AuditRecord.objects.filter(event__contains="second_factor").exists()


def test_holding_a_passkey_the_app_cannot_be_added_from_the_password_alone(softkey):
    """The way around a passkey would be to add an app with the password only: refused."""
    client, _ = admin()
    register(client, softkey())
    fresh = Client()
    sign_in(fresh, "admin")
    page = fresh.get("/accounts/security/").content.decode()
    assert "totp-secret" not in page
    assert "Verify this session" in page
    before = state()

    refused = fresh.post("/accounts/security/", {"token": "123456"})

    assert refused.status_code == 403
    assert 'id="error-code">SECOND_FACTOR_VERIFY_FIRST<' in refused.content.decode()
    assert state() == before
    assert not is_verified(fresh)


# --- the Security page and removal ----------------------------------------------------------


def test_the_security_page_lists_passkeys_and_removes_one_in_a_verified_session(softkey):
    client, user = admin()
    key = softkey()
    register(client, key)
    register(client, softkey())
    page = client.get("/accounts/security/").content.decode()
    assert "passkey 1" in page
    assert "passkey 2" in page
    assert 'id="passkey-registration-placeholder"' in page
    first, second = WebAuthnCredential.objects.filter(user=user).order_by("pk")

    unverified = Client()
    sign_in(unverified, "admin")
    before = state()
    response = unverified.post(f"/accounts/security/passkeys/{second.pk}/remove/")
    assert response["Location"].startswith("/accounts/verify/?next=")
    assert state() == before

    response = client.post(f"/accounts/security/passkeys/{second.pk}/remove/", follow=True)

    assert response.redirect_chain == [("/accounts/security/", 302)]
    assert "Your passkey 2 is removed" in response.content.decode()
    assert list(WebAuthnCredential.objects.filter(user=user)) == [first]
    assert events(user, "second_factor.removed") == [
        ("second_factor.removed", {"method": "passkey", "device": second.pk, "name": "passkey 2"})
    ]


def test_nobody_removes_another_users_passkey(softkey):
    alice, _ = admin("alice")
    register(alice, softkey())
    passkey = WebAuthnCredential.objects.get()
    bob, bob_user = admin("bob")
    verify_session(bob, bob_user)
    before = state()

    response = bob.post(f"/accounts/security/passkeys/{passkey.pk}/remove/")

    assert response.status_code == 404
    assert 'id="error-code">PASSKEY_NOT_FOUND<' in response.content.decode()
    assert state() == before


def test_the_verify_page_offers_what_the_user_holds(softkey):
    client, _ = admin()
    register(client, softkey())
    fresh = Client()
    sign_in(fresh, "admin")
    page = fresh.get("/accounts/verify/").content.decode()
    assert "Use a passkey" in page
    assert 'name="token"' not in page  # no app, so no code field
    assert "otp_webauthn_auth.js" in page
    response = fresh.post("/accounts/verify/", {"token": "123456"})
    assert response.status_code == 400
    assert "use your passkey" in response.content.decode()


# --- who reaches the ceremony endpoints -----------------------------------------------------


def caller(kind: str) -> Client:
    """The permission matrix's callers (tests/portal/test_permissions.py), signed in as it
    signs them in: firm administrators verified with an app, the trader with a password only."""
    if kind == "anonymous":
        return Client()
    if kind in ("officer", "officer_unverified"):
        client, _, device = officer(kind)
        if kind == "officer":
            client.post("/accounts/verify/", {"token": totp_now(device)})
        return client
    if kind == "trader_a":
        user = User.objects.create_user(kind, f"{kind}@firm.example", PASSWORD)
        PortalAccount.objects.create(user=user, firm=FirmFactory(), role=PortalAccount.Role.TRADER)
        client = Client()
        sign_in(client, kind)
        return client
    client, user = admin(kind)
    verify_session(client, user)
    return client


OK = (200, None)
ANON_REG = (403, "PASSKEY_NOT_AUTHENTICATED")
ANON_AUTH = (403, "PASSKEY_PASSWORDLESS_LOGIN_DISABLED")
UNVERIFIED = (403, "PASSKEY_USER_NOT_VERIFIED")
NO_STATE = (400, "PASSKEY_INVALID_STATE")  # a complete step with no ceremony begun

CALLERS = ("anonymous", "trader_a", "admin_a", "admin_b", "officer_unverified", "officer")
# fmt: off
CEREMONY_MATRIX = [
    # endpoint     anonymous  trader_a  admin_a   admin_b   unverified  officer
    (REG_BEGIN,     ANON_REG,  OK,       OK,       OK,       UNVERIFIED, OK),
    (REG_COMPLETE,  ANON_REG,  NO_STATE, NO_STATE, NO_STATE, UNVERIFIED, NO_STATE),
    (AUTH_BEGIN,    ANON_AUTH, OK,       OK,       OK,       OK,         OK),
    (AUTH_COMPLETE, ANON_AUTH, NO_STATE, NO_STATE, NO_STATE, NO_STATE,   NO_STATE),
]
# fmt: on


@pytest.mark.parametrize(
    ("url", "kind", "expect"),
    [
        pytest.param(url, kind, expect, id=f"{url} | {kind}")
        for url, *row in CEREMONY_MATRIX
        for kind, expect in zip(CALLERS, row, strict=True)
    ],
)
def test_ceremony_endpoint_matrix(url, kind, expect):
    client = caller(kind)
    before = state()

    response = client.post(url, "{}", "application/json")

    status, code = expect
    assert response.status_code == status, response.content
    if code:
        assert response.json()["code"] == code
    else:  # the options the browser passes to navigator.credentials
        assert response.json()["challenge"]
    assert state() == before
    for method in ("get", "put", "delete"):
        assert getattr(client, method)(url).status_code in (403, 405)


def test_a_passkey_is_stored_only_with_its_audit_record(softkey, monkeypatch):
    """Fault injected: the audit write fails. The passkey is not kept, the session is not
    verified by it, and the answer cannot be tried again (its challenge is spent)."""
    client, _ = admin()
    options = client.post(REG_BEGIN).json()
    answer = softkey().register(options)

    def broken(**_):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr("portal.passkeys.audit_record", broken)
    with pytest.raises(RuntimeError):
        client.post(REG_COMPLETE, answer, "application/json")
    monkeypatch.undo()

    assert not WebAuthnCredential.objects.exists()
    assert not is_verified(client)
    again = client.post(REG_COMPLETE, answer, "application/json")
    assert again.json()["code"] == "PASSKEY_INVALID_STATE"


def test_a_new_passkey_takes_the_lowest_free_name(softkey):
    client, user = admin()
    for _ in range(3):
        assert register(client, softkey()).status_code == 200
    second = WebAuthnCredential.objects.get(user=user, name="passkey 2")
    client.post(f"/accounts/security/passkeys/{second.pk}/remove/")
    register(client, softkey())
    names = WebAuthnCredential.objects.filter(user=user).values_list("name", flat=True)
    assert sorted(names) == ["passkey 1", "passkey 2", "passkey 3"]


# --- an officer resets a firm user's lost factors -------------------------------------------


def test_an_officer_resets_a_firm_users_lost_factors(softkey, make_officer):
    client, user = admin()
    register(client, softkey())
    TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    officer_client, _ = make_officer("desk")
    url = f"/officer/users/{user.pk}/second-factor-reset/"
    page = officer_client.get(url).content.decode()
    assert "an authenticator app; 1 passkey (passkey 1)" in page
    before = state()

    refused = officer_client.post(url, {"reason": "  "})

    assert refused.status_code == 400
    assert 'id="error-code">REASON_REQUIRED<' in refused.content.decode()
    assert state() == before

    done = officer_client.post(url, {"reason": "lost phone; call-back to +44 20 7946 0000"})

    assert done.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert not WebAuthnCredential.objects.filter(user=user).exists()
    assert not is_verified(client)  # the session verified with the passkey is not any more
    record = AuditRecord.objects.get(event="second_factor.reset")
    assert record.actor_label == "desk"
    assert record.target_id == str(user.pk)
    assert record.details["passkeys"] == ["passkey 1"]
    assert record.details["authenticator_apps"] == 1
    assert "call-back" in record.details["reason"]
    # With no factor left, the password session may set up a new one.
    assert "totp-secret" in client.get("/accounts/security/").content.decode()


def test_an_officers_factors_are_not_reset_from_the_desk(make_officer):
    officer_client, _ = make_officer("desk")
    _, other = make_officer("other")
    response = officer_client.get(f"/officer/users/{other.pk}/second-factor-reset/")
    assert response.status_code == 404
    assert 'id="error-code">USER_NOT_FOUND<' in response.content.decode()
    assert TOTPDevice.objects.filter(user=other).exists()
