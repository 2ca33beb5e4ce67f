"""Browser tests: Debian's Chromium driven by Playwright (pytest-playwright) against the
platform ``bin/run`` starts (the ``platform`` fixture), through its nginx, as a user's browser
reaches it.

Playwright cannot download its own browser builds here, so the system Chromium is launched
(``.ci/run`` and ``bin/test`` install it). Without it the tests skip, except in CI (``CI`` set),
where a missing browser is a failure: CI must never pass by skipping them.

The Playwright driver is started once per test module, not once per session as the plugin
does, so that its event loop (the sync API runs one in the main thread from start() to stop())
never outlives the browser tests in a worker that runs other tests too.
"""

import base64
import hashlib
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.platform import Platform

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}


def trusted_server_key(platform: Platform) -> str:
    """The base64 SHA-256 of the SubjectPublicKeyInfo of the portal's server certificate, once
    Python has verified that certificate (chain and host name) against the platform's root,
    var/demo/root.pem.

    Chromium is told to accept exactly that key (``--ignore-certificate-errors-spki-list``)
    rather than every certificate (Playwright's ``ignore_https_errors``). Making Chromium trust
    root.pem itself would need an NSS database made with ``certutil`` (libnss3-tools), which
    neither this machine nor CI installs; pinning root.pem's own key does not work either,
    because nginx sends the leaf and the server CA but not the root. So the trust decision is
    made here, by OpenSSL against root.pem, and Chromium is pinned to its outcome: a server
    presenting any other key (or no valid chain to root.pem, as seen from Python) fails.
    """
    host, port = urlsplit(platform.portal_url).hostname, urlsplit(platform.portal_url).port
    context = ssl.create_default_context(cafile=str(platform.root_pem))
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """The plugin's options (--headed, --slowmo) plus the system Chromium."""
    return {
        "headless": True,
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(scope="module")
def playwright() -> Iterator:
    """Playwright's sync API, for this module only."""
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the browser tests (.ci/run installs it)")
        pytest.skip(f"{missing}: the browser tests are skipped")
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture(scope="module")
def browser(
    playwright, browser_name: str, browser_type_launch_args: dict, platform: Platform
) -> Iterator:
    """Chromium, trusting the platform's server certificate (see ``trusted_server_key``)."""
    if browser_name != "chromium":
        pytest.skip("only Debian's Chromium is available on this machine")
    pin = f"--ignore-certificate-errors-spki-list={trusted_server_key(platform)}"
    args = {**browser_type_launch_args}
    args["args"] = [*args.get("args", []), pin]
    browser = playwright.chromium.launch(**args)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict:
    """Every context: 1280 px wide (the documentation screenshots), downloads accepted, and
    certificate errors *not* ignored (the browser fixture pins the platform's server key)."""
    return {
        "viewport": VIEWPORT,
        "accept_downloads": True,
        "locale": "en-GB",
        "ignore_https_errors": False,
    }
