"""The opt-out link in a real browser (Debian's Chromium): confirm, opted out, expired, bad
token; then a brand admin finds the person and opts them back in with a reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from brands.roles import Role
from optouts.links import opt_out_url
from optouts.models import OptOut, OptOutEvent, Source
from tests.browser import browser_user, login, screenshot
from tests.test_optout_support import sent_message

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PHONE = "+14155550123"


def test_opt_out_link_then_admin_opt_in(page, live_server, tenancy, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    message = sent_message(tenancy.project_a, PHONE, ago=timedelta(days=3))
    url = opt_out_url(message.pk)

    # The recipient opens the link from the SMS: a confirmation, nothing changed yet.
    page.goto(url)
    assert page.locator("h1").inner_text() == "Opt out of text messages?"
    assert "•••• 0123" in page.content() and "Alpha" in page.content()
    assert not OptOut.objects.exists()
    screenshot(page, "optout-link-confirm")

    # One tap opts out.
    page.click("#confirm-optout")
    page.wait_for_selector("#optout-done")
    assert "will not send survey text messages" in page.locator("#optout-card").inner_text()
    screenshot(page, "optout-link-done")
    optout = OptOut.objects.get()
    assert optout.source == Source.LINK and optout.active
    message.person.refresh_from_db()
    assert message.person.metadata["Opted out"] == "Yes"

    # Opening it again says so; no second opt-out.
    page.goto(url)
    page.wait_for_selector("#optout-done")
    assert OptOutEvent.objects.count() == 1

    # A link older than 10 days explains itself and how to opt out by reply.
    old = sent_message(tenancy.project_a, "+14155550124", ago=timedelta(days=10, minutes=5))
    page.goto(opt_out_url(old.pk))
    card = page.locator("#optout-card").inner_text()
    assert "This opt-out link has expired" in card and "reply STOP" in card
    screenshot(page, "optout-link-expired")

    # A tampered token is a plain not-found page.
    page.goto(url[:-1] + ("A" if url[-1] != "A" else "B"))
    assert page.locator("h1").inner_text() == "Not found"
    assert OptOut.objects.count() == 1

    # A brand admin sees the opt-out on the person's page and opts them back in.
    admin = browser_user(tenancy.brand_a, role=Role.BRAND_ADMIN)
    login(page, live_server, admin)
    page.goto(f"{live_server.url}/people/{message.person_id}/")
    section = page.locator("#person-optouts")
    assert "Opted out" in section.inner_text() and "Opt-out link" in section.inner_text()
    page.fill("#person-optouts input[name=reason]", "Asked us by email to be included again")
    with page.expect_navigation():
        page.click("#person-optouts .opt-in-form button")
    assert "is opted back in" in page.locator(".messages").inner_text()
    assert "Not opted out of any channel." in page.locator("#person-optouts").inner_text()
    screenshot(page, "optout-person-opted-in")
    optout.refresh_from_db()
    assert not optout.active
    event = OptOutEvent.objects.get(action="opt_in")
    assert event.actor == admin and event.reason == "Asked us by email to be included again"

    # The opt-outs list and its nav entry.
    page.click("nav.mainnav >> text=Opt-outs")
    page.select_option("select[name=state]", "all")
    with page.expect_navigation():
        page.click("#optout-filters button")
    assert PHONE in page.locator("#optout-table").inner_text()
    assert page.js_errors == []
