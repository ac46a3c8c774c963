"""SMS through the real twilio SDK against the Twilio-compatible fake on 127.0.0.1."""

import time
from datetime import timedelta

from django.db import connection
from django.utils import timezone

import pytest
from twilio.request_validator import RequestValidator

from distributions.models import Distribution, Message, ProviderAccount
from distributions.providers.base import ProviderError
from distributions.providers.twilio import TwilioProvider, twilio_subaccount_provision
from distributions.sending import reconcile_range
from distributions.services import distribution_create
from optouts.models import OptOut
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db(transaction=True)
S = Message.Status
SENDER = "+15005550006"


@pytest.fixture
def fake():
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def twilio_brand(tenancy, fake, settings, live_server):
    settings.TWILIO_API_BASE_URL = fake.base_url
    settings.PUBLIC_BASE_URL = live_server.url
    ProviderAccount.objects.create(
        brand=tenancy.brand_a,
        provider="twilio",
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        default_sender=SENDER,
        messages_per_second=1000,
    )
    tenancy.participant_a.delete()
    return tenancy


def crowd(project, count, start=100):
    people = []
    for i in range(count):
        person = PersonFactory(
            brand=project.brand, first_name=f"P{i}", phone=f"+1415555{start + i:04d}"
        )
        people.append(ParticipantFactory(project=project, person=person))
    return people


def send(project, **kwargs):
    return distribution_create(
        project=project, message=kwargs.pop("message", "Hi ${first_name}"), **kwargs
    )


def in_the_fair_queue(project) -> Distribution:
    """A distribution started now, its rows materialised and its lane open, no pump kicked:
    the test picks and sends its batches itself."""
    from distributions.sending import distribution_enqueue
    from distributions.services import distribution_materialise

    distribution = Distribution.objects.create(
        project=project,
        message="Hi ${first_name}",
        send_at=timezone.now(),
        status="in_progress",
        started_at=timezone.now(),
    )
    distribution_materialise(distribution=distribution)
    distribution_enqueue(distribution=distribution)
    return distribution


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_sends_once_each_and_callbacks_deliver(twilio_brand, fake, eager_tasks):
    project = twilio_brand.project_a
    crowd(project, 30)
    distribution = send(project)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT
    assert fake.stats()["accepted"] == 30
    assert all(fake.sent_to(f"+1415555{100 + i:04d}") == 1 for i in range(30))
    messages = list(distribution.messages.all())
    assert all(m.provider_id.startswith("SM") for m in messages)
    assert {m["body"] for m in fake.messages} == {f"Hi P{i}" for i in range(30)}
    assert wait_for(lambda: distribution.messages.filter(status=S.DELIVERED).count() == 30)
    assert fake.callback_failures == []


def test_recipient_errors_fail_or_block_only_that_recipient(twilio_brand, fake, eager_tasks):
    project = twilio_brand.project_a
    people = crowd(project, 5)
    fake.set_number_error(people[0].person.phone, 21211)
    fake.set_number_error(people[1].person.phone, 21610)
    distribution = send(project)
    distribution.refresh_from_db()
    bad = distribution.messages.get(participant=people[0])
    blocked = distribution.messages.get(participant=people[1])
    assert bad.status == S.FAILED and bad.error_code == "21211"
    assert blocked.status == S.BLOCKED
    assert OptOut.objects.get(address=people[1].person.phone).source == "provider"
    assert distribution.status == Distribution.Status.SENT
    assert "2 failed" in distribution.status_reason
    assert fake.stats()["accepted"] == 3


def test_429_storm_and_5xx_are_survived_without_duplicates(twilio_brand, fake, eager_tasks):
    project = twilio_brand.project_a
    crowd(project, 40)
    fake.fail_next(25, status=429)
    distribution = send(project)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT
    assert fake.stats()["accepted"] == 40
    fake.reset()
    fake.fail_next(10, status=503)
    second = send(project, message="Again ${first_name}")
    second.refresh_from_db()
    assert second.status == Distribution.Status.SENT
    assert fake.stats()["accepted"] == 40
    assert max(fake.sent_to(p) for p in {m["to"] for m in fake.messages}) == 1


