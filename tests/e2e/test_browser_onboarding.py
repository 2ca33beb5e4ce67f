"""The whole onboarding path in a real browser (Chromium), as the people who use it click it,
against the platform ``bin/run`` starts, through its nginx: the portal over TLS on its own
port, e-mails read from the files the platform writes, the demo officers with their second
factor, and at the end the new trader's first call of the mTLS API with the certificate the
portal issued and the key that never left this machine.

Three browser contexts, so three separate sets of cookies: the applicant (later the firm's
administrator), officer A (who checks and prepares the case) and officer B (who decides it and
signs the CSR). On every page: the site's stylesheet is applied, no console error, no page
error, no failed request, every form POST succeeds (bar the three refusals the test provokes),
and every URL on the page (links, forms, scripts, stylesheets, and URLs in its text) is the
platform's portal, API or PKI address, port and all. Screenshots of the key pages are taken on
every run (see ``shot``).
"""

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from base64 import b32decode
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from django_otp.oath import totp
from playwright.sync_api import BrowserContext, Error, Page, expect

from kernel.lei import lei_with_check_digits
from tests.keys import ec_key, key_pem, make_csr
from tests.platform import Platform, platform_test

pytestmark = platform_test

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TMP_SHOTS = Path(tempfile.gettempdir()) / "keyline-screenshots"
LEI = lei_with_check_digits("984500BROWSERFLOW1")
FIRM = "Northwind Markets Ltd"
TRADER = "fay-desk"
ADMIN_PASSWORD = "a long pass phrase 42"
# Hosts outside the platform that a page may link to (officer's case page: the LEI record).
EXTERNAL = {"https://search.gleif.org"}

# What only static/css/site.css sets: the page background (--bg) and the brand's colour
# (--accent). Unstyled, Chromium shows a transparent body and a link-blue brand.
SITE_BACKGROUND = "rgb(245, 247, 250)"
SITE_ACCENT = "rgb(11, 92, 173)"
# What only Swagger UI's stylesheet sets: its title's colour and size (an unstyled h2 is black
# and 1.5em).
SWAGGER_TITLE = {"color": "rgb(59, 65, 81)", "font-size": "36px"}

FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
TEXT_URL = re.compile(r"\bhttps?://[^\s\"'<>]+")

# Runs in every page: what the page shows, once it (and its stylesheets) has loaded.
REPORT_JS = """() => {
    const style = (selector, property) => {
        const element = document.querySelector(selector);
        return element ? getComputedStyle(element)[property] : null;
    };
    const urls = [];
    for (const [selector, attribute] of [["a", "href"], ["link", "href"], ["script", "src"],
            ["img", "src"], ["iframe", "src"], ["form", "action"]]) {
        for (const element of document.querySelectorAll(selector + "[" + attribute + "]")) {
            urls.push(new URL(element.getAttribute(attribute), document.baseURI).href);
        }
    }
    return {
        url: location.href,
        title: document.title,
        background: getComputedStyle(document.body).backgroundColor,
        accent: style("header .brand", "color"),
        stylesheets: [...document.styleSheets].map(sheet => sheet.href).filter(Boolean),
        links: [...document.querySelectorAll("a[href]")].map(a => a.href),
        urls,
        text: document.body ? document.body.innerText : "",
    };
}"""
REPORT_ON_LOAD = f"""window.addEventListener("load", () => {{
    if (location.protocol.startsWith("http")) window.keylineReport(({REPORT_JS})());
}});"""


