"""The two-way pages in Chromium: the admin previews the survey as texts (segments per
text), adds a keyword, schedules a two-way invite whose estimate counts the conversation,
and follows the conversation on the sessions page."""

from __future__ import annotations

import re

import pytest

from conversations.models import SmsKeyword
from distributions.inbound import sms_reply_receive
from distributions.models import Distribution
from distributions.providers.base import InboundSms
from surveys.services import question_create
from tests.browser import browser_user, login, screenshot
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.progress import until

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_two_way_pages(page, live_server, tenancy, eager_tasks):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    question_create(project=project, kind="single", text="Team?", choices=["Red", "Blue"])
    question_create(project=project, kind="rating", text="Score?")
    person = PersonFactory(brand=tenancy.brand_a, first_name="Ada", phone="+14155550101")
    ParticipantFactory(project=project, person=person)
    login(page, live_server, browser_user(tenancy.brand_a))

    page.goto(f"{live_server.url}/projects/{project.pk}/two-way/")
    rows = page.locator("#sms-preview tbody tr")
    assert rows.count() == 3  # two questions and the thank-you
    assert rows.nth(0).locator(".segments").inner_text() == "1"
    assert "(2/2) Score?" in rows.nth(1).inner_text()
    screenshot(page, "two-way-preview")

    page.get_by_role("link", name="Keywords").click()
    page.get_by_role("textbox", name="Keyword").fill("stop")
    page.get_by_role("textbox", name="Sender").fill("+15005550006")
    page.get_by_role("button", name="Add keyword").click()
    page.get_by_text("is a STOP, START or HELP word").wait_for()
    page.get_by_role("textbox", name="Keyword").fill("Pulse")
    page.get_by_role("button", name="Add keyword").click()
    page.locator("#keyword-list").get_by_text("PULSE").wait_for()
    assert SmsKeyword.objects.get().keyword == "PULSE"

    page.goto(f"{live_server.url}/projects/{project.pk}/sms/new/")
    page.get_by_label("Message").fill("Hi ${first_name}")
    page.get_by_label("Two-way (questions by text)").check()
    page.locator("#two-way-estimate").wait_for()
    assert "2 questions" in page.locator("#two-way-estimate").inner_text()
    screenshot(page, "two-way-schedule")
    page.get_by_role("button", name="Send now").click()
    distribution = Distribution.objects.get(mode="two_way")
    page.get_by_role("link", name="See the conversations").wait_for()
    until(
        lambda: distribution.messages.filter(sent_at__isnull=False).exists(),
        progress=lambda: distribution.messages.filter(sent_at__isnull=False).count(),
    )
    sms_reply_receive(
        brand=tenancy.brand_a,
        inbound=InboundSms(person.phone, "+15005550006", "1", provider_sid="SMb1"),
        provider="twilio",
    )
    page.get_by_role("link", name="See the conversations").click()
    page.locator("#session-list").get_by_role("cell", name=re.compile("^Ada")).wait_for()
    page.locator("#session-list summary").first.click()
    page.get_by_text("(2/2) Score?").wait_for()
    screenshot(page, "two-way-sessions")