def test_refused_credentials_fail_the_distribution(twilio_brand, fake, eager_tasks):
    ProviderAccount.objects.filter(brand=twilio_brand.brand_a).update(
        auth_token=ProviderAccount._meta.get_field("auth_token").get_prep_value("wrong-token")
    )
    project = twilio_brand.project_a
    crowd(project, 3)
    distribution = send(project)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.FAILED
    assert "refused the account" in distribution.status_reason
    assert fake.stats()["accepted"] == 0
    assert set(distribution.messages.values_list("status", flat=True)) == {S.FAILED}


def test_forged_and_unsigned_callbacks_change_nothing(twilio_brand, fake, eager_tasks, client):
    project = twilio_brand.project_a
    crowd(project, 1)
    fake.set_callbacks(enabled=False)
    distribution = send(project)
    message = distribution.messages.get()
    path = f"/webhooks/twilio/status/{message.pk}/"
    data = {"MessageSid": message.provider_id, "MessageStatus": "delivered"}
    assert client.post(path, data).status_code == 403
    forged = RequestValidator("not-the-token").compute_signature(twilio_brand_url(path), data)
    assert client.post(path, data, HTTP_X_TWILIO_SIGNATURE=forged).status_code == 403
    assert client.post("/webhooks/twilio/status/999999/", data).status_code == 403
    message.refresh_from_db()
    assert message.status == S.SENT
    valid = RequestValidator(fake.auth_token).compute_signature(twilio_brand_url(path), data)
    assert client.post(path, data, HTTP_X_TWILIO_SIGNATURE=valid).status_code == 204
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    # Replayed and out-of-order callbacks change nothing.
    sent = {"MessageSid": message.provider_id, "MessageStatus": "sent"}
    signature = RequestValidator(fake.auth_token).compute_signature(twilio_brand_url(path), sent)
    assert client.post(path, sent, HTTP_X_TWILIO_SIGNATURE=signature).status_code == 204
    message.refresh_from_db()
    assert message.status == S.DELIVERED


def twilio_brand_url(path):
    from django.conf import settings

    return settings.PUBLIC_BASE_URL + path


def test_unknown_outcome_is_reconciled_not_resent(twilio_brand, fake, settings):
    """A worker died after Twilio accepted: the row is found at the provider, not resent."""
    project = twilio_brand.project_a
    people = crowd(project, 2)
    distribution = Distribution.objects.create(
        project=project, message="Hi", send_at=timezone.now(), status="in_progress"
    )
    from distributions.services import distribution_materialise

    distribution_materialise(distribution=distribution)
    long_ago = timezone.now() - timedelta(seconds=settings.RELAY_SEND_LEASE_SECONDS + 30)
    accepted, lost = distribution.messages.order_by("pk")
    for row in (accepted, lost):
        Message.objects.filter(pk=row.pk).update(
            status=S.SENDING, lease="dead", leased_at=long_ago, body=f"Hi {row.pk}"
        )
    provider = TwilioProvider(ProviderAccount.objects.get(brand=twilio_brand.brand_a))
    # Only the first reached Twilio before the worker died.
    from tests.fake_twilio import twilio_client_for

    twilio_client_for(fake).messages.create(
        to=people[0].person.phone, from_=SENDER, body=f"Hi {accepted.pk}"
    )
    assert reconcile_range(distribution=distribution, provider=provider) == 2
    provider.close()
    accepted.refresh_from_db()
    lost.refresh_from_db()
    assert accepted.status == S.SENT and accepted.provider_id.startswith("SM")
    assert lost.status == S.PENDING  # safe to send: Twilio never saw it
    assert fake.stats()["accepted"] == 1