@dataclass
class Watch:
    """Collects what a person would notice went wrong, from every page of every context."""

    platform: Platform
    problems: list[str] = field(default_factory=list)
    # Pages the test provokes on purpose (a wrong code: 400, a four-eyes refusal: 403), by
    # (URL, status). Chromium logs any page with an error status as a console error; these
    # are expected, every other page with an error status is a problem.
    refusals: set[tuple[str, int]] = field(default_factory=set)
    # (who, URL, status) of every POST any page made.
    posts: list[tuple[str, str, int]] = field(default_factory=list)
    # Content type of every stylesheet any page loaded, by URL.
    stylesheets: dict[str, str] = field(default_factory=dict)
    # who -> paths of the pages they saw (reported once loaded)
    seen: dict[str, list[str]] = field(default_factory=dict)
    # who -> portal links seen on their pages (followed at the end, as that user)
    links: dict[str, set[str]] = field(default_factory=dict)
    # Console errors a test provokes on purpose (text they contain), and those seen.
    provoked_console: set[str] = field(default_factory=set)
    console_seen: list[str] = field(default_factory=list)

    @property
    def origins(self) -> set[str]:
        """Where a page may point: the platform's portal, API and PKI, ports and all."""
        return {
            origin(self.platform.portal_url),
            origin(self.platform.api_url),
            origin(self.platform.pki_url),
            *EXTERNAL,
        }

    def expect_refusal(self, url: str, status: int) -> None:
        self.refusals.add((url, status))

    def check_url(self, url: str, where: str) -> None:
        scheme = urlsplit(url).scheme
        if scheme in ("javascript", "data"):  # "Back" on the error page; the favicon
            return
        if scheme not in ("http", "https") or origin(url) not in self.origins:
            self.problems.append(f"{where}: {url} is not on the platform {sorted(self.origins)}")

    def context(self, context: BrowserContext, who: str) -> BrowserContext:
        self.seen.setdefault(who, [])
        self.links.setdefault(who, set())
        context.expose_binding("keylineReport", lambda _source, report: self.report(who, report))
        context.add_init_script(REPORT_ON_LOAD)
        return context

    def page(self, context: BrowserContext, who: str) -> Page:
        page = context.new_page()

        def console(message) -> None:
            if message.type != "error":
                return
            failed = FAILED_LOAD.match(message.text)
            if failed and (message.location["url"], int(failed[1])) in self.refusals:
                return
            if any(text in message.text for text in self.provoked_console):
                self.console_seen.append(message.text)
                return
            self.problems.append(f"{who} {page.url}: console error: {message.text}")

        def response(response) -> None:
            request = response.request
            if request.method == "POST":
                self.posts.append((who, response.url, response.status))
            if request.resource_type == "stylesheet":
                self.stylesheets[response.url] = response.headers.get("content-type", "")
            if response.status >= 400 and (response.url, response.status) not in self.refusals:
                try:
                    said = response.text()[:300]
                except Error as error:  # the body is gone (the page moved on)
                    said = f"(body: {error.message})"
                self.problems.append(f"{who}: {response.status} for {response.url}: {said}")

        def request_failed(request) -> None:
            # A download aborts the navigation that started it; that is not a failure.
            download = "/download/" in request.url or "/audit/export.csv" in request.url
            if not (request.failure == "net::ERR_ABORTED" and download):
                self.problems.append(f"{who}: {request.url} failed: {request.failure}")

        page.on("console", console)
        page.on("pageerror", lambda error: self.problems.append(f"{who} {page.url}: {error}"))
        page.on("response", response)
        page.on("requestfailed", request_failed)
        return page

    def report(self, who: str, report: dict) -> None:
        """A page has loaded: is it the platform's, styled, and pointing only at the platform?"""
        url = report["url"]
        where = f"{who} {url}"
        self.seen[who].append(urlsplit(url).path)
        if origin(url) != origin(self.platform.portal_url):
            self.problems.append(f"{where}: a page off the portal")
        if not urlsplit(url).path.startswith("/developers/api/"):  # Swagger UI: checked apart
            if not any("/static/css/site." in sheet for sheet in report["stylesheets"]):
                self.problems.append(f"{where}: no site stylesheet: {report['stylesheets']}")
            styled = (report["background"], report["accent"])
            if styled != (SITE_BACKGROUND, SITE_ACCENT):
                self.problems.append(f"{where}: not styled by site.css (body, brand): {styled}")
        for each in report["urls"]:
            self.check_url(each, where)
        for each in TEXT_URL.findall(report["text"]):
            self.check_url(each.rstrip(".,;:)"), f"{where} (in its text)")
        self.links[who].update(
            link.split("#")[0]
            for link in report["links"]
            if origin(link) == origin(self.platform.portal_url) and "/download/" not in link
        )

    def check_now(self, page: Page, who: str) -> None:
        """The load report, again, for a page that keeps rendering after its load event."""
        self.report(who, page.evaluate(REPORT_JS))

    def check_posts(self) -> None:
        """Every form POST succeeded, except the refusals provoked, each seen exactly once."""
        provoked = []
        for who, url, status in self.posts:
            if (url, status) in self.refusals:
                provoked.append((url, status))
            elif status >= 400:
                self.problems.append(f"{who}: POST {url} answered {status}")
        if sorted(provoked) != sorted(self.refusals):
            self.problems.append(f"refusals provoked {provoked}, expected {self.refusals}")


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Inbox:
    """The platform's e-mails (files in var/mail/), waited for by recipient. Every URL in
    every e-mail must be the platform's, port and all, like those on its pages."""

    def __init__(self, platform: Platform, watch: Watch) -> None:
        self.platform, self.watch = platform, watch
        self.unread: list[EmailMessage] = []
        platform.new_mail()  # what others (the demo data, other tests) had sent

    def wait_for(self, to: str, timeout: float = 60) -> str:
        """The plain-text body of the oldest unread e-mail to ``to``."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.platform.new_mail():
                for url in TEXT_URL.findall(text_of(message)):
                    self.watch.check_url(url, f"e-mail {message['Subject']!r} to {message['To']}")
                self.unread.append(message)
            for message in self.unread:
                if to in message["To"]:
                    self.unread.remove(message)
                    return text_of(message)
            assert time.monotonic() < deadline, f"no e-mail to {to} in {timeout} s"
            time.sleep(0.2)


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def shot(page: Page, name: str) -> None:
    """Every run takes the screenshots (a page that cannot render fails here); they replace
    the documentation copies only with KEYLINE_SCREENSHOTS=1, so a test run leaves the
    checkout clean."""
    directory = SCREENSHOTS if os.environ.get("KEYLINE_SCREENSHOTS") == "1" else TMP_SHOTS
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=directory / f"{name}.png", full_page=True)


def message(page: Page, text: str) -> None:
    expect(page.locator("ul.messages")).to_contain_text(text)


def officer_sign_in(page: Page, platform: Platform, officer: str) -> None:
    """The demo officer signs in: the password, then the code their authenticator shows now.
    Each officer signs in once (their own device), so no code is ever offered twice."""
    base = platform.portal_url
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(officer)
    page.get_by_label("Password").fill(platform.officer_password())
    page.get_by_role("button", name="Sign in").click()
    # The password alone is not enough for the officer desk: the second factor comes next.
    expect(page).to_have_url(re.compile(r"/accounts/verify/\?next=/officer/$"))
    page.get_by_label("Code from your authenticator app").fill(platform.totp(officer))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(base + "/officer/")
    expect(page.locator("header .who")).to_contain_text("2FA ✓")


def download(page: Page, selector: str, directory: Path) -> tuple[str, str]:
    """Clicks a download link; the file is saved under its suggested name in ``directory``."""
    with page.expect_download() as info:
        page.click(selector)
    file = info.value
    path = directory / file.suggested_filename
    file.save_as(path)
    return file.suggested_filename, path.read_text()


def follow(platform: Platform, context: BrowserContext, links: set[str]) -> list[str]:
    """GETs every link with the context's cookies (from Python, trusting root.pem: the
    context's own request API runs outside the browser and its certificate pin)."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in context.cookies(platform.portal_url))
    broken = []
    with platform.portal(headers={"Cookie": cookies}) as client:
        for link in sorted(links):
            response = client.get(link)
            if response.status_code >= 400:
                broken.append(f"link {link} answers {response.status_code}")
    return broken


