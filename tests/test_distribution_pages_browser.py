"""The SMS pages in a real browser (Debian's Chromium through Playwright): schedule a text
message with the live segment counter and participant preview, send it now, watch the
distribution page reach Sent with its metrics, download the history.

Tasks run inline on commit (``eager_tasks``) inside the live server's thread; the outbox
provider stores the messages and simulates their delivery.
"""

from __future__ import annotations

import re

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.models import Brand
from brands.roles import Role
from distributions.models import Distribution, Message, OutboxMessage
from distributions.selectors import HISTORY_HEADER
from distributions.services import message_status_ingest
from tests.browser import browser_user, login, screenshot
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def add(project, first, last, phone, team):
    person = PersonFactory(
        brand=project.brand, first_name=first, last_name=last, phone=phone, metadata={"Team": team}
    )
    return ParticipantFactory(project=project, person=person)


def self_service_project(tenancy, *, with_alan: bool = True):
    """Brand A, self-service (the provider bills the brand, so every message is covered); its
    project's participants are Ada and Grace of Sales (and Alan of R&D)."""
    brand = tenancy.brand_a
    brand.integration_model = Brand.IntegrationModel.SELF_SERVICE
    brand.save()
    project = tenancy.project_a
    tenancy.participant_a.delete()
    add(project, "Ada", "Lovelace", "+14155550101", "Sales")
    add(project, "Grace", "Hopper", "+14155550103", "Sales")
    if with_alan:
        add(project, "Alan", "Turing", "+447911123456", "R&D")
    return brand, project


def test_schedule_send_now_watch_it_finish_and_download_the_history(
    live_server, tenancy, eager_tasks, page
):
    from playwright.sync_api import expect

    brand, project = self_service_project(tenancy)
    brand.time_zone = "Europe/Paris"
    brand.save()
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="pat")

    login(page, live_server, user)
    page.goto(live_server.url + reverse("projects:detail", args=[project.pk]))
    page.get_by_role("link", name="Text messages (SMS)").click()
    expect(page.locator("h2.section-title")).to_have_text("Text messages (SMS)")
    page.get_by_role("link", name="Schedule a text message").click()
    expect(page.locator("h1")).to_have_text("Schedule a text message")

    counter = page.locator("#segment-counter")
    # Empty: one segment, as Twilio's calculator counts it (scheduling still refuses it).
    expect(counter).to_contain_text("1 segment")
    expect(counter).to_contain_text("160 of 160 characters left in this segment")
    message = page.locator("#id_message")
    message.press_sequentially("Hi ${first_name}, how was your week? ", delay=5)
    expect(counter).to_contain_text("1 segment")
    expect(counter).to_contain_text("GSM-7")
    expect(counter).to_contain_text("121 of 160 characters left in this segment")

    # A curly apostrophe forces UCS-2: the page names it and offers to replace it.
    message.press_sequentially("It’s quick: ", delay=5)
    expect(counter).to_contain_text("Unicode (UCS-2)")
    expect(page.locator("#non-gsm-text kbd.char")).to_have_text(["\u2019"])
    page.get_by_role("button", name="Replace look-alike characters").click()
    expect(counter).to_contain_text("GSM-7")
    expect(message).to_have_value("Hi ${first_name}, how was your week? It's quick: ")
    expect(page.locator("#non-gsm")).to_be_hidden()

    # Piped field chips insert at the cursor; the link is counted at its real length.
    page.locator('[data-insert="${link}"]').click()
    expect(message).to_have_value("Hi ${first_name}, how was your week? It's quick: ${link}")
    expect(counter).to_contain_text("Links are counted at their real length.")

    # Everyone, then only the Sales team: the preview follows.
    expect(page.locator("#match-inline")).to_contain_text("3 participants match")
    page.get_by_label("Only participants who meet conditions").check()
    row = page.locator("[data-condition-row]").first
    row.locator("[data-criterion]").select_option("metadata")
    row.locator("[data-field]").fill("Team")
    row.locator("[data-value]").fill("Sales")
    expect(page.locator("#match-inline")).to_contain_text("2 participants match")
    expect(page.locator("#match-count")).to_have_text("2")

    expect(page.locator("#submit-button")).to_have_text("Send now")
    assert page.js_errors == []
    page.locator("#id_name").fill("Weekly pulse")
    screenshot(page, "schedule-form")

    page.locator("#submit-button").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    distribution = Distribution.objects.get(name="Weekly pulse")
    assert page.url.endswith(reverse("distributions:detail", args=[distribution.pk]))

    # The page polls while the run is in progress and reloads once it ends.
    expect(page.locator("#distribution-status")).to_have_text("Sent", timeout=30_000)
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", re.compile("every"))
    expect(page.locator('[data-metric="participants"]')).to_have_text("2")
    expect(page.locator('[data-metric="sent"]')).to_have_text("2")
    expect(page.locator('[data-metric="delivered"]')).to_have_text("2")
    expect(page.locator('[data-metric="failed"]')).to_have_text("0")
    history = page.locator("table.history-table tbody tr")
    expect(history).to_have_count(2)
    expect(history.first).to_contain_text("Delivered")
    assert distribution.messages.filter(status=Message.Status.DELIVERED).count() == 2
    assert OutboxMessage.objects.filter(brand=brand).count() == 2
    screenshot(page, "distribution-page")

    page.get_by_text("Download history", exact=True).first.click()
    page.locator("#id_delimiter").select_option("comma")
    page.locator("#id_enclosure").select_option("none")
    with page.expect_download() as download_info:
        page.locator("#download-form button[type=submit]").click()
    download = download_info.value
    assert download.suggested_filename == f"distribution-{distribution.pk}-history.csv"
    content = open(download.path(), encoding="utf-8-sig").read()  # noqa: PTH123, SIM115
    lines = content.splitlines()
    assert (
        lines[0]
        == "PersonID,First name,Last name,Phone number,User name,Respondent,Status,Timestamp"
    )
    assert lines[0].split(",") == HISTORY_HEADER
    assert len(lines) == 3
    assert all(",No,Delivered," in line for line in lines[1:])

    # A run still in progress: the page polls every 2 s and shows Sent once the last
    # delivery receipt arrives (here through the same ingest path as a provider callback).
    running = DistributionFactory(
        project=project,
        name="Running",
        status=Distribution.Status.IN_PROGRESS,
        started_at=timezone.now(),
    )
    MessageFactory(distribution=running, status=Message.Status.DELIVERED)
    last = MessageFactory(distribution=running, status=Message.Status.SENDING)
    page.goto(live_server.url + reverse("distributions:detail", args=[running.pk]))
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 2s")
    expect(page.locator("#send-progress")).to_have_attribute("value", "50")
    expect(page.get_by_role("button", name="Stop sending")).to_be_visible()
    assert message_status_ingest(provider="twilio", provider_status="delivered", message_id=last.pk)
    expect(page.locator("#distribution-status")).to_have_text("Sent", timeout=15_000)
    expect(page.locator('[data-metric="delivered"]')).to_have_text("2")
    expect(page.locator("#send-progress")).to_have_count(0)
    expect(page.get_by_role("button", name="Stop sending")).to_have_count(0)
    assert page.js_errors == []


