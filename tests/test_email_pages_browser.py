"""The email pages in a real browser (Debian's Chromium through Playwright): an admin writes
an email invite on the Emails tab, watches the sandboxed preview follow the subject and body
(scripts stripped), sends it now to a real SMTP server on 127.0.0.1 (aiosmtpd), reads the
seed's metrics on the distribution page (sent, failed, bounced), and after a recipient opens
the emailed link and answers, reads opened and finished.

Tasks run inline on commit (``eager_tasks``) inside the live server's thread; the engine's
SMTP provider sends through the platform mailer configured to the local server.
"""

from __future__ import annotations

import email
import email.policy
import re

from django.urls import reverse

import pytest

from brands.roles import Role
from distributions.models import Distribution, Message
from surveys.services import question_create
from tests.browser import browser_user, login, screenshot
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.smtp_server import Behaviour, SmtpServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
S = Message.Status


def add(project, first, address):
    person = PersonFactory(brand=project.brand, first_name=first, last_name="Test", email=address)
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def smtp(settings, live_server):
    behaviour = Behaviour(rcpt_codes={"gone@example.com": "550 5.1.1 No such user"})
    with SmtpServer(behaviour=behaviour) as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        settings.EMAIL_TIMEOUT = 5
        settings.DEFAULT_FROM_EMAIL = "surveys@relay.example"
        settings.RELAY_EMAIL_PLATFORM_DOMAINS = []
        settings.PUBLIC_BASE_URL = live_server.url
        yield server


def text_part(received) -> str:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    return message.get_body(preferencelist=("plain",)).get_content()