def test_onboarding_in_the_browser(platform: Platform, tmp_path: Path, new_context):
    base = platform.portal_url
    watch = Watch(platform)
    inbox = Inbox(platform, watch)
    applicant_context = watch.context(new_context(), "applicant")
    a_context = watch.context(new_context(), "officer A")
    b_context = watch.context(new_context(), "officer B")

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
    case_url = urljoin(base + "/", applicant.locator("#case-link").get_attribute("href"))
    assert case_url.startswith(base + "/apply/case/"), case_url
    # The link as the page spells it out, and as the e-mail carries it: host and port of the
    # portal the applicant is on.
    expect(applicant.locator("#case-link")).to_have_text(case_url)
    assert case_url in inbox.wait_for("fay@northwind.example")
    applicant.goto(case_url)  # from the e-mail
    expect(applicant.locator("#case-status")).to_have_text("Applied")
    expect(applicant.locator("main")).to_contain_text("No code is waiting.")

    # --- officer A checks the case -------------------------------------------------------------
    a = watch.page(a_context, "officer A")
    officer_sign_in(a, platform, "officer")
    applied = a.locator("h3", has_text="Applied").locator("xpath=following-sibling::ul[1]")
    expect(applied).to_contain_text(FIRM)
    shot(a, "03-officer-dashboard")
    applied.get_by_role("link", name=FIRM).click()
    expect(a.locator("#firm-status")).to_have_text("Applied")
    expect(a.locator("main")).to_contain_text("GB · Client (liquidity seeker)")  # upper-cased
    officer_case_url = a.url
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
    expect(a.locator("#prepared")).to_contain_text("by officer,")
    # Four eyes: A is shown no decision form, only why.
    expect(a.locator("#four-eyes")).to_have_text(
        "Waiting for a second officer: you prepared or worked on this case."
    )
    expect(a.locator("#decide-form")).to_have_count(0)
    shot(a, "05-four-eyes-waiting")
    # A decision posted anyway (a stale tab, a crafted request) is refused by the server: a
    # 403 of the four-eyes rule, not of the CSRF check (the token and Origin are the page's).
    watch.expect_refusal(officer_case_url + "decide/", 403)
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
        urlsplit(officer_case_url).path,
    )
    expect(a.locator("#error-code")).to_have_text("FOUR_EYES")
    expect(a.locator("p.error")).to_have_text(
        "An officer who prepared or worked on this case cannot decide it."
    )

    # --- officer B approves ------------------------------------------------------------------
    b = watch.page(b_context, "officer B")
    officer_sign_in(b, platform, "officer2")
    waiting = b.locator("h3", has_text="Awaiting second officer")
    expect(waiting.locator(".count")).to_have_text("1")
    b.locator(
        "xpath=//h3[contains(., 'Awaiting second officer')]/following-sibling::ul[1]"
    ).get_by_role("link", name=FIRM).click()
    decide = b.locator("#decide-form")
    # Neither choice is made for the officer, and the upload form that would disqualify them
    # is not offered.
    expect(decide.get_by_role("radio", checked=True)).to_have_count(0)
    expect(b.locator("#document-form")).to_have_count(0)
    expect(b.locator("#no-upload")).to_be_visible()
    decide.get_by_label("Reason").fill("All four checks passed; documents consistent.")
    posts = len(watch.posts)
    decide.get_by_role("button", name="Record decision").click()  # no choice made: not sent
    first_radio = decide.get_by_role("radio").first
    assert first_radio.evaluate("e => e.validity.valueMissing"), "the choice is not required"
    assert len(watch.posts) == posts, watch.posts[posts:]
    decide.get_by_label("Approve: the firm becomes active").check()
    decide.get_by_label("Reason").fill("All four checks passed; documents consistent.")
    decide.get_by_role("button", name="Record decision").click()
    message(b, f"Approved: {FIRM} is active and its administrator is invited.")
    expect(b.locator("#firm-status")).to_have_text("Approved")
    expect(b.locator("#decided")).to_contain_text("by officer2")

    # --- the firm's administrator takes the invitation ------------------------------------------
    applicant.goto(case_url)
    expect(applicant.locator("#case-status")).to_have_text("Approved")
    invitation = inbox.wait_for("fay@northwind.example")
    invite_url = re.search(r"https?://\S+/invite/[^/\s]+/", invitation)[0]
    assert invite_url.startswith(base + "/invite/"), invite_url
    admin = applicant
    admin.goto(invite_url)
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
    # Adding traders needs a second factor: fay sets up her authenticator app on the way. The
    # page shows the secret; this test is her phone.
    message(admin, "Set up a second factor before you add traders or revoke certificates.")
    secret = admin.locator("#totp-secret").inner_text()
    key = b32decode(secret)
    admin.get_by_label("Code from your authenticator app").fill(f"{totp(key):06d}")
    admin.get_by_role("button", name="Confirm and verify").click()
    message(admin, "Your authenticator app is set up, and this session is verified.")
    admin.get_by_label("Trader id").fill(TRADER)
    admin.get_by_label("Name").fill("Fay Desk")
    admin.get_by_label("Email").fill("desk@northwind.example")
    admin.get_by_label("Role").select_option("requester")
    admin.get_by_role("button", name="Add and invite").click()
    message(admin, f"{TRADER} added and invited.")
    inbox.wait_for("desk@northwind.example")  # its links checked like every e-mail's
    expect(admin.locator("#csr-form")).to_be_visible()
    shot(admin, "07-participant-csr-form")
    participant_url = admin.url
    # The other way to a certificate: an EST enrollment token for the trader's own machine,
    # shown once with the client's commands (this trader goes the CSR way, so it is withdrawn).
    admin.get_by_role("button", name="Make an enrollment token").click()
    token = admin.locator("#enrollment-token").inner_text()
    assert re.fullmatch(r"est_[A-Za-z0-9_-]{32}", token), token
    expect(admin.locator("#client-commands")).to_contain_text(f"keyline enroll --token {token}")
    expect(admin.locator("#client-config")).to_contain_text(f'api_url = "{platform.api_url}"')
    shot(admin, "19-enrollment-token")
    admin.get_by_role("link", name="Back").click()
    tokens = admin.locator("#enrollment-tokens")
    expect(tokens).to_contain_text("open")
    expect(tokens).not_to_contain_text(token)
    tokens.get_by_role("button", name="Withdraw").click()
    message(admin, f"for {TRADER} is withdrawn.")
    expect(admin.locator("#enrollment-tokens")).to_contain_text("revoked")
    # The trader's key is made here and stays here; only the CSR goes up.
    key = ec_key()
    key_path, csr_path = tmp_path / f"{TRADER}.key", tmp_path / f"{TRADER}.csr"
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    csr_path.write_bytes(make_csr(key, common_name=TRADER))
    admin.get_by_label("CSR file (.csr / .pem)").set_input_files(csr_path)
    admin.get_by_role("button", name="Submit CSR").click()
    message(admin, "CSR received: an officer will sign it.")
    expect(admin.locator("#requests")).to_contain_text("Submitted")

    # --- officer B signs the CSR -------------------------------------------------------------
    b.goto(base + "/officer/")
    row = b.locator("#pending-csrs tr", has_text=TRADER)
    expect(row).to_contain_text(FIRM)
    row.get_by_role("link", name="Review…").click()
    facts = b.locator("#csr-facts")
    expect(facts).to_contain_text(f"CN={TRADER},O={FIRM},C=GB")
    expect(facts).to_contain_text("EC")
    expect(b.locator("#spki")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    expect(b.locator("#history")).to_contain_text("None: this would be the first.")
    shot(b, "11-csr-review")
    b.get_by_role("button", name=re.compile(r"^Sign request #")).click()
    message(b, "Signed: certificate")
    expect(b.locator("#csr-status")).to_have_text("Issued")
    b.goto(base + "/officer/")
    expect(b.locator("#pending-csrs")).to_contain_text("None.")

    # --- the administrator fetches the certificate ----------------------------------------------
    admin.goto(participant_url)
    expect(admin.locator("#requests")).to_contain_text("Issued")
    admin.locator("main a[href^='/certificates/']").first.click()
    expect(admin.locator("#cert-status")).to_have_text("Active")
    expect(admin.locator("main")).to_contain_text(TRADER)
    serial = admin.locator("#serial").inner_text()
    shot(admin, "08-certificate")
    # The file names are the ones the connect page's curl line uses.
    name, pem = download(admin, "#dl-cert", tmp_path)
    assert name == f"{TRADER}.pem"
    assert pem.startswith("-----BEGIN CERTIFICATE-----"), pem[:80]
    assert pem.count("BEGIN CERTIFICATE") == 1
    name, chain = download(admin, "#dl-chain", tmp_path)
    assert name == f"{TRADER}-fullchain.pem"
    assert chain.startswith(pem)
    assert chain.count("BEGIN CERTIFICATE") == 3  # leaf, client CA, root
    name, bundle = download(admin, "#dl-ca", tmp_path)
    assert name == "keyline-ca-bundle.pem"
    assert bundle.startswith("-----BEGIN CERTIFICATE-----")
    assert bundle.count("BEGIN CERTIFICATE") == 2  # root, server CA
    assert pem not in bundle

    # --- the trader's first API call: through nginx's mTLS port, the downloaded certificate
    # and the key that never left this machine --------------------------------------------------
    with platform.api((tmp_path / f"{TRADER}.pem", key_path)) as client:
        response = client.get("/api/v1/whoami/")
    assert response.status_code == 200, response.text
    me = response.json()
    assert me["participant"]["trader_id"] == TRADER, me
    assert me["firm"]["lei"] == LEI, me
    assert me["firm"]["legal_name"] == FIRM, me
    assert me["certificate"]["serial"] == serial, me

    # The connect page's curl line, run as it stands, beside the downloaded files.
    admin.get_by_role("link", name="Connect to the RFQ API").click()
    curl = admin.locator("#curl-line")
    expect(curl).to_contain_text("curl --cacert keyline-ca-bundle.pem")
    expect(curl).to_contain_text(f"--cert {TRADER}.pem --key {TRADER}.key")
    expect(curl).to_contain_text(f"{platform.api_url}/api/v1/whoami/")
    shot(admin, "09-connect")
    command = shlex.split(curl.inner_text().replace("\\\n", " "))
    assert command[0] == "curl", command
    ran = subprocess.run(
        [*command, "-sS"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["participant"]["trader_id"] == TRADER, ran.stdout

    # --- the administrator revokes; the API refuses the certificate from then on ----------------
    admin.go_back()
    expect(admin.locator("#cert-status")).to_have_text("Active")
    admin.locator("#revoke-link").click()
    consequences = admin.locator("#consequences")
    expect(consequences).to_contain_text(f"{TRADER} can no longer reach the RFQ API")
    expect(consequences).to_contain_text("no other live certificate")
    expect(admin.locator("#serial")).to_have_text(serial)
    shot(admin, "12-revoke-confirm")
    revoke = admin.locator("#revoke-form")
    revoke.get_by_label("Reason").select_option("keyCompromise")
    revoke.get_by_role("button", name=re.compile(r"^Revoke ")).click()
    message(admin, f"is revoked: {TRADER} can no longer connect with it.")
    expect(admin.locator("#cert-status")).to_have_text("Revoked")
    expect(admin.locator("#revoke-link")).to_have_count(0)
    with platform.api((tmp_path / f"{TRADER}.pem", key_path)) as client:
        refused = client.get("/api/v1/whoami/")
    # Refused by the app (certificate_revoked), or by nginx once the new CRL is in.
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] in ("CERTIFICATE_REVOKED", "CLIENT_CERTIFICATE_UNVERIFIED")
    admin.goto(base + "/firm/")
    expect(admin.locator("#certificates")).to_contain_text("Revoked")
    b.goto(base + "/officer/")
    revocations = b.locator("h2", has_text="Recent revocations").locator("xpath=following::ul[1]")
    expect(revocations).to_contain_text(TRADER)

    # --- officer B finds the firm, reads its page, and suspends it with confirmation -------------
    b.goto(base + "/officer/")
    b.get_by_label("Search").fill("Northwind")
    b.get_by_role("button", name="Search").click()
    b.locator("#search-results").get_by_role("link", name=FIRM).click()
    expect(b.locator("#firm-facts")).to_contain_text(LEI)
    expect(b.locator("#firm-participants")).to_contain_text(TRADER)
    expect(b.locator("#firm-certificates")).to_contain_text("Revoked")
    expect(b.locator("#firm-trail")).to_contain_text("certificate.revoked")
    shot(b, "13-firm-page")
    # Had the administrator lost her phone: the reset names what she holds; cancelled here.
    b.locator("#firm-users").get_by_role("link", name="Reset second factor…").click()
    expect(b.locator("#factors-held")).to_have_text("an authenticator app")
    expect(b.locator("#consequences")).to_contain_text("sets up a new factor")
    shot(b, "20-factor-reset-confirm")
    b.get_by_role("link", name="Cancel").click()
    expect(b.locator("#firm-facts")).to_contain_text(LEI)
    b.locator("#suspend-link").click()
    expect(b.locator("#consequences")).to_contain_text("0 live certificates will be revoked")
    expect(b.locator("#consequences")).to_contain_text("portal user")
    stop = b.locator("#stop-form")
    stop.get_by_label("Reason").fill("Sanctions screening hit on the parent company.")
    stop.get_by_label("to confirm").fill("Northwind")  # not the legal name: refused
    watch.expect_refusal(b.url, 400)
    stop.get_by_role("button", name=f"Suspend {FIRM}").click()
    expect(b.locator("#error-code")).to_have_text("FIRM_NAME_MISMATCH")
    shot(b, "14-suspend-confirm")
    stop = b.locator("#stop-form")
    stop.get_by_label("Reason").fill("Sanctions screening hit on the parent company.")
    stop.get_by_label("to confirm").fill(FIRM)
    stop.get_by_role("button", name=f"Suspend {FIRM}").click()
    message(b, f"{FIRM} is suspended")

    # --- the audit trail: the firm's records, the chain verified, a CSV export -------------------
    b.get_by_role("link", name="Audit trail").first.click()
    b.get_by_label("Firm (LEI)").fill(LEI)
    b.get_by_role("button", name="Filter").click()
    records = b.locator("#audit-records")
    expect(records).to_contain_text("firm.suspended")
    expect(records).to_contain_text("certificate.revoked")
    expect(records).not_to_contain_text("crl.published")  # not about this firm
    b.get_by_role("button", name="Verify now").click()
    message(b, "Verification queued")
    for _ in range(50):  # the platform's worker runs it (beat's hourly check may come first)
        if "(officer2)" in b.locator("#chain-state").inner_text():
            break
        b.wait_for_timeout(200)
        b.reload()
    expect(b.locator("#chain-state")).to_contain_text("verified")
    expect(b.locator("#chain-state")).to_contain_text("(officer2)")
    shot(b, "15-audit-browser")
    with b.expect_download() as download_info:
        b.locator("#export").click()
    exported = tmp_path / "audit.csv"
    download_info.value.save_as(exported)
    lines = exported.read_text().splitlines()
    assert lines[0].startswith("sequence,created_at,event,"), lines[:2]
    assert any(",firm.suspended," in line for line in lines), lines
    assert not any(",crl.published," in line for line in lines), lines

    # --- the API documentation, styled by Swagger UI's own stylesheet -----------------------------
    docs = watch.page(applicant_context, "applicant")
    docs.goto(base + "/developers/api/")
    title = docs.locator(".swagger-ui .info .title")
    expect(title).to_contain_text("Keyline RFQ API")
    expect(docs.locator(".opblock").first).to_be_visible()
    for prop, value in SWAGGER_TITLE.items():
        expect(title).to_have_css(prop, value)
    watch.check_now(docs, "applicant")
    shot(docs, "10-api-docs")
    swagger_css = {url: kind for url, kind in watch.stylesheets.items() if "swagger-ui" in url}
    assert swagger_css, watch.stylesheets
    assert all(kind.startswith("text/css") for kind in swagger_css.values()), swagger_css
    docs.close()

    # --- every stylesheet was CSS, every POST went through, every link seen answers --------------
    assert watch.stylesheets, "no stylesheet loaded at all"
    for url, kind in watch.stylesheets.items():
        if not kind.startswith("text/css"):
            watch.problems.append(f"stylesheet {url} served as {kind!r}")
    assert len(watch.posts) > 15, watch.posts
    watch.check_posts()
    seen = {path for paths in watch.seen.values() for path in paths}
    for path in ("/", "/apply/", "/accounts/login/", "/accounts/verify/", "/officer/", "/firm/"):
        assert path in seen, f"{path} never reported as loaded: {watch.seen}"
    assert len(set().union(*watch.links.values())) > 10, watch.links
    by_who = {"applicant": applicant_context, "officer A": a_context, "officer B": b_context}
    for who, links in watch.links.items():
        watch.problems.extend(f"{who}: {p}" for p in follow(platform, by_who[who], links))

    assert watch.problems == []