def test_credentials_check_and_subaccount_provisioning(twilio_brand, fake, settings):
    account = ProviderAccount.objects.get(brand=twilio_brand.brand_a)
    provider = TwilioProvider(account)
    provider.check_credentials()
    account.auth_token = "wrong"
    with pytest.raises(ProviderError, match="refused these credentials"):
        TwilioProvider(account).check_credentials()
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = fake.account_sid, fake.auth_token
    sid, token = twilio_subaccount_provision(brand=twilio_brand.brand_b)
    assert sid.startswith("AC") and sid != fake.account_sid and token


def test_send_window_sends_the_exact_form_and_times_out_as_unknown(twilio_brand, fake, monkeypatch):
    """The provider's own HTTP transport under the SDK: the form body it encodes itself
    (non-ASCII, '&', '=', '+', a status callback) reaches Twilio exactly, with the account's
    credentials; a refusal is classified; a request that hangs past the timeout is UNKNOWN
    (reconciled later), never retried blindly."""
    from distributions.providers import twilio as twilio_module
    from distributions.providers.base import Outcome, OutgoingSms

    account = ProviderAccount.objects.get(brand=twilio_brand.brand_a)
    provider = TwilioProvider(account)
    body = "Grüße 😀 a&b=c+d %20 ${x}\nline two"
    callback = "https://relay.example/webhooks/twilio/status/7/?a=1&b=2"
    fake.set_number_error("+14155550199", "21211")
    try:
        results = provider.send_window(
            [
                OutgoingSms(1, "+14155550198", SENDER, body, status_callback=callback),
                OutgoingSms(2, "+14155550199", SENDER, "refused"),
            ]
        )
    finally:
        provider.close()
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.REJECTED]
    assert results[1].error_code == "21211"
    (stored,) = fake.messages_to("+14155550198")
    assert stored["body"] == body
    assert stored["from"] == SENDER
    assert stored["status_callback"] == callback
    assert stored["sid"] == results[0].provider_id

    # A request that hangs: the timeout applies (the pooled client is per API host, so this
    # fresh fake gets a client built with the shortened timeout).
    monkeypatch.setattr("django.conf.settings.RELAY_PROVIDER_TIMEOUT_SECONDS", 0.5)
    with FakeTwilio() as slow:
        account.account_sid, account.auth_token = slow.account_sid, slow.auth_token
        monkeypatch.setattr("django.conf.settings.TWILIO_API_BASE_URL", slow.base_url)
        slow.set_hang(5, count=1)
        provider = TwilioProvider(account)
        started = time.monotonic()
        try:
            (result,) = provider.send_window([OutgoingSms(3, "+14155550197", SENDER, "hi")])
        finally:
            provider.close()
            twilio_module.close_pooled_clients()
        assert time.monotonic() - started < 4
        assert result.outcome == Outcome.UNKNOWN
        assert result.error_code == "timeout"


def test_a_throttled_window_waits_as_a_state_shown_on_the_page(twilio_brand, fake, client):
    """Twilio answers 429: the rows are Pending again, due after their backoff, each with an
    event saying until when; the sender is paused; no worker waits; the page and the metrics
    say how many wait and until when."""
    from distributions import fairqueue
    from distributions.models import MessageEvent, Sender
    from distributions.selectors import distribution_metrics
    from distributions.sending import send_batch

    project = twilio_brand.project_a
    crowd(project, 5)
    fake.fail_next(5, status=429)
    distribution = in_the_fair_queue(project)
    lease = fairqueue.new_lease()
    started = time.monotonic()
    stats = send_batch(lease=lease, grants=fairqueue.pick(lease=lease))
    assert time.monotonic() - started < 5  # nothing slept for the backoff
    assert stats["deferred"] == 5 and stats["sent"] == 0
    rows = list(distribution.messages.all())
    now = timezone.now()
    assert {row.status for row in rows} == {S.PENDING}
    assert all(row.due_at > now and row.lease == "" for row in rows)
    event = MessageEvent.objects.filter(message=rows[0]).latest("pk")
    assert event.status == S.PENDING and event.detail.startswith("Waiting until")
    sender = Sender.objects.get(brand=twilio_brand.brand_a)
    assert sender.ready_at > now and "429" in sender.paused_reason
    metrics = distribution_metrics(distribution=distribution)
    assert metrics["waiting"] == 5 and metrics["waiting_next"] > now
    client.force_login(twilio_brand.admin_a)
    page = client.get(f"/distributions/{distribution.pk}/").content.decode()
    assert 'id="waiting-rows"' in page and "5 waiting until" in page
    assert fake.stats()["accepted"] == 0


