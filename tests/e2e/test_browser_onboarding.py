"""The whole onboarding path in a real browser (Chromium), as the people who use it click it.

Three browser contexts, so three separate sets of cookies: the applicant (later the firm's
administrator), officer A (who checks and prepares the case) and officer B (who decides it and
signs the CSR). Every page must render without a console error, a page error, a failed request
or a broken same-origin link. Screenshots of the key pages are written to docs/screenshots/
on every run (the file names are stable; the pictures are documentation).
"""

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import BrowserContext, Error, Page, expect

from portal.lei import lei_with_check_digits
from tests.keys import ec_key, make_csr
from tests.portal.conftest import PASSWORD, totp_now

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TMP_SHOTS = Path(tempfile.gettempdir()) / "keyline-screenshots"
LEI = lei_with_check_digits("984500BROWSERFLOW1")
FIRM = "Northwind Markets Ltd"
ADMIN_PASSWORD = "a long pass phrase 42"


FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


@dataclass
class Watch:
    """Collects what a person would notice went wrong, from every page of every context."""

    base_url: str
    problems: list[str] = field(default_factory=list)
    # Pages the test provokes on purpose (a wrong code: 400, a four-eyes refusal: 403), by
    # (URL, status). Chromium logs any page with an error status as a console error; these
    # are expected, every other page with an error status is a problem.
    refusals: set[tuple[str, int]] = field(default_factory=set)
    # who -> same-origin links seen on their pages (followed at the end, as that user)
    links: dict[str, set[str]] = field(default_factory=dict)

    def expect_refusal(self, path: str, status: int) -> None:
        self.refusals.add((self.base_url + path, status))

    def page(self, context: BrowserContext, who: str) -> Page:
        page = context.new_page()
        self.links.setdefault(who, set())

        def console(message) -> None:
            if message.type != "error":
                return
            failed = FAILED_LOAD.match(message.text)
            if failed and (message.location["url"], int(failed[1])) in self.refusals:
                return
            self.problems.append(f"{who} {page.url}: console error: {message.text}")

        def response(response) -> None:
            if response.status >= 400 and (response.url, response.status) not in self.refusals:
                self.problems.append(f"{who}: {response.status} for {response.url}")

        def request_failed(request) -> None:
            # A download aborts the navigation that started it; that is not a failure.
            if not (request.failure == "net::ERR_ABORTED" and "/download/" in request.url):
                self.problems.append(f"{who}: {request.url} failed: {request.failure}")

        page.on("console", console)
        page.on("pageerror", lambda error: self.problems.append(f"{who} {page.url}: {error}"))
        page.on("response", response)
        page.on("requestfailed", request_failed)
        page.on("load", lambda _: self.collect_links(page, who))
        return page

    def collect_links(self, page: Page, who: str) -> None:
        try:
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        except Error:  # the page moved on meanwhile; its next load collects again
            return
        self.links[who].update(
            href.split("#")[0]
            for href in hrefs
            if href.startswith(self.base_url) and "/download/" not in href
        )


def shot(page: Page, name: str) -> None:
    """Every run takes the screenshots (a page that cannot render fails here); they replace
    the documentation copies only with KEYLINE_SCREENSHOTS=1, so a test run leaves the
    checkout clean."""
    directory = SCREENSHOTS if os.environ.get("KEYLINE_SCREENSHOTS") == "1" else TMP_SHOTS
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=directory / f"{name}.png", full_page=True)


def message(page: Page, text: str) -> None:
    expect(page.locator("ul.messages")).to_contain_text(text)


