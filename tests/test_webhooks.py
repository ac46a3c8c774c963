"""Outbound webhooks on SQLite: refusals (request forgery), tenancy and roles, the secret,
signatures checked with the documented snippet, retries, ordering, disabling, query budgets.

Deliveries go to a real HTTP server on 127.0.0.1 (``tests/webhook_receiver.py``); the worker's
step is called directly (``delivery_attempt``), so time can be moved by editing the rows.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.core import mail
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

import pytest

from brands.roles import Role
from distributions.events import recipient_statuses_raised
from distributions.finishing import open_messages_close
from distributions.models import Message
from distributions.services import (
    distribution_create,
    message_status_ingest,
)
from optouts.services import optout_create_by_admin
from surveys.services import question_create, response_create
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.webhook_receiver import Receiver, Script
from webhooks import security, signing, transport
from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import (
    deliveries_attempt,
    deliveries_sweep,
    delivery_attempt,
    endpoint_create,
)

pytestmark = pytest.mark.django_db
ALL_EVENTS = [
    "link.opened",
    "response.completed",
    "recipient.status_changed",
    "distribution.finished",
    "participant.opted_out",
]
DOCS = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


def documented_verify():
    """The verification snippet of docs/webhooks.md, as a reader would paste it."""
    text = DOCS.read_text()
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify_relay" in b
    )
    namespace: dict = {}
    exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["verify_relay_signature"]


@pytest.fixture
def local(settings):
    settings.RELAY_WEBHOOKS_ALLOW_HOSTS = ["127.0.0.1"]
    settings.RELAY_WEBHOOKS_TIMEOUT = 1.0
    settings.RELAY_WEBHOOKS_BACKOFF_BASE = 10
    return settings


@pytest.fixture
def receiver():
    with Receiver() as server:
        yield server


def endpoint_for(brand, url, events=None, **extra):
    return endpoint_create(brand=brand, url=url, events=events or ALL_EVENTS, **extra)


def opt_out(brand, address="+14155550100"):
    return optout_create_by_admin(
        brand=brand, channel="sms", address=address, reason="asked by phone", actor=None
    )


def run_due(ids=None) -> list[dict]:
    """Attempt every pending delivery (oldest first), as workers would."""
    queryset = WebhookDelivery.objects.filter(state="pending").order_by("pk")
    if ids is not None:
        queryset = queryset.filter(pk__in=ids)
    return [delivery_attempt(delivery_id=pk) for pk in queryset.values_list("pk", flat=True)]


# --- request forgery ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://relay.example.com/hook", "own host"),
        ("http://localhost:8000/hook", "own host"),
        ("ftp://hooks.example.com/", "http:// or https://"),
        ("https://user:pw@hooks.example.com/", "no user name"),
    ],
)
def test_registration_refuses_urls_inside_our_network(
    tenancy, api_client_for, settings, url, reason
):
    settings.PUBLIC_BASE_URL = "https://relay.example.com"
    api = api_client_for(user=tenancy.admin_a)

    answer = api.post("/api/v1/webhooks/", {"url": url, "events": ALL_EVENTS}, format="json")

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert reason in error["fields"]["url"] and error["message"].startswith("url:")
    assert not WebhookEndpoint.objects.exists()


def test_a_name_resolving_to_a_private_address_is_refused(tenancy, api_client_for, monkeypatch):
    real = socket.getaddrinfo

    def fake_dns(host, *args, **kwargs):  # the DNS answer is the process edge
        if host == "hooks.internal.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 443))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    api = api_client_for(user=tenancy.admin_a)

    answer = api.post(
        "/api/v1/webhooks/",
        {"url": "https://hooks.internal.example/x", "events": ["link.opened"]},
        format="json",
    )

    assert answer.status_code == 400
    assert "resolves to 10.0.0.5" in answer.json()["error"]["fields"]["url"]


def test_the_page_shows_the_refusal_as_a_field_error(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)

    page = client.post(
        "/webhooks/endpoints/", {"url": "http://169.254.169.254/", "events": ["link.opened"]}
    )

    assert page.status_code == 400
    assert (
        "link-local address" in page.content.decode() and 'id="error-url"' in page.content.decode()
    )
    assert not WebhookEndpoint.objects.exists()


def test_local_receivers_need_the_explicit_allow_list(tenancy, settings, receiver):
    assert settings.RELAY_WEBHOOKS_ALLOW_HOSTS == []  # off by default
    with pytest.raises(Exception, match="loopback"):
        endpoint_for(tenancy.brand_a, receiver.url)
    settings.RELAY_WEBHOOKS_ALLOW_HOSTS = ["127.0.0.1"]
    assert endpoint_for(tenancy.brand_a, receiver.url).endpoint.pk


def test_delivery_time_check_refuses_what_is_no_longer_allowed(tenancy, local, receiver):
    endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    local.RELAY_WEBHOOKS_ALLOW_HOSTS = []

    opt_out(tenancy.brand_a)
    outcome = run_due()

    delivery = WebhookDelivery.objects.get()
    assert outcome[0]["outcome"] == "retry"
    assert "loopback" in delivery.error and delivery.attempts == 1
    assert receiver.requests == []
    # The socket-level guard alone (a name that passed the check, then resolved elsewhere):
    with pytest.raises(security.UnsafeURL, match="loopback"):
        transport.pool_manager().request("POST", receiver.url, body=b"{}", retries=False)
    assert receiver.requests == []


# --- the secret ----------------------------------------------------------------------------------
def test_the_secret_is_shown_once_and_encrypted_at_rest(tenancy, api_client_for, local, receiver):
    api = api_client_for(user=tenancy.admin_a)

    made = api.post("/api/v1/webhooks/", {"url": receiver.url, "events": ALL_EVENTS}, format="json")

    assert made.status_code == 201
    secret = made.json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    again = api.get(f"/api/v1/webhooks/{made.json()['id']}/").json()
    assert "secret" not in again and again["secret_hint"].endswith(secret[-4:])
    assert secret not in str(api.get("/api/v1/webhooks/").json())
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM webhooks_webhookendpoint")
        stored = cursor.fetchone()[0]
    assert secret not in stored and stored.startswith("gAAAA")  # a Fernet token
    rotated = api.post(f"/api/v1/webhooks/{made.json()['id']}/rotate-secret/").json()["secret"]
    assert rotated != secret and WebhookEndpoint.objects.get().secret == rotated


def test_the_page_shows_the_secret_once_then_only_its_end(
    tenancy, page_client_for, local, receiver
):
    client = page_client_for(tenancy.admin_a)

    made = client.post(
        "/webhooks/endpoints/",
        {
            "url": receiver.url,
            "events": ["link.opened", "response.completed"],
            "description": "app",
        },
    )

    endpoint = WebhookEndpoint.objects.get()
    assert made.status_code == 200 and endpoint.secret in made.content.decode()
    assert endpoint.events == ["link.opened", "response.completed"]
    listing = client.get("/webhooks/endpoints/").content.decode()
    detail = client.get(f"/webhooks/endpoints/{endpoint.pk}/").content.decode()
    for page in (listing, detail):
        assert endpoint.secret not in page and endpoint.secret[-4:] in page
    rotated = client.post(f"/webhooks/endpoints/{endpoint.pk}/", {"action": "rotate"})
    endpoint.refresh_from_db()
    assert endpoint.secret in rotated.content.decode()
    assert endpoint.secret not in client.get(f"/webhooks/endpoints/{endpoint.pk}/").content.decode()


# --- tenancy and roles ---------------------------------------------------------------------------
def test_other_brands_endpoints_and_deliveries_are_404(tenancy, api_client_for, local, receiver):
    theirs = endpoint_for(tenancy.brand_b, receiver.url).endpoint
    with transaction.atomic():
        opt_out(tenancy.brand_b)
    delivery = WebhookDelivery.objects.get(endpoint=theirs)
    mine = endpoint_for(tenancy.brand_a, receiver.url).endpoint
    api = api_client_for(user=tenancy.admin_a)

    assert [e["id"] for e in api.get("/api/v1/webhooks/").json()["results"]] == [mine.pk]
    assert api.get(f"/api/v1/webhooks/{theirs.pk}/").status_code == 404
    assert api.get(f"/api/v1/webhooks/{theirs.pk}/deliveries/").status_code == 404
    assert api.patch(f"/api/v1/webhooks/{theirs.pk}/", {"enabled": False}).status_code == 404
    assert api.delete(f"/api/v1/webhooks/{theirs.pk}/").status_code == 404
    redeliver = f"/api/v1/webhooks/{mine.pk}/deliveries/{delivery.pk}/redeliver/"
    assert api.post(redeliver).status_code == 404  # their delivery through my endpoint
    client = Client()
    client.force_login(tenancy.admin_a)
    assert client.get(f"/webhooks/endpoints/{theirs.pk}/").status_code == 404
    assert client.post(f"/webhooks/endpoints/{theirs.pk}/", {"action": "delete"}).status_code == 404
    assert (
        theirs.url not in client.get("/webhooks/endpoints/").content.decode().replace(mine.url, "")
        or theirs.url == mine.url
    )
    assert WebhookEndpoint.objects.filter(pk=theirs.pk, is_enabled=True).exists()


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [(Role.VIEWER, 200, 403), (Role.PROJECT_ADMIN, 200, 403), (Role.BRAND_ADMIN, 200, 201)],
)
def test_members_read_and_brand_admins_manage(
    tenancy, api_client_for, local, receiver, role, read, write
):
    api = api_client_for(user=tenancy.user_for(role))
    body = {"url": receiver.url, "events": ["link.opened"]}

    assert api.get("/api/v1/webhooks/").status_code == read
    assert api.post("/api/v1/webhooks/", body, format="json").status_code == write
    client = Client()
    client.force_login(tenancy.user_for(role))
    page = client.get("/webhooks/endpoints/")
    assert page.status_code == 200
    assert ('id="endpoint-form"' in page.content.decode()) == (role == Role.BRAND_ADMIN)
    posted = client.post("/webhooks/endpoints/", body)
    assert posted.status_code == (200 if role == Role.BRAND_ADMIN else 403)


# --- signed deliveries ---------------------------------------------------------------------------
def test_a_delivery_is_signed_and_verifies_with_the_documented_snippet(tenancy, local, receiver):
    issued = endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    verify = documented_verify()

    optout = opt_out(tenancy.brand_a)
    assert run_due()[0]["outcome"] == "delivered"

    (request,) = receiver.requests
    assert verify(request.headers["relay-signature"], request.body, issued.secret)
    assert not verify(request.headers["relay-signature"], request.body + b" ", issued.secret)
    assert not verify(request.headers["relay-signature"], request.body, "whsec_other")
    event = WebhookEvent.objects.get()
    assert request.headers["relay-event-id"] == str(event.event_id)
    assert request.headers["relay-event-type"] == "participant.opted_out"
    assert request.json["type"] == "participant.opted_out"
    assert request.json["data"]["opt_out_id"] == optout.pk
    assert request.json["data"]["address"] == "+14155550100"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.state, delivery.status_code, delivery.attempts) == ("delivered", 200, 1)
    assert delivery.latency_ms is not None and delivery.response_excerpt == '{"ok": true}'


def test_a_rotation_with_grace_signs_with_both_secrets_until_it_ends(
    tenancy, local, receiver, api_client_for
):
    issued = endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    verify = documented_verify()
    api = api_client_for(user=tenancy.admin_a)
    url = f"/api/v1/webhooks/{issued.endpoint.pk}/rotate-secret/"

    rotated = api.post(url, {"grace_hours": 24}, format="json")

    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != issued.secret and rotated.json()["previous_secret_until"]
    assert api.get(f"/api/v1/webhooks/{issued.endpoint.pk}/").json()["previous_secret_until"]
    opt_out(tenancy.brand_a)
    run_due()
    header = receiver.requests[-1].headers["relay-signature"]
    body = receiver.requests[-1].body
    assert header.count("v1=") == 2
    assert verify(header, body, new) and verify(header, body, issued.secret)
    # A receiver that reads one v1 (dict of the fields: the last) still verifies the old one.
    assert signing.signature_valid(issued.secret, header, body)

    WebhookEndpoint.objects.filter(pk=issued.endpoint.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    opt_out(tenancy.brand_a, "+14155550101")
    run_due()
    header = receiver.requests[-1].headers["relay-signature"]
    body = receiver.requests[-1].body
    assert header.count("v1=") == 1
    assert verify(header, body, new) and not verify(header, body, issued.secret)
    assert api.post(url, {"grace_hours": 169}, format="json").status_code == 400
    assert api_client_for(user=tenancy.viewer_a).post(url).status_code == 403


def test_the_endpoint_page_rotates_with_a_grace_period(tenancy, local, receiver, page_client_for):
    issued = endpoint_for(tenancy.brand_a, receiver.url)
    client = page_client_for(tenancy.admin_a)

    page = client.post(
        f"/webhooks/endpoints/{issued.endpoint.pk}/", {"action": "rotate", "grace_hours": "24"}
    )

    assert page.status_code == 200 and page.context["new_secret"]
    assert (
        b"previous-secret-state" in client.get(f"/webhooks/endpoints/{issued.endpoint.pk}/").content
    )
    endpoint = issued.endpoint
    endpoint.refresh_from_db()
    assert endpoint.previous_secret and len(endpoint.signing_secrets()) == 2


def test_an_event_raised_in_a_rolled_back_transaction_sends_nothing(
    tenancy, local, receiver, django_capture_on_commit_callbacks
):
    endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        opt_out(tenancy.brand_a)
        raise RuntimeError("the caller fails after the opt-out")

    assert callbacks == [] and not WebhookDelivery.objects.exists()


def test_events_wait_for_commit(tenancy, local, receiver, django_capture_on_commit_callbacks):
    endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])

    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        opt_out(tenancy.brand_a)
        assert connection.run_on_commit  # queued for after the commit, not sent yet
        assert receiver.requests == []
    assert len(callbacks) == 1


# --- events raised by the services ---------------------------------------------------------------
def test_status_changes_link_opens_and_finishes_raise_their_events(tenancy, local, receiver):
    endpoint_for(tenancy.brand_a, receiver.url)
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    message = MessageFactory(
        distribution=distribution,
        participant=tenancy.participant_a,
        person=tenancy.participant_a.person,
        status=Message.Status.SENT,
        provider_id="SM1",
    )

    assert message_status_ingest(provider="twilio", provider_status="delivered", provider_id="SM1")
    assert not message_status_ingest(
        provider="twilio", provider_status="sent", provider_id="SM1"
    )  # no step back
    run_due()

    events = [(r.json["type"], r.json["data"]) for r in receiver.accepted()]
    assert [(t, d["status"]) for t, d in events] == [("recipient.status_changed", "delivered")]
    data = events[0][1]
    assert data["message_id"] == message.pk and data["distribution_id"] == distribution.pk
    assert data["person_id"] == tenancy.participant_a.person.person_id


def test_an_api_response_raises_response_completed_with_its_answers(tenancy, local, receiver):
    endpoint_for(tenancy.brand_a, receiver.url, events=["response.completed"])
    project = tenancy.project_a
    question = question_create(project=project, kind="rating", text="Score?", required=True)

    response = response_create(
        project=project,
        answers={str(question.pk): 8},
        participant=tenancy.participant_a,
        embedded_data={"store": "Lyon"},
    )
    run_due()

    (request,) = receiver.accepted()
    data = request.json["data"]
    assert data["response_id"] == response.pk and data["channel"] == "api"
    assert data["link_id"] is None and data["transaction_id"] is None
    assert data["answers"] == [
        {"question_id": question.pk, "question": "Score?", "kind": "rating", "value": 8}
    ]
    assert data["embedded_data"] == {"store": "Lyon"}
    assert data["person_id"] == tenancy.participant_a.person.person_id


def test_closing_pending_rows_raises_their_status(tenancy, local, receiver):
    endpoint_for(tenancy.brand_a, receiver.url, events=["recipient.status_changed"])
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    rows = MessageFactory.create_batch(3, distribution=distribution)

    open_messages_close(distribution, status=Message.Status.FAILED, reason="Not sent: test")
    run_due()

    got = sorted(
        (r.json["data"]["message_id"], r.json["data"]["status"]) for r in receiver.accepted()
    )
    assert got == [(row.pk, "failed") for row in rows]


def test_the_sweep_releases_dead_leases_and_queues_overdue_heads(
    tenancy, local, receiver, django_capture_on_commit_callbacks
):
    endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    for n in range(3):
        opt_out(tenancy.brand_a, address=f"+1415555040{n}")
    stuck, overdue, fresh = WebhookDelivery.objects.order_by("pk")
    long_ago = timezone.now() - timedelta(hours=1)
    WebhookDelivery.objects.filter(pk=stuck.pk).update(
        state="sending", lease="dead", leased_at=long_ago
    )
    WebhookDelivery.objects.filter(pk=overdue.pk).update(next_attempt_at=long_ago)

    with django_capture_on_commit_callbacks() as callbacks:
        stats = deliveries_sweep()

    assert stats == {"released": 1, "queued": 1}  # the released one goes again at once
    assert len(callbacks) == 2  # fresh ones have their own task
    stuck.refresh_from_db()
    assert (stuck.state, stuck.lease) == ("pending", "")
    fresh.refresh_from_db()
    assert fresh.state == "pending"


def test_a_real_send_raises_sent_delivered_and_finished_in_order(
    tenancy, local, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    endpoint_for(
        tenancy.brand_a, receiver.url, events=["recipient.status_changed", "distribution.finished"]
    )
    project = tenancy.project_a
    tenancy.participant_a.delete()
    for first, phone in (("Ada", "+14155550101"), ("Alan", "+447911123456")):
        person = PersonFactory(brand=tenancy.brand_a, first_name=first, phone=phone)
        ParticipantFactory(project=project, person=person)

    with django_capture_on_commit_callbacks(execute=True):
        distribution = distribution_create(project=project, message="Hi ${first_name}")

    distribution.refresh_from_db()
    assert distribution.status == "sent"
    got = [(r.json["type"], r.json["data"]) for r in receiver.accepted()]
    by_row: dict[int, list[str]] = {}
    for kind, data in got:
        if kind == "recipient.status_changed":
            by_row.setdefault(data["message_id"], []).append(data["status"])
    assert sorted(by_row.values()) == [["sent", "delivered"], ["sent", "delivered"]]
    (finished,) = [data for kind, data in got if kind == "distribution.finished"]
    assert finished["distribution_id"] == distribution.pk and finished["status"] == "sent"
    # A distribution ends when every row is handed over; receipts come later.
    assert finished["recipients"] == {"total": 2, "by_status": {"sent": 2}}
    assert set(WebhookDelivery.objects.values_list("state", flat=True)) == {"delivered"}
    assert finished["test"] is False and all(data["test"] is False for _, data in got)


def test_a_test_message_says_so_in_its_events(
    tenancy, local, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    """A test message to oneself (issue 22) raises its events marked ``test``: a receiver
    can leave them out of its own counts."""
    from distributions.copies import distribution_test_send

    endpoint_for(
        tenancy.brand_a, receiver.url, events=["recipient.status_changed", "distribution.finished"]
    )
    original = distribution_create(
        project=tenancy.project_a,
        message="Hi ${first_name}",
        send_at=timezone.now() + timedelta(days=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        test = distribution_test_send(original=original, address="+14155550199")
    got = [(r.json["type"], r.json["data"]) for r in receiver.accepted()]
    assert {kind for kind, _ in got} == {"recipient.status_changed", "distribution.finished"}
    assert all(data["test"] is True and data["distribution_id"] == test.pk for _, data in got)


def test_no_endpoint_costs_one_query_per_batch(tenancy, django_assert_num_queries):
    distribution = DistributionFactory(project=tenancy.project_a)
    rows = MessageFactory.create_batch(100, distribution=distribution, status="sent")

    with django_assert_num_queries(1):
        made = recipient_statuses_raised(
            distribution_id=distribution.pk,
            changes=[(row.pk, "sent") for row in rows],
            at=timezone.now(),
        )

    assert made == 0


def test_a_batch_with_an_endpoint_is_written_in_bulk(
    tenancy, local, receiver, django_assert_max_num_queries
):
    endpoint_for(tenancy.brand_a, receiver.url, events=["recipient.status_changed"])
    distribution = DistributionFactory(project=tenancy.project_a)
    rows = MessageFactory.create_batch(100, distribution=distribution, status="sent")

    with django_assert_max_num_queries(7):
        made = recipient_statuses_raised(
            distribution_id=distribution.pk,
            changes=[(row.pk, "sent") for row in rows],
            at=timezone.now(),
        )

    assert made == 100 and WebhookEvent.objects.count() == 100


# --- retries, order, disabling, redelivery --------------------------------------------------------
def test_failures_back_off_keep_order_and_disable_the_endpoint(tenancy, local, receiver):
    receiver.script = Script(status=500)
    local.RELAY_WEBHOOKS_DISABLE_AFTER = 3600
    issued = endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    endpoint = issued.endpoint
    optout = opt_out(tenancy.brand_a)
    from optouts.services import optout_opt_in

    optout_opt_in(optout=optout, reason="asked again", role=Role.BRAND_ADMIN)
    opt_out(tenancy.brand_a)  # the same address again: a second event about the same object
    first, second = WebhookDelivery.objects.order_by("pk")

    outcomes = run_due()

    assert [o["outcome"] for o in outcomes] == ["retry", "waiting"]
    first.refresh_from_db()
    assert first.attempts == 1 and first.status_code == 500 and first.error == "HTTP 500"
    delays = []
    for _ in range(3):
        WebhookDelivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now())
        before = timezone.now()
        assert delivery_attempt(delivery_id=first.pk)["outcome"] == "retry"
        first.refresh_from_db()
        delays.append(round((first.next_attempt_at - before).total_seconds()))
        assert delivery_attempt(delivery_id=second.pk)["outcome"] in ("waiting", "not_due")
    assert delays == [20, 40, 80]  # 10 s x 2^(n-1)
    assert WebhookAttempt.objects.filter(delivery=first).count() == 4
    assert {r.event_id for r in receiver.requests} == {str(first.event.event_id)}

    # Failing for longer than the limit: disabled once, admins emailed, banner on the page.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=2)
    )
    WebhookDelivery.objects.filter(pk=first.pk).update(next_attempt_at=timezone.now())
    delivery_attempt(delivery_id=first.pk)
    endpoint.refresh_from_db()
    assert not endpoint.is_enabled and "failed for 1 hour" in endpoint.disabled_reason
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [tenancy.admin_a.email]
    assert endpoint.url in mail.outbox[0].subject
    client = Client()
    client.force_login(tenancy.viewer_a)
    page = client.get(f"/webhooks/endpoints/{endpoint.pk}/").content.decode()
    assert 'id="disabled-banner"' in page and "failed for 1 hour" in page
    assert delivery_attempt(delivery_id=second.pk)["outcome"] == "waiting"  # disabled: held

    # Enabled again and past its retry window, the first gives up and the second goes.
    receiver.script = Script(status=204)
    client.force_login(tenancy.admin_a)
    client.post(f"/webhooks/endpoints/{endpoint.pk}/", {"action": "enable"})
    local.RELAY_WEBHOOKS_RETRY_WINDOW = 0
    receiver.script = Script(status=500)
    assert delivery_attempt(delivery_id=first.pk)["outcome"] == "failed"
    receiver.script = Script(status=204)
    assert delivery_attempt(delivery_id=second.pk)["outcome"] == "delivered"
    assert len(mail.outbox) == 1


def test_a_hanging_receiver_costs_one_timeout_per_task_not_one_per_row(tenancy, local, receiver):
    local.RELAY_WEBHOOKS_TIMEOUT = 0.5
    receiver.script = Script(hang_first=1, hang_seconds=2)
    endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    for n in range(3):
        opt_out(tenancy.brand_a, address=f"+1415555030{n}")
    ids = list(WebhookDelivery.objects.order_by("pk").values_list("pk", flat=True))

    started = time.monotonic()
    outcomes = deliveries_attempt(delivery_ids=ids)
    elapsed = time.monotonic() - started

    assert [outcomes[pk]["outcome"] for pk in ids] == ["retry", "deferred", "deferred"]
    assert outcomes[ids[0]]["error"] == "Timed out after 0.5 s"
    assert elapsed < 1.5
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert [(d.state, d.attempts) for d in rows] == [("pending", 1), ("pending", 0), ("pending", 0)]
    assert all(d.next_attempt_at > timezone.now() for d in rows)


def test_redeliver_sends_the_same_event_again(tenancy, local, receiver, api_client_for):
    issued = endpoint_for(tenancy.brand_a, receiver.url, events=["participant.opted_out"])
    opt_out(tenancy.brand_a)
    run_due()
    delivery = WebhookDelivery.objects.get()
    api = api_client_for(user=tenancy.admin_a)

    answer = api.post(f"/api/v1/webhooks/{issued.endpoint.pk}/deliveries/{delivery.pk}/redeliver/")
    run_due()
    client = Client()
    client.force_login(tenancy.admin_a)
    client.post(
        f"/webhooks/endpoints/{issued.endpoint.pk}/",
        {"action": "redeliver", "delivery": delivery.pk},
    )
    run_due()

    assert answer.status_code == 202 and answer.json()["event_id"] == str(delivery.event.event_id)
    assert [r.event_id for r in receiver.accepted()] == [str(delivery.event.event_id)] * 3
    log = api.get(f"/api/v1/webhooks/{issued.endpoint.pk}/deliveries/").json()["results"]
    assert [row["state"] for row in log] == ["delivered"] * 3
    assert log[0]["attempt_log"][0]["status_code"] == 200
    page = client.get(f"/webhooks/endpoints/{issued.endpoint.pk}/").content.decode()
    assert page.count("Redeliver</button>") == 3 and " ms</td>" in page


def test_the_schema_documents_the_webhook_api(api_a):
    schema = api_a.get("/api/v1/schema/?format=json").json()

    paths = schema["paths"]
    assert "/api/v1/webhooks/" in paths
    assert "/api/v1/webhooks/{id}/deliveries/" in paths
    assert "/api/v1/webhooks/{id}/deliveries/{delivery_pk}/redeliver/" in paths
    assert "/api/v1/webhooks/{id}/rotate-secret/" in paths


@pytest.mark.django_db(transaction=True)
def test_a_callback_racing_the_worker_waits_for_it_and_events_keep_their_order(
    tenancy, local, receiver
):
    """The provider's delivery receipt arrives while the worker's transaction that records
    the send is still open: the receipt waits for it (row lock), is applied, not lost, and the
    row's webhooks are raised sent, then delivered."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite runs one writer at a time)")
    from collections import defaultdict

    from distributions.providers.base import Outcome, SendResult
    from distributions.sending import _record_results

    endpoint_for(tenancy.brand_a, receiver.url, events=["recipient.status_changed"])
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    message = MessageFactory(
        distribution=distribution,
        participant=tenancy.participant_a,
        person=tenancy.participant_a.person,
        status=Message.Status.SENDING,
        lease="lease-1",
        leased_at=timezone.now(),
    )
    recorded, applied = threading.Event(), []

    def worker():
        try:
            with transaction.atomic():
                _record_results(
                    distribution,
                    [SendResult(message.pk, Outcome.ACCEPTED, provider_id="SM9")],
                    "lease-1",
                    defaultdict(int),
                )
                recorded.set()
                time.sleep(0.5)  # the receipt arrives now, before this commits
        finally:
            connection.close()

    def callback():
        recorded.wait(10)
        try:
            applied.append(
                message_status_ingest(
                    provider="twilio",
                    provider_status="delivered",
                    provider_id="SM9",
                    message_id=message.pk,
                )
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=worker), threading.Thread(target=callback)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    message.refresh_from_db()
    assert applied == [True] and message.status == Message.Status.DELIVERED
    assert list(message.events.order_by("pk").values_list("status", flat=True)) == [
        "sent",
        "delivered",
    ]
    run_due()
    statuses = [r.json["data"]["status"] for r in receiver.accepted()]
    assert statuses == ["sent", "delivered"]
