"""Replies applied by a worker (``conversations.replies``, docs/two-way.md): the webhook stores a
reply pending and answers; the applier takes pending replies in batches, in received order per
number, once each, whatever dies on the way. The replies here are stored as the webhook stores
them (``sms_reply_receive``) and applied by running the applier, as a worker does."""

from __future__ import annotations

import email
from decimal import Decimal

import pytest

from conversations.models import Session, Turn
from conversations.replies import replies_apply, replies_apply_batch
from conversations.sending import turns_send
from credits.models import CountryRate, CreditEntry
from distributions.inbound import sms_reply_receive
from distributions.providers.base import InboundSms
from optouts.models import InboundMessage, OptOut
from projects.models import Response
from tests.factories.credits import grant
from tests.test_email_sending import smtp  # noqa: F401 - a fixture
from tests.test_two_way import SENDER, invite, survey, texts_to  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db
S = Session.Status


def store(brand, number, body, *, sid, to=SENDER):
    """What the webhook does with a reply: stored (STOP and START acted on), not applied."""
    inbound = InboundSms(from_number=number, to_number=to, body=body, provider_sid=sid)
    return sms_reply_receive(brand=brand, inbound=inbound, provider="twilio")


def pending() -> list[int]:
    return list(
        InboundMessage.objects.filter(apply_state="pending")
        .order_by("pk")
        .values_list("pk", flat=True)
    )


@pytest.fixture
def sent(survey, eager_tasks, django_capture_on_commit_callbacks):  # noqa: F811
    distribution = invite(survey.project_a, django_capture_on_commit_callbacks)
    survey.ada = distribution.messages.get(person__first_name="Ada").address
    survey.bob = distribution.messages.get(person__first_name="Bob").address
    return survey


def answers_of(number) -> list:
    session = Session.objects.get(address=number)
    return list(Response.objects.get(pk=session.response_id).answers.values())


def test_a_numbers_replies_are_applied_in_received_order_across_batches(sent):
    brand = sent.brand_a
    for n, body in enumerate(["1", "7", "Friendly staff"]):
        store(brand, sent.ada, body, sid=f"SMa{n}")
        store(brand, sent.bob, body, sid=f"SMb{n}")
    # Batches of 3: Ada's "1" and Bob's "1" together, then Ada's "7" after hers...
    sizes = []
    while (batch := replies_apply_batch(batch_size=3))["claimed"]:
        sizes.append(batch["applied"])
    assert sum(sizes) == 6 and len(sizes) >= 2
    for number in (sent.ada, sent.bob):
        # "7" answered the rating (it is no choice of the first question): in order.
        assert Session.objects.get(address=number).status == S.COMPLETED
        assert answers_of(number) == ["Web", 7, "Friendly staff"]
        kinds = Turn.objects.filter(address=number).order_by("created_at", "pk")
        assert [(t.direction, t.kind) for t in kinds] == [
            ("in", "answer"),
            ("out", "question"),
            ("in", "answer"),
            ("out", "question"),
            ("in", "answer"),
            ("out", "thank_you"),
        ]
    assert not pending()


def test_a_worker_killed_mid_batch_leaves_nothing_applied_twice(sent, monkeypatch):
    brand = sent.brand_a
    CountryRate.objects.create(country="US", rate=Decimal("0.01"), inbound_rate=Decimal("0.002"))
    grant(brand, 100)
    for n, body in enumerate(["1", "7"]):
        store(brand, sent.ada, body, sid=f"SMa{n}")
    store(brand, sent.bob, "1", sid="SMb")
    # A worker applied the batch and died before it committed: nothing of it is kept, and
    # its replies are free at once (its locks went with its transaction).
    from conversations import replies

    def dies_after(*args, **kwargs):
        replies_applied = real(*args, **kwargs)
        assert replies_applied and Session.objects.exists()  # written, not committed
        raise SystemExit("worker killed")

    real = replies.inbound_converse_many
    monkeypatch.setattr(replies, "inbound_converse_many", dies_after)
    with pytest.raises(SystemExit):
        replies_apply_batch()
    monkeypatch.setattr(replies, "inbound_converse_many", real)
    assert not Session.objects.exists() and not Turn.objects.exists()
    assert len(pending()) == 3

    assert replies_apply()["applied"] == 3
    assert replies_apply()["applied"] == 0  # applied rows are never taken again

    assert answers_of(sent.ada) == ["Web", 7] and answers_of(sent.bob) == ["Web"]
    replies = Turn.objects.filter(direction="in")
    assert replies.count() == 3
    assert Turn.objects.filter(direction="out", kind="question").count() == 3
    # The send task debits each reply once, keyed by its stored message, however often it runs.
    ids = list(Turn.objects.values_list("pk", flat=True))
    turns_send(turn_ids=ids)
    turns_send(turn_ids=ids)
    debits = CreditEntry.objects.filter(idempotency_key__startswith="sms-inbound:")
    assert debits.count() == 3
    assert (
        InboundMessage.objects.filter(apply_state="applied", applied_at__isnull=False).count() == 3
    )


