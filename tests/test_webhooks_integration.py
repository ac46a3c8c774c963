"""Outbound webhooks through real parts: PostgreSQL (or the SQLite file), Redis, real Celery
worker processes, a real HTTP receiver on 127.0.0.1 and, for the whole loop, Chromium.

1. One ``POST /api/v1/projects/{id}/links/`` makes a push link; the browser opens and answers
   it; the receiver gets ``link.opened`` then ``response.completed``, each verified with the
   snippet of docs/webhooks.md; the invite counts under ``push``.
2. A receiver that fails four times per event, then succeeds, gets each event once, in order
   per object.
3. A receiver that hangs past the timeout: the attempt is cut, retried, nothing is lost.
"""

from __future__ import annotations

import time

from django.utils import timezone

import pytest
from playwright.sync_api import expect

from brands.roles import Role
from distributions.models import Message
from distributions.services import message_status_ingest
from optouts.services import optout_create_by_admin
from surveys.services import question_create
from tests.browser import browser_user, login, screenshot
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory
from tests.test_webhooks import ALL_EVENTS, documented_verify
from tests.webhook_receiver import Receiver, Script
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from webhooks.services import endpoint_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
WORKER_ENV = {
    "RELAY_WEBHOOKS_ALLOW_HOSTS": "127.0.0.1",
    "RELAY_WEBHOOKS_BACKOFF_BASE": "0.2",
    "RELAY_WEBHOOKS_TIMEOUT": "1",
}


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


@pytest.fixture
def hooks(settings, receiver, tenancy):
    """Brand A's endpoint on the local receiver (allowed explicitly, as the workers are)."""
    settings.RELAY_WEBHOOKS_ALLOW_HOSTS = ["127.0.0.1"]
    settings.RELAY_WEBHOOKS_BACKOFF_BASE = 0.2
    settings.RELAY_WEBHOOKS_TIMEOUT = 1.0
    return endpoint_create(brand=tenancy.brand_a, url=receiver.url, events=ALL_EVENTS)