def test_admin_schedules_an_email_invite_previews_it_and_reads_the_metrics(
    live_server, tenancy, smtp, eager_tasks, page, browser
):
    from playwright.sync_api import expect

    brand = tenancy.brand_a
    brand.time_zone = "Europe/Paris"
    brand.save()
    project = tenancy.project_a
    tenancy.participant_a.delete()
    add(project, "Ada", "ada@example.com")
    add(project, "Grace", "grace@example.com")
    add(project, "Gone", "gone@example.com")  # refused at RCPT: Bounced
    question_create(project=project, kind="text", text="Anything to add?")
    user = browser_user(brand, role=Role.PROJECT_ADMIN, username="pat")

    login(page, live_server, user)
    page.goto(live_server.url + reverse("projects:detail", args=[project.pk]))
    page.get_by_role("link", name="Emails", exact=True).click()
    expect(page.locator("h2.section-title")).to_have_text("Emails")
    page.get_by_role("link", name="Schedule an email").click()
    expect(page.locator("h1")).to_have_text("Schedule an email")
    expect(page.locator("#match-inline")).to_contain_text("3 participants match")
    expect(page.locator("#match-inline")).to_contain_text("3 with an email address")
    expect(page.locator("#from-domains")).to_contain_text("@relay.example")

    # The subject gets a piped field from the chips (inserted where the cursor is).
    page.locator("#id_name").fill("Spring pulse")
    subject = page.locator("#id_subject")
    subject.fill("Hi ")
    subject.focus()
    page.locator('[data-insert="${first_name}"]').click()
    expect(subject).to_have_value("Hi ${first_name}")
    expect(page.locator("#preview-subject")).to_have_text("Hi Ada")

    # The HTML body, with a script the sanitiser removes; the preview renders it sandboxed.
    body = page.locator("#id_message")
    body.fill(
        "<h2>Hello ${first_name}</h2><p>Two minutes?</p>"
        '<p><a href="${link}">Take the survey</a></p>'
        "<script>document.title='pwned'</script>"
        '<p><a href="${opt_out_link}">Unsubscribe</a></p>'
    )
    frame = page.frame_locator("#preview-html")
    expect(frame.locator("h2")).to_have_text("Hello Ada")
    expect(frame.get_by_role("link", name="Take the survey")).to_have_attribute(
        "href", re.compile(r"/s/")
    )
    assert page.locator("#preview-html").get_attribute("sandbox") == ""
    assert "<script" not in page.locator("#preview-html").get_attribute("srcdoc")
    expect(page.locator("#preview-text")).to_contain_text("Hello Ada")
    expect(page.locator("#preview-text")).to_contain_text("Take the survey (")
    expect(page.locator("#emails-wanted")).to_have_text("3")
    assert page.title() != "pwned" and page.js_errors == []
    screenshot(page, "email-schedule-form")

    expect(page.locator("#submit-button")).to_have_text("Send now")
    page.locator("#submit-button").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    distribution = Distribution.objects.get(name="Spring pulse")
    assert distribution.channel == "email" and distribution.created_by == user

    expect(page.locator("#distribution-status")).to_have_text("Sent", timeout=30_000)
    expect(page.locator('[data-metric="participants"]')).to_have_text("3")
    expect(page.locator('[data-metric="sent"]')).to_have_text("3")
    expect(page.locator('[data-metric="failed"]')).to_have_text("0")
    expect(page.locator('[data-metric="bounced"]')).to_have_text("1")
    expect(page.locator('[data-metric="opened"]')).to_have_text("0")
    expect(page.locator('[data-metric="finished"]')).to_have_text("0")
    expect(page.locator("table.history-table thead")).to_contain_text("Email")
    received = {r.rcpt_tos[0]: r for r in smtp.messages}
    assert sorted(received) == ["ada@example.com", "grace@example.com"]
    assert distribution.messages.get(address="gone@example.com").status == S.BOUNCED
    screenshot(page, "email-distribution-page")

    # Ada opens the link from her email and answers: opened and finished count her.
    ada_text = text_part(received["ada@example.com"])
    assert ada_text.startswith("Hello Ada")
    link = re.search(r"https?://\S+/s/[0-9A-Za-z]+", ada_text).group(0)
    assert link.startswith(live_server.url)
    respondent = browser.new_context()
    survey = respondent.new_page()
    survey.goto(link)
    expect(survey.locator("h1")).to_have_text(project.name)
    survey.get_by_label("Anything to add?").fill("All good.")
    survey.get_by_role("button", name="Submit").click()
    expect(survey.locator("h1")).to_have_text("Thank you")
    respondent.close()

    page.reload()
    expect(page.locator('[data-metric="opened"]')).to_have_text("1")
    expect(page.locator('[data-metric="finished"]')).to_have_text("1")
    expect(page.locator('[data-metric="sent"]')).to_have_text("3")


def test_a_thank_you_set_to_go_on_completion(live_server, tenancy, smtp, eager_tasks, page):
    from playwright.sync_api import expect

    project = tenancy.project_a
    user = browser_user(tenancy.brand_a, role=Role.PROJECT_ADMIN, username="tia")
    login(page, live_server, user)
    page.goto(live_server.url + reverse("distributions:email_create", args=[project.pk]))
    completion = page.locator("#completion-choice")
    expect(completion).to_be_hidden()
    page.get_by_label("Thank-you message").check()
    expect(completion).to_be_visible()
    page.get_by_label("Send to each participant when they complete the survey").check()
    expect(page.locator("#when-choice")).to_be_hidden()
    expect(page.locator("#submit-button")).to_have_text("Start sending on completion")
    expect(page.locator("#emails-wanted")).to_have_text("—")
    page.locator("#id_subject").fill("Thank you, ${first_name}")
    page.locator("#id_message").fill(
        '<p>Thank you!</p><p><a href="${opt_out_link}">Unsubscribe</a></p>'
    )
    expect(page.locator("#preview-subject")).to_have_text(re.compile(r"^Thank you, "))
    page.locator("#submit-button").click()
    page.wait_for_url(re.compile(r"/distributions/\d+/$"))
    expect(page.locator("#live")).to_contain_text("To each participant when they complete")
    distribution = Distribution.objects.get()
    assert (distribution.kind, distribution.trigger) == ("thank_you", "completion")
    assert distribution.status == Distribution.Status.IN_PROGRESS
    assert page.js_errors == []