def test_a_window_picked_ahead_waits_for_its_moment_on_the_hand_over_loop(
    twilio_brand, fake, settings
):
    """A long code's next window is picked ahead of its moment and handed over at it, by the
    hand-over loop: the batch is in flight while the pump's thread goes on (on PostgreSQL the
    pump picks and starts its next batches meanwhile, ``Batch.pipelined``); the provider sees
    the two messages at least a second apart, the second no sooner than its moment."""
    from distributions import fairqueue
    from distributions.models import Sender
    from distributions.sending import batch_start

    settings.RELAY_SEND_PICK_AHEAD_SECONDS = 0.6
    ProviderAccount.objects.filter(brand=twilio_brand.brand_a).update(messages_per_second=1)
    project = twilio_brand.project_a
    crowd(project, 2)
    distribution = in_the_fair_queue(project)
    lease = fairqueue.new_lease()
    first = batch_start(lease=lease, grants=fairqueue.pick(lease=lease))
    assert first.pipelined == (connection.vendor == "postgresql")
    assert first.finish()["sent"] == 1
    sender = Sender.objects.get(brand=twilio_brand.brand_a)
    moment = sender.ready_at
    # Within the pick-ahead of its moment (a full second after the first answer).
    time.sleep(max(0.0, (moment - timezone.now()).total_seconds() - 0.5))
    lease = fairqueue.new_lease()
    grants = fairqueue.pick(lease=lease)
    assert [g.leased for g in grants] == [1]
    assert abs(grants[0].not_before - moment) < timedelta(milliseconds=1)
    second = batch_start(lease=lease, grants=grants)
    # Started: in flight, waiting for its moment on the loop, not in this thread.
    assert not second.done() and fake.counters()["accepted"] == 1
    assert abs(second.moment() - moment.timestamp()) < 0.001
    assert fairqueue.pick(lease=fairqueue.new_lease()) == []  # one window at a time
    assert second.finish()["sent"] == 1
    created = sorted(m["created_ts"] for m in fake.messages)
    assert len(created) == 2
    assert created[1] >= moment.timestamp() - 0.001 and created[1] - created[0] >= 1.0
    assert set(distribution.messages.values_list("status", flat=True)) <= {S.SENT, S.DELIVERED}


@pytest.mark.parametrize(
    "url",
    [
        "https://relay.example.com/webhooks/twilio/inbound/",
        "http://127.0.0.1:8000/webhooks/twilio/inbound/",
        "https://relay.example.com:443/webhooks/twilio/inbound/?x=1",
    ],
)
def test_one_hmac_validation_answers_as_the_sdk(url):
    """``signature_valid`` stops at the first signature that matches; it accepts exactly
    what the SDK's ``validate`` accepts (the URL with or without its port)."""
    from urllib.parse import urlparse

    from twilio.request_validator import RequestValidator, add_port, remove_port

    from distributions.providers.twilio import signature_valid

    validator = RequestValidator("a-token")
    params = {"Body": "Hi", "From": "+14155550123", "To": "+15005550006"}
    parsed = urlparse(url)
    for signed in (url, remove_port(parsed), add_port(parsed), url + "x"):
        signature = validator.compute_signature(signed, params)
        expected = validator.validate(url, params, signature)
        assert signature_valid(validator, url, params, signature) is expected
        assert expected is (signed != url + "x")
    assert not signature_valid(validator, url, params, "forged")
    signature = validator.compute_signature(url, params)
    assert signature_valid(validator, url, params, signature)
    assert not signature_valid(validator, url, {**params, "Body": "Hi!"}, signature)