def test_stop_beats_an_answer_queued_before_it(sent, django_capture_on_commit_callbacks):
    brand = sent.brand_a
    grant(brand, 100)
    store(brand, sent.bob, "1", sid="SM1")  # not applied yet
    stop = store(brand, sent.bob, "STOP", sid="SM2")
    # The opt-out is recorded by the request itself, before any worker ran.
    assert OptOut.objects.filter(address=sent.bob, active=True).count() == 1
    assert stop.inbound.action == "opted_out"
    assert not Session.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):  # the send task runs (eager)
        replies_apply()

    # The answer is applied in its order (kept as a partial response), then STOP ends the
    # session; the question the answer asked for is never handed over.
    session = Session.objects.get(address=sent.bob)
    assert session.status == S.OPTED_OUT
    assert answers_of(sent.bob) == ["Web"]
    assert [status for _, status in texts_to(sent.bob)] == [Turn.Status.SKIPPED_OPTOUT]
    assert list(
        Turn.objects.filter(address=sent.bob, direction="in").values_list("kind", flat=True)
    ) == ["answer", "stop"]


def test_a_replayed_reply_is_stored_and_applied_once(sent):
    brand = sent.brand_a
    first = store(brand, sent.ada, "1", sid="SM1")
    again = store(brand, sent.ada, "1", sid="SM1")  # before it was applied
    assert (first.replayed, again.replayed, len(pending())) == (False, True, 1)
    replies_apply()
    late = store(brand, sent.ada, "1", sid="SM1")  # after
    assert late.replayed and not pending()
    assert replies_apply()["applied"] == 0
    assert InboundMessage.objects.count() == 1
    assert Turn.objects.filter(direction="in").count() == 1
    assert Session.objects.get(address=sent.ada).position == 2


def test_another_brands_reply_in_the_same_batch_touches_nothing_of_this_brand(sent):
    store(sent.brand_b, sent.ada, "1", sid="SMb", to="+15005550999")
    store(sent.brand_a, sent.ada, "1", sid="SMa")
    assert replies_apply()["applied"] == 2
    assert not Session.objects.filter(brand=sent.brand_b).exists()
    assert not Turn.objects.filter(brand=sent.brand_b).exists()
    session = Session.objects.get(brand=sent.brand_a, address=sent.ada)
    assert (session.position, answers_of(sent.ada)) == (2, ["Web"])


