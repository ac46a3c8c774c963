"""Browser tests: Debian's Chromium driven by Playwright, against pytest-django's live_server.

Use in a test module::

    pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

    def test_something(page, live_server, tenancy, user_factory):
        user = browser_user(tenancy.brand_a, role=Role.PROJECT_ADMIN)
        login(page, live_server, user)
        page.goto(live_server.url + "/projects/")

``browser`` is module-scoped (one Chromium per module), ``page`` is a fresh context per test
(own cookies, downloads accepted). Chromium is never downloaded: /usr/bin/chromium or skip,
and under CI=true a missing Chromium fails instead.

Why ``DJANGO_ALLOW_ASYNC_UNSAFE``: Playwright's sync API runs an asyncio loop in the test's
thread, so Django would refuse every ORM call of the test (and of the database teardown) as
"called from an async context". It is set while a browser is open and restored afterwards,
so tests of other modules keep Django's guard.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from brands.roles import Role
from tests.factories.brands import MembershipFactory, UserFactory

CHROMIUM = Path(os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_PASSWORD = "relay-browser-pass-1"
VIEWPORT = {"width": 1280, "height": 900}
# Generous: the first request of a cold test process may import and compile large modules
# (phonenumbers' metadata, the Twilio SDK) when no bytecode is cached, which takes seconds.
DEFAULT_TIMEOUT_MS = 60_000
SCREENSHOTS = Path(os.environ.get("RELAY_SCREENSHOTS", "/tmp/relay-shots"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    """A fresh browser context and page per test (no cookies shared between tests)."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale="en-US")
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.js_errors = errors  # tests may assert the page raised no JavaScript error
    try:
        yield tab
    finally:
        context.close()


def browser_user(brand, *, role: str = Role.PROJECT_ADMIN, username: str | None = None):
    """A member of ``brand`` with a real password (see ``BROWSER_PASSWORD``)."""
    user = UserFactory(**({"username": username} if username else {}), password=BROWSER_PASSWORD)
    MembershipFactory(user=user, brand=brand, role=role)
    return user


def login(page, live_server, user, password: str = BROWSER_PASSWORD) -> None:
    """Log ``user`` in through the login form; the user must have a usable ``password``."""
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", user.get_username())
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    if "/login/" in page.url:
        raise AssertionError(f"login failed for {user.get_username()!r}")


def screenshot(page, name: str) -> Path:
    """Save a full-page PNG under ``SCREENSHOTS`` (for people to look at)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