def officer(name: str) -> TOTPDevice:
    user = User.objects.create_user(name, f"{name}@venue.example", PASSWORD, is_staff=True)
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def officer_sign_in(page: Page, base: str, device: TOTPDevice) -> None:
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(device.user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # The password alone is not enough for the officer desk: the second factor comes next.
    expect(page).to_have_url(re.compile(r"/accounts/verify/\?next=/officer/$"))
    page.get_by_label("Code from your authenticator app").fill(totp_now(device))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(base + "/officer/")
    expect(page.locator("header .who")).to_contain_text("2FA ✓")


def download(page: Page, selector: str) -> tuple[str, str]:
    with page.expect_download() as info:
        page.click(selector)
    file = info.value
    return file.suggested_filename, Path(file.path()).read_text()


@pytest.fixture
def contexts(new_context):
    """(applicant/firm admin, officer A, officer B): three browsers' worth of cookies."""
    return new_context(), new_context(), new_context()


def test_onboarding_in_the_browser(live_server, cas, settings, tmp_path, contexts):
    settings.KEYLINE_DOCUMENTS_DIR = str(tmp_path / "documents")
    base = live_server.url
    watch = Watch(base)
    applicant_context, a_context, b_context = contexts
    alice, bob = officer("alice"), officer("bob")

    # --- the applicant applies -----------------------------------------------------------------
    applicant = watch.page(applicant_context, "applicant")
    applicant.goto(base + "/")
    applicant.get_by_role("link", name="Apply for your firm").click()
    expect(applicant.get_by_role("heading", name="Apply for access")).to_be_visible()
    applicant.get_by_label("Legal name").fill(FIRM)
    applicant.get_by_label("LEI (ISO 17442)").fill(LEI)
    applicant.get_by_label("Jurisdiction (ISO 3166 code)").fill("gb")
    applicant.get_by_label("Role").select_option("client")
    applicant.get_by_label("Contact name").fill("Fay Okafor")
    applicant.get_by_label("Contact email").fill("fay@northwind.example")
    applicant.get_by_label("Contact phone").fill("+44 20 7946 0999")
    shot(applicant, "01-apply")
    applicant.get_by_role("button", name="Submit application").click()
    expect(applicant.get_by_role("heading", name="Application received")).to_be_visible()
    expect(applicant.locator("main")).to_contain_text(LEI)
    shot(applicant, "02-application-received")
    case_url = applicant.locator("#case-link").get_attribute("href")
    assert case_url in mail.outbox[0].body
    applicant.click("#case-link")
    expect(applicant.locator("#case-status")).to_have_text("Applied")
    expect(applicant.locator("main")).to_contain_text("No code is waiting.")

    # --- officer A checks the case -------------------------------------------------------------
    a = watch.page(a_context, "officer A")
    officer_sign_in(a, base, alice)
    applied = a.locator("h3", has_text="Applied").locator("xpath=following-sibling::ul[1]")
    expect(applied).to_contain_text(FIRM)
    shot(a, "03-officer-dashboard")
    applied.get_by_role("link", name=FIRM).click()
    expect(a.locator("#firm-status")).to_have_text("Applied")
    expect(a.locator("main")).to_contain_text("GB · Client (liquidity seeker)")  # upper-cased
    case_path = urlsplit(a.url).path
    for kind in ("lei_registry", "documents", "sanctions"):
        form = a.locator("#check-form")
        form.get_by_label("Check").select_option(kind)
        form.get_by_label("Outcome").select_option("passed")
        form.get_by_label("Evidence").fill(f"{kind}: matches the application")
        form.get_by_role("button", name="Record check").click()
        message(a, "Check recorded.")
    expect(a.locator("#firm-status")).to_have_text("Under review")
    expect(a.locator("#checks tr")).to_have_count(3)
    expect(a.locator("#checks")).to_contain_text("Sanctions screening")

    callback = a.locator("#callback-form")
    callback.get_by_label("Number you dialled").fill("+44 20 7946 0123")
    callback.get_by_label("Where you found it").fill("Companies House filing")
    callback.get_by_role("button", name="Start call-back").click()
    expect(a.locator("#callback-code")).to_have_text(re.compile(r"^\d{6}$"))
    code = a.locator("#callback-code").inner_text()
    expect(a.locator("main")).to_contain_text("+44 20 7946 0123 (Companies House filing)")
    expect(a.locator("main")).to_contain_text("not confirmed")
    shot(a, "04-officer-case-checks-callback")

    # --- the applicant enters the code the officer read out -------------------------------------
    applicant.reload()
    expect(applicant.locator("#case-status")).to_have_text("Under review")
    wrong = "000000" if code != "000000" else "111111"
    watch.expect_refusal(case_url, 400)
    applicant.get_by_label("Code the officer read out").fill(wrong)
    applicant.get_by_role("button", name="Confirm").click()
    expect(applicant.locator("p.error")).to_have_text(
        "That is not the code; check it with the officer."
    )
    applicant.get_by_label("Code the officer read out").fill(code)
    applicant.get_by_role("button", name="Confirm").click()
    message(applicant, "Thank you: the call-back is confirmed.")
    expect(applicant.locator("main")).to_contain_text("No code is waiting.")

    # --- officer A records the call-back and prepares the case ----------------------------------
    a.reload()
    expect(a.locator("#callback-code")).to_have_count(0)  # the code was shown once
    expect(a.locator("strong.ok")).to_contain_text("confirmed")
    form = a.locator("#check-form")
    form.get_by_label("Check").select_option("callback")
    form.get_by_label("Outcome").select_option("passed")
    form.get_by_label("Evidence").fill("Called the filed number; the contact read the code back.")
    form.get_by_role("button", name="Record check").click()
    message(a, "Check recorded.")
    expect(a.locator("#checks tr")).to_have_count(4)
    a.click("#prepare")
    message(a, "Submitted for a second officer's decision.")
    expect(a.locator("#prepared")).to_contain_text("by alice")
    # Four eyes: A is shown no decision form, only why.
    expect(a.locator("#four-eyes")).to_have_text(
        "Waiting for a second officer: you prepared or worked on this case."
    )
    expect(a.locator("#decide-form")).to_have_count(0)
    shot(a, "05-four-eyes-waiting")
    # A decision posted anyway (a stale tab, a crafted request) is refused by the server.
    watch.expect_refusal(case_path + "decide/", 403)
    a.evaluate(
        """path => {
            const form = document.createElement("form");
            form.method = "post";
            form.action = path + "decide/";
            const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
            for (const [name, value] of [["csrfmiddlewaretoken", token],
                    ["decision", "approve"], ["reason", "my own case"]]) {
                const input = document.createElement("input");
                input.type = "hidden"; input.name = name; input.value = value;
                form.append(input);
            }
            document.body.append(form);
            form.submit();
        }""",
        case_path,
    )
    expect(a.locator("#error-code")).to_have_text("four_eyes")
    expect(a.locator("p.error")).to_have_text(
        "An officer who prepared or worked on this case cannot decide it."
    )

    # --- officer B approves ------------------------------------------------------------------
    b = watch.page(b_context, "officer B")
    officer_sign_in(b, base, bob)
    waiting = b.locator("h3", has_text="Awaiting second officer")
    expect(waiting.locator(".count")).to_have_text("1")
    b.locator(
        "xpath=//h3[contains(., 'Awaiting second officer')]/following-sibling::ul[1]"
    ).get_by_role("link", name=FIRM).click()
    decide = b.locator("#decide-form")
    decide.get_by_label("Decision").select_option("approve")
    decide.get_by_label("Reason").fill("All four checks passed; documents consistent.")
    decide.get_by_role("button", name="Record decision").click()
    message(b, "Decision recorded.")
    expect(b.locator("#firm-status")).to_have_text("Approved")
    expect(b.locator("#decided")).to_contain_text("by bob")

    # --- the firm's administrator takes the invitation ------------------------------------------
    applicant.goto(base + case_url)
    expect(applicant.locator("#case-status")).to_have_text("Approved")
    invitation = mail.outbox[-1]
    assert invitation.to == ["fay@northwind.example"]
    invite_path = re.search(r"https?://[^/]+(/invite/[^/\s]+/)", invitation.body).group(1)
    admin = applicant
    admin.goto(base + invite_path)
    expect(admin.get_by_role("heading", name="Create your account")).to_be_visible()
    expect(admin.locator("main")).to_contain_text(FIRM)
    admin.get_by_label("Username").fill("fay")
    admin.get_by_label("Password", exact=True).fill(ADMIN_PASSWORD)
    admin.get_by_label("Password again").fill(ADMIN_PASSWORD)
    admin.get_by_role("button", name="Create account").click()
    expect(admin).to_have_url(base + "/accounts/login/")
    message(admin, "Your account is ready: sign in.")
    admin.get_by_label("Username").fill("fay")
    admin.get_by_label("Password").fill(ADMIN_PASSWORD)
    admin.get_by_role("button", name="Sign in").click()
    expect(admin).to_have_url(base + "/firm/")
    expect(admin.get_by_role("heading", name=FIRM)).to_be_visible()
    expect(admin.locator("main")).to_contain_text("you are firm administrator")
    expect(admin.locator("#participants")).to_contain_text("No participants yet.")
    shot(admin, "06-firm-dashboard")

    admin.get_by_role("link", name="Add a participant").click()
    admin.get_by_label("Trader id").fill("fay-desk")
    admin.get_by_label("Name").fill("Fay Desk")
    admin.get_by_label("Email").fill("desk@northwind.example")
    admin.get_by_label("Role").select_option("requester")
    admin.get_by_role("button", name="Add and invite").click()
    message(admin, "fay-desk added and invited.")
    expect(admin.locator("#csr-form")).to_be_visible()
    shot(admin, "07-participant-csr-form")
    participant_url = admin.url
    admin.get_by_label("…or paste it").fill(make_csr(ec_key()).decode())
    admin.get_by_role("button", name="Submit CSR").click()
    message(admin, "CSR received: an officer will sign it.")
    expect(admin.locator("#requests")).to_contain_text("Submitted")

    # --- officer B signs the CSR -------------------------------------------------------------
    b.goto(base + "/officer/")
    row = b.locator("#pending-csrs tr", has_text="fay-desk")
    expect(row).to_contain_text(FIRM)
    row.get_by_role("button", name="Sign").click()
    message(b, "Signed: certificate")
    expect(b.locator("#pending-csrs")).to_contain_text("None.")

    # --- the administrator fetches the certificate, connects, revokes ---------------------------
    admin.goto(participant_url)
    expect(admin.locator("#requests")).to_contain_text("Issued")
    admin.locator("main a[href^='/certificates/']").first.click()
    expect(admin.locator("#cert-status")).to_have_text("Active")
    expect(admin.locator("main")).to_contain_text("fay-desk")
    shot(admin, "08-certificate")
    # The file names are the ones the connect page's curl line uses.
    name, pem = download(admin, "#dl-cert")
    assert name == "fay-desk.pem"
    assert pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:80]
    assert pem.count("BEGIN CERTIFICATE") == 1
    name, chain = download(admin, "#dl-chain")
    assert name == "fay-desk-fullchain.pem"
    assert chain.startswith(pem)
    assert chain.count("BEGIN CERTIFICATE") == 3  # leaf, client CA, root
    name, bundle = download(admin, "#dl-ca")
    assert name == "keyline-ca-bundle.pem"
    assert bundle.startswith("-----BEGIN CERTIFICATE-----")
    assert bundle.count("BEGIN CERTIFICATE") == 2  # root, server CA
    assert pem not in bundle

    admin.get_by_role("link", name="Connect to the RFQ API").click()
    curl = admin.locator("#curl-line")
    expect(curl).to_contain_text("curl --cacert keyline-ca-bundle.pem")
    expect(curl).to_contain_text("--cert fay-desk.pem --key fay-desk.key")
    expect(curl).to_contain_text("/api/v1/whoami/")
    shot(admin, "09-connect")

    admin.go_back()
    expect(admin.locator("#cert-status")).to_have_text("Active")
    revoke = admin.locator("#revoke-form")
    revoke.get_by_label("Reason").select_option("keyCompromise")
    revoke.get_by_role("button", name="Revoke now").click()
    message(admin, "revoked.")
    expect(admin.locator("#cert-status")).to_have_text("Revoked")
    expect(admin.locator("#revoke-form")).to_have_count(0)
    admin.goto(base + "/firm/")
    expect(admin.locator("#certificates")).to_contain_text("Revoked")
    b.goto(base + "/officer/")
    revocations = b.locator("h2", has_text="Recent revocations").locator("xpath=following::ul[1]")
    expect(revocations).to_contain_text("fay-desk")

    # --- every link seen, followed as the user who saw it ------------------------------------
    by_who = {"applicant": applicant_context, "officer A": a_context, "officer B": b_context}
    assert len(set().union(*watch.links.values())) > 10, watch.links
    for who, links in watch.links.items():
        for link in sorted(links):
            response = by_who[who].request.get(link)
            if response.status >= 400:
                watch.problems.append(f"{who}: link {link} answers {response.status}")

    assert watch.problems == []