def test_a_batch_that_completes_many_responses_thanks_each_with_one_task(
    sent,
    smtp,  # noqa: F811 - a fixture
    django_capture_on_commit_callbacks,
):
    """Each recipient whose conversation the batch completes gets the completion-triggered
    thank-you, and the batch queues one task for them all (it had queued one per response,
    each a task of the worker's with its own connection and reads)."""
    from celery.signals import task_prerun

    from tests.test_email_sending import send_now

    thanks = send_now(
        sent.project_a,
        django_capture_on_commit_callbacks,
        kind="thank_you",
        trigger="completion",
        subject="Thank you ${first_name}",
        message='<p>Thanks!</p><a href="${opt_out_link}">out</a>',
    )
    assert thanks.status == "in_progress"
    ran = []

    def record(sender=None, args=None, **kwargs):
        if sender.name == "distributions.tasks.distribution_on_completion_task":
            ran.append(args)

    task_prerun.connect(record, weak=False)
    try:
        for n, body in enumerate(["1", "7", "Friendly staff"]):
            store(sent.brand_a, sent.ada, body, sid=f"SMa{n}")
            store(sent.brand_a, sent.bob, body, sid=f"SMb{n}")
            with django_capture_on_commit_callbacks(execute=True):
                assert replies_apply_batch()["applied"] == 2
    finally:
        task_prerun.disconnect(record)
    completed = set(Response.objects.filter(status="complete").values_list("pk", flat=True))
    assert len(completed) == 2
    assert len(ran) == 1 and set(ran[0][0]) == completed
    received = smtp.wait_for(2, timeout=10)
    subjects = sorted(email.message_from_bytes(r.data)["Subject"] for r in received)
    assert subjects == ["Thank you Ada", "Thank you Bob"]
    assert thanks.messages.filter(status="sent").count() == 2


def test_a_process_trusts_the_kick_it_saw_for_a_moment(
    monkeypatch, django_capture_on_commit_callbacks
):
    """Replies stored right after a kick ask Redis nothing: the applier kicked (or draining)
    takes them; after KICK_TRUSTED_SECONDS the next one asks again."""
    from conversations import replies

    asked, queued = [], []
    real_flag_add = replies.flag_add
    monkeypatch.setattr(replies, "flag_add", lambda *a: asked.append(a) or real_flag_add(*a))
    monkeypatch.setattr(replies, "task_queue", lambda name, **kw: queued.append(kw))
    clock = [1000.0]
    monkeypatch.setattr(replies.time, "monotonic", lambda: clock[0])
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            replies.replies_kick()
    assert (len(asked), len(queued)) == (1, 1)
    clock[0] += replies.KICK_TRUSTED_SECONDS
    with django_capture_on_commit_callbacks(execute=True):
        replies.replies_kick()
    assert len(asked) == 2


def test_a_full_batch_claims_again_at_once_and_a_partial_one_waits(sent, monkeypatch):
    """A backlog drains batch after batch; a batch that was not full (the replies that came in
    since the last claim) has the next claim wait GATHER_SECONDS for more, so that batches
    under a steady flow are not every other one a small one."""
    from conversations import replies

    queued = []
    monkeypatch.setattr(
        replies, "task_queue", lambda name, countdown=None, **kw: queued.append((countdown, kw))
    )
    store(sent.brand_a, sent.ada, "1", sid="SM1")
    store(sent.brand_a, sent.bob, "1", sid="SM2")
    store(sent.brand_a, sent.ada, "7", sid="SM3")
    stats = replies_apply(batch_size=2)
    assert (stats["batches"], stats["applied"], pending()) == (2, 3, [])
    assert queued == [(replies.GATHER_SECONDS, {})]
    assert answers_of(sent.ada) == ["Web", 7]


def test_a_run_that_runs_dry_takes_one_last_look(sent, monkeypatch):
    """The last look comes KICK_TRUSTED_SECONDS after the kick is cleared (replies stored by
    a process that trusted the kick just before are applied then); a last look that finds
    nothing looks no more, one that finds replies looks again after them."""
    from conversations import replies

    queued = []
    monkeypatch.setattr(
        replies, "task_queue", lambda name, countdown=None, **kw: queued.append((countdown, kw))
    )
    store(sent.brand_a, sent.ada, "1", sid="SM1")
    assert replies_apply()["applied"] == 1
    assert queued == [(replies.GATHER_SECONDS, {})]  # a small batch: more may follow
    queued.clear()
    assert replies_apply()["applied"] == 0
    assert queued == [(replies.KICK_TRUSTED_SECONDS, {"last_look": True})]
    queued.clear()
    assert replies_apply(last_look=True)["applied"] == 0
    assert queued == []
    store(sent.brand_a, sent.bob, "1", sid="SM2")  # stored trusting the kick: no new kick
    assert replies_apply(last_look=True)["applied"] == 1
    assert queued == [(replies.GATHER_SECONDS, {})]  # that run will look again when dry
    assert Session.objects.get(address=sent.bob).position == 2
