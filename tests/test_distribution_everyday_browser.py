"""Everyday distribution work in a real browser (Debian's Chromium through Playwright): copy a
distribution to another project, try a Failed one again after fixing its cause, send a test
message to oneself, and schedule from the message library.

Tasks run inline on commit (``eager_tasks``) inside the live server's thread; the outbox
provider stores the messages and simulates their delivery.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.models import Brand
from brands.roles import Role
from distributions.models import Distribution, LibraryMessage, Message, OutboxMessage
from projects.models import Project
from tests.browser import browser_user, login, screenshot
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def add(project, first, phone, email=""):
    person = PersonFactory(brand=project.brand, first_name=first, phone=phone, email=email)
    return ParticipantFactory(project=project, person=person)


def self_service_project(tenancy):
    brand = tenancy.brand_a
    brand.integration_model = Brand.IntegrationModel.SELF_SERVICE
    brand.save()
    project = tenancy.project_a
    tenancy.participant_a.delete()
    add(project, "Ada", "+14155550101", "ada@example.com")
    add(project, "Grace", "+14155550103", "grace@example.com")
    return brand, project


def test_copy_a_distribution_to_another_project(live_server, tenancy, page):
    from playwright.sync_api import expect

    brand, project = self_service_project(tenancy)
    other = ProjectFactory(brand=brand, name="Autumn survey")
    ProjectFactory(brand=tenancy.brand_b, name="Not ours")
    original = DistributionFactory(
        project=project,
        name="Spring pulse",
        message="Hi ${first_name}: ${link}",
        conditions=[{"criterion": "first_name", "operator": "is", "value": "Ada"}],
        send_at=timezone.now() + timedelta(days=3),
    )
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="copier")
    login(page, live_server, user)
    page.goto(live_server.url + reverse("distributions:detail", args=[original.pk]))
    page.get_by_role("link", name="Copy distribution").click()
    expect(page.locator("h1")).to_have_text("Copy distribution")
    expect(page.locator("#copy-help")).to_contain_text("checked like a new distribution")
    options = page.locator("#id_project option")
    expect(options).to_have_count(2)  # the brand's projects only
    page.locator("#id_project").select_option(label="Autumn survey")
    page.locator("#id_name").fill("Autumn pulse")
    screenshot(page, "copy-form")
    page.get_by_role("button", name="Schedule the copy").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    copy = Distribution.objects.get(name="Autumn pulse")
    assert (copy.project, copy.status, copy.origin, copy.origin_kind) == (
        other,
        Distribution.Status.SCHEDULED,
        original,
        "copy",
    )
    assert copy.message == original.message and copy.conditions == original.conditions
    assert copy.send_at == original.send_at.replace(second=0, microsecond=0)  # to the minute
    related = page.locator("#related")
    expect(related).to_contain_text("Spring pulse")
    expect(related).to_contain_text("the original (copy)")
    # The original lists its copy, and its audit trail says who copied it.
    page.goto(live_server.url + reverse("distributions:detail", args=[original.pk]))
    expect(page.locator("#related")).to_contain_text("Autumn pulse")
    expect(page.locator("#audit")).to_contain_text("Copied")
    expect(page.locator("#audit")).to_contain_text("copier")
    assert page.js_errors == []


def test_try_again_on_a_failed_distribution_says_what_to_fix(
    live_server, tenancy, eager_tasks, page
):
    from playwright.sync_api import expect

    brand, project = self_service_project(tenancy)
    project.stage = Project.Stage.PAUSED
    project.save()
    failed = DistributionFactory(
        project=project,
        name="Monday invite",
        message="Hi ${first_name}",
        status=Distribution.Status.FAILED,
        status_reason="Your project must be activated to send text messages: this project is "
        "Paused.",
        finished_at=timezone.now(),
    )
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="retrier")
    login(page, live_server, user)
    page.goto(live_server.url + reverse("distributions:detail", args=[failed.pk]))
    expect(page.locator("#retry-advice")).to_contain_text("activate it on the project page")
    # Not fixed yet: the try again is refused for the same reason a new one would be.
    page.get_by_role("button", name="Try again").click()
    expect(page.locator(".messages, [role=alert], .message").first).to_contain_text(
        "must be activated"
    )
    assert not Distribution.objects.filter(origin=failed).exists()

    project.stage = Project.Stage.ACTIVE
    project.save()
    page.goto(live_server.url + reverse("distributions:detail", args=[failed.pk]))
    expect(page.locator("#retry-advice")).to_contain_text("Check your configuration")
    page.get_by_role("button", name="Try again").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    retry = Distribution.objects.get(origin=failed)
    assert page.url.endswith(reverse("distributions:detail", args=[retry.pk]))
    expect(page.locator("#distribution-status")).to_have_text("Sent", timeout=30_000)
    expect(page.locator('[data-metric="sent"]')).to_have_text("2")
    expect(page.locator("#related")).to_contain_text("the original (try again)")
    assert retry.origin_kind == "retry"
    screenshot(page, "try-again")
    assert page.js_errors == []


def test_send_a_test_message_to_yourself(live_server, tenancy, eager_tasks, page):
    from playwright.sync_api import expect

    brand, project = self_service_project(tenancy)
    original = DistributionFactory(
        project=project,
        name="Friday invite",
        message="Hi ${first_name}, how was the week?",
        send_at=timezone.now() + timedelta(days=1),
    )
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="tester")
    login(page, live_server, user)
    page.goto(live_server.url + reverse("distributions:detail", args=[original.pk]))
    section = page.locator("#test-messages")
    expect(section).to_contain_text("never counted in this distribution's metrics")
    page.locator("#test-address").fill("(415) 555-0199")
    grace = project.participants.get(person__first_name="Grace")
    page.locator("#test-participant").select_option(value=str(grace.pk))
    page.get_by_role("button", name="Send test").click()
    expect(page.locator("#test-list")).to_contain_text("+14155550199")
    expect(page.locator("#test-list")).to_contain_text("Hi Grace, how was the week?")
    expect(page.locator("#test-list")).to_contain_text("Test")
    outbox = OutboxMessage.objects.get(brand=brand)
    assert (outbox.to, outbox.body) == ("+14155550199", "Hi Grace, how was the week?")
    # The original is untouched: still scheduled, nobody counted.
    original.refresh_from_db()
    assert original.status == Distribution.Status.SCHEDULED
    expect(page.locator('[data-metric="participants"]')).to_have_text("0")
    assert not Message.objects.filter(distribution=original).exists()
    # The list does not show the test; its own page says what it is.
    page.goto(live_server.url + reverse("distributions:list"))
    expect(page.locator("table.distribution-table tbody tr")).to_have_count(1)
    test = Distribution.objects.get(origin=original, origin_kind="test")
    page.goto(live_server.url + reverse("distributions:detail", args=[test.pk]))
    expect(page.locator("#test-note")).to_contain_text("Test message")
    screenshot(page, "test-message")
    assert page.js_errors == []


def test_schedule_from_the_message_library(live_server, tenancy, eager_tasks, page):
    from playwright.sync_api import expect

    brand, project = self_service_project(tenancy)
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="librarian")
    login(page, live_server, user)

    page.goto(live_server.url + reverse("distributions:library"))
    expect(page.locator("#library-help")).to_contain_text("never changes what was scheduled")
    page.locator("#id_name").fill("SMS reminder")
    page.locator("#id_type").select_option("reminder")
    page.locator("#id_message").fill("Hi ${first_name}, a last reminder: ${link}")
    page.get_by_role("button", name="Save in the library").click()
    row = page.locator("table.library-table tbody tr").first
    expect(row).to_contain_text("SMS reminder")
    expect(row).to_contain_text("1 segment · GSM-7")
    saved = LibraryMessage.objects.get(brand=brand)

    page.goto(live_server.url + reverse("distributions:create", args=[project.pk]))
    page.locator("#library-pick").select_option(label="SMS reminder (Reminder)")
    message = page.locator("#id_message")
    expect(message).to_have_value("Hi ${first_name}, a last reminder: ${link}")
    expect(page.locator("#segment-counter")).to_contain_text("1 segment")
    page.locator("#id_name").fill("From the library")
    page.locator("#submit-button").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    expect(page.locator("#distribution-status")).to_have_text("Sent", timeout=30_000)
    made = Distribution.objects.get(name="From the library")
    assert made.library_message == saved
    assert made.message == "Hi ${first_name}, a last reminder: ${link}"

    # Editing the library message changes nothing already sent.
    page.goto(live_server.url + reverse("distributions:library_edit", args=[saved.pk]))
    page.locator("#id_message").fill("Changed text")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("table.library-table")).to_contain_text("Changed text")
    made.refresh_from_db()
    assert made.message == "Hi ${first_name}, a last reminder: ${link}"
    assert all("last reminder" in body for body in made.messages.values_list("body", flat=True))
    screenshot(page, "library")
    assert page.js_errors == []
