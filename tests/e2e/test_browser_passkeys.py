"""Passkeys in a real browser: a new officer (``manage.py add_officer``, as an administrator
makes one) signs in with the password and the authenticator app's code, adds a passkey on the
Security page, signs out, and signs in again with the password and the passkey; then, on
another device that does not hold that passkey, the passkey is refused and the desk stays
closed. Chromium's WebAuthn is real; only the authenticators are virtual (the DevTools
WebAuthn domain, through Playwright's CDP session): one "phone" holding the officer's passkey,
one "other laptop" without it. Against the platform ``bin/run`` starts, through its nginx, on
its ``https://localhost`` portal (a passkey is bound to a host name, never an address).

The server side of every refusal (a forged signature, another user's passkey, a replayed
answer, an answer for another site) is tested with a software authenticator in
tests/portal/test_passkeys.py.
"""

import re
from base64 import b32decode
from urllib.parse import parse_qs, urlsplit

from django_otp.oath import totp
from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.test_browser_onboarding import Watch, shot
from tests.platform import Platform, platform_test

pytestmark = platform_test

OFFICER = "desk-passkey"
REFUSED = "Verification canceled or not allowed."


def add_officer(platform: Platform) -> tuple[str, bytes]:
    """The administrator's command; its password and the app's TOTP key, as it prints them."""
    out = platform.manage("add_officer", OFFICER, "--email", "passkey-officer@venue.example")
    password = re.search(r"password \(change it at first sign-in\): (\S+)", out)[1]
    uri = re.search(r"(otpauth://\S+)", out)[1]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return password, b32decode(secret + "=" * (-len(secret) % 8))


def virtual_authenticator(context: BrowserContext, page: Page) -> tuple[object, str]:
    """A platform authenticator with user verification (a phone's fingerprint reader) in
    ``page``'s browser tab, which answers without a person (automaticPresenceSimulation)."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


def password_step(page: Page, platform: Platform, password: str) -> None:
    page.goto(platform.portal_url + "/accounts/login/?next=/officer/")
    page.get_by_label("Username").fill(OFFICER)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/accounts/verify/\?next=/officer/$"))
    expect(page.locator("header .who")).to_contain_text("2FA needed")


def test_an_officer_adds_a_passkey_and_signs_in_with_it(platform: Platform, new_context):
    base = platform.portal_url
    password, app_key = add_officer(platform)
    watch = Watch(platform)

    # --- the first sign-in: password and the app's code; then a passkey on the phone ----------
    phone_context = watch.context(new_context(), "officer (phone)")
    phone = watch.page(phone_context, "officer (phone)")
    cdp, phone_id = virtual_authenticator(phone_context, phone)
    password_step(phone, platform, password)
    expect(phone.get_by_role("button", name="Use a passkey")).to_have_count(0)  # none yet
    phone.get_by_label("Code from your authenticator app").fill(f"{totp(app_key):06d}")
    phone.get_by_role("button", name="Verify").click()
    expect(phone).to_have_url(base + "/officer/")
    phone.get_by_role("link", name="Security").click()
    expect(phone.locator("#no-passkeys")).to_have_text("None yet.")
    phone.get_by_role("button", name="Add a passkey").click()
    # The page reloads with the passkey listed once the server has checked and stored it.
    expect(phone.locator("#passkeys")).to_contain_text("passkey 1")
    expect(phone.locator("#session-state")).to_have_text("This session is verified.")
    shot(phone, "16-security-passkeys")
    held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": phone_id})["credentials"]
    assert [(c["rpId"], c["userName"]) for c in held] == [(urlsplit(base).hostname, OFFICER)]

    # --- the next sign-in: password and the passkey -------------------------------------------
    phone.get_by_role("button", name="Sign out").click()
    # Signed out, on the home page: its load finishes before the next navigation starts (else
    # the browser aborts it, and the watch counts a failed request).
    expect(phone).to_have_url(base + "/")
    expect(phone.get_by_role("link", name="Sign in")).to_be_visible()
    phone.wait_for_load_state("load")
    password_step(phone, platform, password)
    expect(phone.locator("main")).to_contain_text("a passkey or the code from your authenticator")
    shot(phone, "17-verify-passkey")
    phone.get_by_role("button", name="Use a passkey").click()
    expect(phone).to_have_url(base + "/officer/")
    expect(phone.locator("header .who")).to_contain_text("2FA ✓")
    held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": phone_id})["credentials"]
    assert held[0]["signCount"] == 2  # made it, then signed in with it

    # --- another device, without that passkey: refused, the desk stays closed -----------------
    watch.provoked_console.add("NotAllowedError")  # the package's script logs the refusal
    laptop_context = watch.context(new_context(), "officer (other laptop)")
    laptop = watch.page(laptop_context, "officer (other laptop)")
    virtual_authenticator(laptop_context, laptop)
    password_step(laptop, platform, password)
    laptop.get_by_role("button", name="Use a passkey").click()
    expect(laptop.locator("#passkey-verification-status-message")).to_have_text(REFUSED)
    expect(laptop.get_by_role("button", name="Use a passkey")).to_be_enabled()
    shot(laptop, "18-passkey-refused")
    laptop.goto(base + "/officer/")
    expect(laptop).to_have_url(re.compile(r"/accounts/verify/\?next=/officer/$"))
    assert watch.console_seen, "the refusal was never reported"

    # --- the audit trail has it all, under the officer's name ---------------------------------
    phone.goto(base + f"/officer/audit/?actor={OFFICER}")
    trail = phone.locator("main table").first
    expect(trail).to_contain_text("second_factor.enrolled")
    expect(trail).to_contain_text("officer.second_factor_verified")
    expect(trail).to_contain_text('"method": "passkey"')

    watch.check_posts()
    ceremony = [url for _, url, _ in watch.posts if "/accounts/passkeys/" in url]
    assert len(ceremony) == 5, ceremony  # register begin+complete, sign-in begin+complete, begin
    assert watch.problems == []