def test_the_counter_counts_what_is_stored_sent_and_billed(live_server, tenancy, eager_tasks, page):
    """Four typed lines of 160 characters: one segment on the page, and one segment in the
    stored text and in every recipient row (the form submits CR LF; the server keeps LF)."""
    from playwright.sync_api import expect

    brand, project = self_service_project(tenancy, with_alan=False)
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="lines")
    login(page, live_server, user)
    page.goto(live_server.url + reverse("distributions:create", args=[project.pk]))

    lines = ["a" * 40, "b" * 40, "c" * 40, "d" * 37]
    message = page.locator("#id_message")
    for index, line in enumerate(lines):
        if index:
            message.press("Enter")
        message.press_sequentially(line)
    counter = page.locator("#segment-counter")
    expect(counter).to_contain_text("0 of 160 characters left in this segment")
    shown = int(counter.get_attribute("data-segments"))
    assert shown == 1

    page.locator("#id_name").fill("Four lines")
    page.locator("#submit-button").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    expect(page.locator("#distribution-status")).to_have_text("Sent", timeout=30_000)
    distribution = Distribution.objects.get(name="Four lines")
    assert distribution.message == "\n".join(lines)
    rows = distribution.messages.all()
    assert [(row.body, row.segments) for row in rows] == [(distribution.message, shown)] * 2
    assert page.js_errors == []


def test_a_page_opened_early_starts_polling_by_itself(live_server, tenancy, page):
    """Opened ten minutes before its send time, the page schedules from that send time the
    moment to ask again (a minute before sending) and switches to polling then, without a
    reload. The browser's clock is Playwright's (fast-forwarded instead of waited for); the
    server's is moved by bringing the send time closer, as nine minutes would."""
    from playwright.sync_api import expect

    distribution = DistributionFactory(
        project=tenancy.project_a, send_at=timezone.now() + timezone.timedelta(minutes=10)
    )
    user = browser_user(tenancy.brand_a, role=Role.VIEWER, username="watcher")
    login(page, live_server, user)
    page.clock.install()
    page.goto(live_server.url + reverse("distributions:detail", args=[distribution.pk]))
    live = page.locator("#live")
    expect(live).to_have_attribute("hx-trigger", re.compile(r"^load delay:\d+s$"))
    wake = int(live.get_attribute("data-wake-in"))
    assert 480 < wake <= 540  # ten minutes away, polling from one minute before
    expect(page.get_by_text("Waiting for a worker to start sending")).to_be_hidden()

    Distribution.objects.filter(pk=distribution.pk).update(
        send_at=timezone.now() + timezone.timedelta(seconds=50)
    )
    page.clock.fast_forward(wake * 1000)
    expect(live).to_have_attribute("hx-trigger", "every 2s")
    expect(page.get_by_text("Waiting for a worker to start sending")).to_be_visible()
    assert page.js_errors == []
