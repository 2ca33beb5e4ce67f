"""Browser tests: Debian's Chromium driven by Playwright (pytest-playwright) against
pytest-django's ``live_server``.

Playwright cannot download its own browser builds here, so the system Chromium is launched
(``.ci/run`` and ``bin/test`` install it). Without it the tests skip, except in CI (``CI`` set),
where a missing browser is a failure: CI must never pass by skipping them.

The Playwright driver is started once per test module, not once per session as the plugin
does, so that its event loop never outlives the browser tests (see ``playwright`` below).
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}


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
    """Playwright's sync API, for this module only.

    The sync API runs an asyncio event loop in this (the main) thread from start() to stop():
    ``asyncio.get_running_loop()`` returns it the whole time. Django refuses database access
    from a thread with a running loop (SynchronousOnlyOperation, "You cannot call this from an
    async context"), yet the test itself (fixtures creating officers, the ``cas`` fixture,
    pytest-django's flush after a transactional test) uses the ORM here, synchronously and
    while no request of the browser is being served. DJANGO_ALLOW_ASYNC_UNSAFE turns that
    check off; it is read on every call, so it is set here, before the loop starts and before
    any database access of the browser tests, and put back once the loop has stopped: the rest
    of the suite, in the same process, keeps Django's check. The live server's own thread has
    no loop and never needed it.
    """
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the browser tests (.ci/run installs it)")
        pytest.skip(f"{missing}: the browser tests are skipped")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    driver = sync_playwright().start()
    try:
        yield driver
    finally:
        driver.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(playwright, browser_name: str, browser_type_launch_args: dict) -> Iterator:
    if browser_name != "chromium":
        pytest.skip("only Debian's Chromium is available on this machine")
    browser = playwright.chromium.launch(**browser_type_launch_args)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict:
    """Every context: 1280 px wide (the documentation screenshots), downloads accepted."""
    return {"viewport": VIEWPORT, "accept_downloads": True, "locale": "en-GB"}