def settled(timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not WebhookDelivery.objects.filter(state__in=("pending", "sending")).exists():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.browser
def test_one_call_a_browser_answer_and_two_signed_events(
    page, live_server, settings, tenancy, api_a, hooks, receiver, start_worker
):
    settings.PUBLIC_BASE_URL = live_server.url
    worker = start_worker(concurrency=2, extra_env=WORKER_ENV)
    project = tenancy.project_a
    question_create(project=project, kind="rating", text="How was the show?", required=True)
    verify = documented_verify()

    made = api_a.post(
        f"/api/v1/projects/{project.pk}/links/",
        {
            "contact": {"person_id": "C-1042", "email": "ana@example.com", "first_name": "Ana"},
            "transaction": {"id": "scan-8f2c1a", "data": {"venue": "Arena", "gate": 4}},
            "channel": "push",
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    link = made.json()

    page.goto(link["url"])
    page.get_by_text("9", exact=True).click()
    page.get_by_role("button", name="Submit").click()
    page.locator("h1", has_text="Thank you").wait_for()
    screenshot(page, "webhooks-answered")

    assert receiver.wait_for(lambda r: len(r.accepted()) >= 2, timeout=60), worker.output()
    opened, completed = receiver.accepted()
    assert [opened.json["type"], completed.json["type"]] == ["link.opened", "response.completed"]
    for request in (opened, completed):
        assert verify(request.headers["relay-signature"], request.body, hooks.secret)
    assert opened.json["data"]["link_id"] == link["link_id"]
    assert opened.json["data"]["channel"] == "push"
    data = completed.json["data"]
    assert data["transaction_id"] == "scan-8f2c1a" and data["person_id"] == "C-1042"
    assert data["embedded_data"]["venue"] == "Arena" and data["embedded_data"]["gate"] == 4
    assert [(a["question"], a["value"]) for a in data["answers"]] == [("How was the show?", 9)]
    summary = api_a.get(f"/api/v1/distributions/{link['distribution']}/invites/").json()
    assert summary["label"] == "push"
    assert (summary["created"], summary["opened"], summary["completed"]) == (1, 1, 1)

    # The brand admin sees both deliveries on the endpoint page and redelivers one.
    assert settled(), worker.output()
    login(page, live_server, browser_user(tenancy.brand_a, role=Role.BRAND_ADMIN))
    page.goto(f"{live_server.url}/webhooks/endpoints/{hooks.endpoint.pk}/")
    rows = page.locator("#delivery-log tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("response.completed")
    expect(rows.first).to_contain_text("Delivered")
    expect(rows.first).to_contain_text(" ms")
    screenshot(page, "webhooks-endpoint-log")
    rows.nth(1).get_by_role("button", name="Redeliver").click()
    expect(page.locator(".messages")).to_contain_text("link.opened queued again")
    assert receiver.wait_for(lambda r: len(r.accepted()) == 3, timeout=30), worker.output()
    assert receiver.accepted()[2].event_id == opened.event_id


def test_a_receiver_failing_four_times_gets_each_event_once_in_order(
    tenancy, hooks, receiver, start_worker
):
    receiver.script = Script(fail_first=4)
    worker = start_worker(concurrency=2, extra_env=WORKER_ENV)
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    first, second = (
        MessageFactory(
            distribution=distribution,
            participant=participant,
            status=Message.Status.SENDING,
            provider_id=f"SM{n}",
        )
        for n, participant in (
            (1, tenancy.participant_a),
            (2, ParticipantFactory(project=tenancy.project_a)),
        )
    )

    for provider_id, status in (("SM1", "sent"), ("SM2", "sent"), ("SM1", "delivered")):
        assert message_status_ingest(
            provider="twilio", provider_status=status, provider_id=provider_id
        )
    optout_create_by_admin(
        brand=tenancy.brand_a, channel="sms", address="+14155550199", reason="by phone"
    )

    assert settled(timeout=90), worker.output()
    events = list(WebhookEvent.objects.order_by("pk"))
    # Both rows handed over: the distribution finished too.
    assert [e.type for e in events] == [
        "recipient.status_changed",
        "recipient.status_changed",
        "distribution.finished",
        "recipient.status_changed",
        "participant.opted_out",
    ]
    accepted = receiver.accepted()
    assert sorted(r.event_id for r in accepted) == sorted(str(e.event_id) for e in events)
    assert all(receiver.seen[str(e.event_id)] == 5 for e in events)  # 4 failures + 1 success
    about_first = [
        r.json["data"]["status"]
        for r in accepted
        if r.json["type"] == "recipient.status_changed" and r.json["data"]["message_id"] == first.pk
    ]
    assert about_first == ["sent", "delivered"]
    assert set(WebhookDelivery.objects.values_list("state", "attempts")) == {("delivered", 5)}
    assert WebhookAttempt.objects.filter(status_code=500).count() == 20
    finished = next(r.json["data"] for r in accepted if r.json["type"] == "distribution.finished")
    assert finished["status"] == "sent" and finished["recipients"]["total"] == 2


def test_a_hanging_receiver_is_cut_by_the_timeout_and_nothing_is_lost(
    tenancy, hooks, receiver, start_worker
):
    receiver.script = Script(hang_first=1, hang_seconds=4)
    worker = start_worker(concurrency=2, extra_env=WORKER_ENV)
    started = timezone.now()

    for n in range(3):
        optout_create_by_admin(
            brand=tenancy.brand_a, channel="sms", address=f"+1415555020{n}", reason="by phone"
        )

    assert settled(timeout=90), worker.output()
    assert len({r.event_id for r in receiver.accepted()}) == 3
    assert all(receiver.seen[r.event_id] == 2 for r in receiver.accepted())
    timeouts = WebhookAttempt.objects.filter(error__startswith="Timed out after 1 s")
    assert timeouts.count() == 3
    assert all(a.latency_ms < 2500 for a in timeouts)  # cut at 1 s, not after the 4 s hang
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    assert (timezone.now() - started).total_seconds() < 30
