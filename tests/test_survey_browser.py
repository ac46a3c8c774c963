"""The loop end to end through real parts: an invite sent by the Twilio provider to the
Twilio-compatible fake server, the personal link read from the text the fake received, opened
and answered in Debian's Chromium on a phone-sized screen, the reminder sent to exactly the
non-respondents, the history CSV showing Opened and Respondent; then the anonymous link's QR
target answered in the browser and the admin's Responses tab drawing its live chart.

Tasks run inline (``eager_tasks``); the fake posts signed delivery callbacks to the live server.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.error
import urllib.request

from django.urls import reverse

import pytest

from brands.models import Brand
from brands.roles import Role
from distributions.models import Distribution, Message, ProviderAccount
from projects.models import Response
from surveys.services import question_create
from tests.browser import browser_user, login, screenshot
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.fake_twilio import FakeTwilio

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
S = Message.Status
SENDER = "+15005550006"
PHONE = {"width": 390, "height": 844}


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def fake():
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def loop(tenancy, fake, settings, live_server):
    """Brand A sends through its own Twilio account (the fake); three participants; a survey."""
    settings.TWILIO_API_BASE_URL = fake.base_url
    settings.PUBLIC_BASE_URL = live_server.url
    brand = tenancy.brand_a
    brand.integration_model = Brand.IntegrationModel.SELF_SERVICE
    brand.save()
    ProviderAccount.objects.create(
        brand=brand,
        provider="twilio",
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        default_sender=SENDER,
        messages_per_second=1000,
    )
    project = tenancy.project_a
    tenancy.participant_a.delete()
    people = {}
    for first, phone in (("Ada", "+14155550101"), ("Bob", "+14155550102"), ("Cy", "+14155550103")):
        person = PersonFactory(brand=brand, first_name=first, last_name="Test", phone=phone)
        people[first] = ParticipantFactory(project=project, person=person)
    questions = {
        "score": question_create(
            project=project,
            kind="rating",
            text="How likely are you to recommend us?",
            required=True,
        ),
        "team": question_create(
            project=project, kind="single", text="Your team", choices=["Sales", "Support"]
        ),
        "why": question_create(project=project, kind="text", text="Why?"),
    }
    return project, people, questions


def link_in(fake, phone: str) -> str:
    bodies = [m["body"] for m in fake.messages_to(phone)]
    assert bodies, f"nothing was sent to {phone}"
    return re.search(r"https?://\S+/s/[0-9A-Za-z]+", bodies[-1]).group(0)


def post_json(live_server, key, path: str, payload: dict) -> dict:
    """Call the API over HTTP, as a client would. (The Twilio provider runs its own event
    loop, which cannot start in this thread where Playwright's loop is running.)"""
    request = urllib.request.Request(
        live_server.url + path,
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {key.plain_key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code}: {exc.read()[:500]!r}") from exc


def history(api, distribution_id) -> dict[str, dict]:
    response = api.get(reverse("api:distribution-history-csv", args=[distribution_id]))
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return {row["First name"]: row for row in csv.DictReader(io.StringIO(text))}


def test_invite_answer_remind_and_history(
    loop, fake, key_a, api_a, browser, eager_tasks, live_server
):
    from playwright.sync_api import expect

    project, people, questions = loop

    # 1. The invite goes out through the Twilio provider to the fake server.
    created = post_json(
        live_server,
        key_a,
        reverse("api:distribution-list"),
        {"project": project.pk, "message": "Hi ${first_name}, 1 minute? ${link}"},
    )
    invite = Distribution.objects.get(pk=created["id"])
    assert wait_for(lambda: invite.messages.filter(status=S.DELIVERED).count() == 3)
    url = link_in(fake, "+14155550101")
    assert len(url.rsplit("/", 1)[1]) == 10  # short: it costs SMS segments

    # 2. Ada opens her link on a phone: Opened is recorded on her row.
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    phone = context.new_page()
    errors: list[str] = []
    phone.on("pageerror", lambda exc: errors.append(str(exc)))
    requests: list[str] = []
    phone.on("request", lambda request: requests.append(request.url))
    phone.goto(url)
    expect(phone.locator("h1")).to_have_text(project.name)
    ada_row = invite.messages.get(participant=people["Ada"])
    assert wait_for(lambda: Message.objects.get(pk=ada_row.pk).status == S.OPENED)
    assert all(r.startswith(live_server.url) for r in requests)  # no third-party asset

    # Submitting without the required answer: the error summary takes the focus.
    phone.get_by_role("button", name="Submit").click()
    expect(phone.locator("#error-summary")).to_contain_text("Please check 1 answer")
    assert phone.evaluate("document.activeElement.id") == "error-summary"
    screenshot(phone, "survey-error")

    # Keyboard only for the rating: Tab into the group, arrows to 9.
    score = questions["score"]
    phone.locator(f"#{score.field_name}-0").focus()
    for _ in range(9):
        phone.keyboard.press("ArrowRight")
    expect(phone.locator(f"input[name={score.field_name}]:checked")).to_have_value("9")
    phone.get_by_label("Support").check()
    phone.get_by_label("Why?").fill("Quick and kind.")
    phone.get_by_role("button", name="Submit").click()
    expect(phone.locator("h1")).to_have_text("Thank you")
    screenshot(phone, "survey-thanks")
    phone.reload()
    expect(phone.locator("[role=status]")).to_contain_text("already recorded")
    assert errors == []
    context.close()

    response = Response.objects.get()
    assert response.participant == people["Ada"] and response.channel == "sms"
    assert response.answers == {
        str(score.pk): 9,
        str(questions["team"].pk): "Support",
        str(questions["why"].pk): "Quick and kind.",
    }

    # 3. A reminder of the invite reaches exactly those who have not responded.
    reminded = post_json(
        live_server,
        key_a,
        reverse("api:reminder-list", args=[project.pk]),
        {"invite": invite.pk, "message": "Reminder ${first_name}: ${link}"},
    )
    reminder = Distribution.objects.get(pk=reminded["id"])
    assert wait_for(lambda: reminder.messages.filter(status=S.DELIVERED).count() == 2)
    assert fake.sent_to("+14155550101") == 1
    assert fake.sent_to("+14155550102") == 2 and fake.sent_to("+14155550103") == 2

    # 4. The history CSV shows Opened and Respondent per recipient.
    rows = history(api_a, invite.pk)
    assert (rows["Ada"]["Status"], rows["Ada"]["Respondent"]) == ("Opened", "Yes")
    assert (rows["Bob"]["Status"], rows["Bob"]["Respondent"]) == ("Delivered", "No")
    assert rows["Cy"]["Respondent"] == "No"
    assert set(history(api_a, reminder.pk)) == {"Bob", "Cy"}


def test_anonymous_qr_link_and_the_live_summary(loop, page, live_server, tenancy):
    from playwright.sync_api import expect

    project, _, questions = loop
    page.goto(f"{project.anonymous_url}?src=qr&store=Lyon")
    page.get_by_text("7", exact=True).click()  # the scale's labels are the tap targets
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("h1")).to_have_text("Thank you")
    response = Response.objects.get()
    assert response.channel == "qr" and response.participant is None
    assert response.embedded_data == {"store": "Lyon"} and response.untrusted_keys == ["store"]
    assert response.answers == {str(questions["score"].pk): 7}

    admin = browser_user(tenancy.brand_a, role=Role.PROJECT_ADMIN, username="pia")
    login(page, live_server, admin)
    page.goto(live_server.url + reverse("projects:detail", args=[project.pk]))
    page.get_by_role("link", name="Links & QR code").click()
    qr = page.get_by_alt_text("QR code of the anonymous link")
    expect(qr).to_be_visible()
    page.wait_for_function(  # the SVG loads after the page: wait for it, then it has a size
        "(img => img.complete && img.naturalWidth > 0)(document.querySelector('img[alt^=QR]'))"
    )
    page.get_by_role("link", name="Responses").click()
    expect(page.locator("[data-metric=total]")).to_have_text("1")
    page.wait_for_function("window.relayResponsesChart !== undefined")  # scripts end the page
    assert page.evaluate("window.relayResponsesChart.data.datasets[0].label") == "QR code"
    screenshot(page, "survey-summary")
    assert page.js_errors == []
