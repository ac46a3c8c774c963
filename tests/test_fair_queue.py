"""The fair queue, without workers: token buckets as arithmetic, the round-robin order,
and what one pick leases (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributions import fairqueue, throttle
from distributions.models import Distribution, Message, Sender, SendLane, SendPump
from distributions.sending import distribution_enqueue
from distributions.services import distribution_materialise
from tests.factories.brands import BrandFactory
from tests.factories.distributions import DistributionFactory, ProviderAccountFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
S = Message.Status


# --- the bucket ----------------------------------------------------------------------------
def test_a_bucket_refills_at_its_rate_up_to_one_second_of_it():
    assert throttle.refill(rate=5, tokens=0, tokens_at=T0, now=T0 + timedelta(seconds=0.4)) == 2
    assert throttle.refill(rate=5, tokens=0, tokens_at=T0, now=T0 + timedelta(seconds=9)) == 5
    assert throttle.refill(rate=0, tokens=0, tokens_at=T0, now=T0) == throttle.UNLIMITED
    # A clock that went backwards refills nothing.
    assert throttle.refill(rate=5, tokens=1, tokens_at=T0, now=T0 - timedelta(seconds=3)) == 1


def test_a_sender_is_ready_when_a_quarter_second_of_its_rate_is_whole_on_the_grid():
    grid = timedelta(seconds=throttle.GRID_SECONDS)
    # The exact moment is 0.75 s away: ready at the first grid step from then.
    ready = throttle.ready_at(rate=1, tokens=0.25, now=T0)
    assert T0 + timedelta(seconds=0.75) <= ready < T0 + timedelta(seconds=0.75) + grid
    assert round(ready.timestamp() / throttle.GRID_SECONDS, 6) % 1 == 0
    # A quarter second of 100/s: 25 tokens, 0.25 s away (a grid step already).
    quarter = throttle.ready_at(rate=100, tokens=0, now=T0)
    assert T0 + timedelta(seconds=0.25) <= quarter < T0 + timedelta(seconds=0.25) + grid
    assert throttle.ready_at(rate=100, tokens=25, now=T0) == T0
    assert throttle.ready_at(rate=0, tokens=0, now=T0) == T0
    assert throttle.take(2.999999, 10) == 2 and throttle.take(throttle.UNLIMITED, 7) == 7


@given(
    rate=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=60),
)
def test_taking_tokens_as_the_pumps_do_never_exceeds_the_bucket_bound(rate, gaps):
    """Whatever the moments a sender is served, over any interval of t seconds it sends at
    most rate * t + one second of its rate (the oracle: a plain list of send times)."""
    tokens, at, now, sends = throttle.capacity(rate), T0, T0, []
    ready = T0
    for gap in gaps:
        now += timedelta(seconds=gap)
        if now < ready:
            continue
        tokens = throttle.refill(rate=rate, tokens=tokens, tokens_at=at, now=now)
        taken = throttle.take(tokens, fairqueue.SEND_WINDOW)
        tokens, at = tokens - taken, now
        ready = throttle.ready_at(rate=rate, tokens=tokens, now=now)
        sends += [now] * taken
    for i, first in enumerate(sends):
        for j in range(i, len(sends)):
            span = (sends[j] - first).total_seconds()
            assert j - i + 1 <= rate * span + throttle.capacity(rate) + 1e-6


# --- the order -----------------------------------------------------------------------------
def lane(distribution, brand, sender, lane_served=0, sender_served=0):
    return (
        distribution,
        brand,
        sender,
        T0 + timedelta(seconds=lane_served),
        T0 + timedelta(seconds=sender_served),
    )


def test_round_robin_across_brands_then_senders_one_lane_per_sender():
    ready = [
        # brand 1: two senders; sender 10 has two lanes, the older-served one first
        lane(100, 1, 10, lane_served=5),
        lane(101, 1, 10, lane_served=1),
        lane(102, 1, 11, sender_served=9),
        # brand 2: one sender, served more recently than brand 1
        lane(200, 2, 20),
        # brand 3: never served
        lane(300, 3, 30),
    ]
    turns = {1: T0 + timedelta(seconds=1), 2: T0 + timedelta(seconds=2)}
    order = [item[0] for item in fairqueue.fair_order(ready, turns)]
    # Round one: one lane of each brand, never-served brand first; round two: brand 1's
    # second sender. Lane 100 waits for sender 10's next turn.
    assert order == [300, 101, 200, 102]


# --- the pick ------------------------------------------------------------------------------
def populated(brand, count, *, rate, prefix):
    project = ProjectFactory(brand=brand, stage="active")
    ProviderAccountFactory(brand=brand, provider="outbox", messages_per_second=rate)
    for i in range(count):
        person = PersonFactory(brand=brand, phone=f"+1415{prefix}{i:04d}")
        ParticipantFactory(project=project, person=person)
    distribution = DistributionFactory(project=project, status=Distribution.Status.IN_PROGRESS)
    distribution_materialise(distribution=distribution)
    distribution_enqueue(distribution=distribution)
    return distribution


@pytest.mark.django_db
def test_one_pick_serves_every_brand_and_pays_each_senders_tokens():
    big = populated(BrandFactory(), 30, rate=10, prefix="201")
    small = populated(BrandFactory(), 3, rate=100, prefix="202")
    grants = fairqueue.pick(lease="L1")
    by_distribution = {grant.distribution_id: grant.leased for grant in grants}
    assert by_distribution == {big.pk: 10, small.pk: 3}  # a full bucket each, at most
    assert Message.objects.filter(lease="L1", status=S.SENDING).count() == 13
    sender = Sender.objects.get(brand=big.project.brand)
    assert sender.tokens == 0 and sender.ready_at > timezone.now()
    # The small lane is idle (nothing Pending); the big one waits for its sender.
    assert SendLane.objects.get(pk=small.pk).ready_at is None
    assert fairqueue.pick(lease="L2") == []
    assert fairqueue.next_ready_at() == sender.ready_at


@pytest.mark.django_db
def test_deferred_rows_are_not_picked_before_they_are_due():
    distribution = populated(BrandFactory(), 4, rate=0, prefix="203")
    later = timezone.now() + timedelta(minutes=5)
    Message.objects.filter(distribution=distribution).update(due_at=later)
    SendLane.objects.filter(pk=distribution.pk).update(ready_at=later)
    assert fairqueue.pick(lease="L") == []
    assert fairqueue.next_ready_at() == later
    assert fairqueue.pick(lease="L", now=later) != []
    assert Message.objects.filter(lease="L").count() == 4


@pytest.mark.django_db
def test_a_lane_reopened_keeps_its_earlier_time():
    distribution = populated(BrandFactory(), 2, rate=0, prefix="204")
    first = SendLane.objects.get(pk=distribution.pk).ready_at
    Message.objects.filter(distribution=distribution).update(
        due_at=timezone.now() + timedelta(hours=1)
    )
    distribution_enqueue(distribution=distribution)
    assert SendLane.objects.get(pk=distribution.pk).ready_at == first


@pytest.mark.django_db
def test_kicks_claim_free_slots_once(settings, django_capture_on_commit_callbacks):
    settings.RELAY_SEND_PUMPS = 3
    queued = []
    fairqueue.register_pump_task(type("T", (), {"apply_async": lambda *a, **k: queued.append(k)}))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert fairqueue.pumps_kick() == 3
            assert fairqueue.pumps_kick() == 0  # all queued, none lapsed
    finally:
        from distributions import tasks

        fairqueue.register_pump_task(tasks.send_pump_task)
    assert len(queued) == 3
    assert set(SendPump.objects.values_list("state", flat=True)) == {"queued"}
    # A slot whose claim lapsed (its worker died) is claimed again.
    SendPump.objects.filter(slot=0).update(until=timezone.now() - timedelta(seconds=1))
    assert fairqueue.pumps_kick() == 1


@pytest.mark.django_db
def test_a_big_lane_takes_a_share_of_the_batch_while_another_brand_waits():
    big = populated(BrandFactory(), 300, rate=0, prefix="205")
    assert [g.leased for g in fairqueue.pick(lease="alone")] == [300]  # alone: its window
    Message.objects.filter(lease="alone").update(status=S.PENDING, lease="")
    SendLane.objects.filter(pk=big.pk).update(ready_at=timezone.now())
    small = populated(BrandFactory(), 3, rate=0, prefix="206")
    leased = {g.distribution_id: g.leased for g in fairqueue.pick(lease="shared")}
    assert leased == {big.pk: fairqueue.SHARED_WINDOW, small.pk: 3}


@pytest.mark.django_db
def test_a_slow_senders_window_is_picked_ahead_and_handed_over_at_its_moment(settings):
    settings.RELAY_SEND_PICK_AHEAD_SECONDS = 0.2
    distribution = populated(BrandFactory(), 5, rate=1, prefix="207")
    t = timezone.now() + timedelta(seconds=1)
    first = fairqueue.pick(lease="1", now=t)
    assert [(g.leased, g.not_before) for g in first] == [(1, None)]  # a full bucket: now
    sender_id = first[0].sender_id
    handed = fairqueue.senders_handed_over(senders=[(sender_id, 1)], at=t)
    # Handed over, not answered yet: held, whatever the time (one window at a time).
    assert fairqueue.pick(lease="1b", now=t + timedelta(seconds=1.5)) == []
    answer = t + timedelta(seconds=0.01)
    fairqueue.senders_answered(senders=[(sender_id, handed[sender_id], answer)])
    moment = Sender.objects.get(pk=sender_id).ready_at
    assert answer + timedelta(seconds=1) <= moment < answer + timedelta(seconds=1.05)
    # Half a second later: not yet; within the pick-ahead: picked, to go at its moment.
    assert fairqueue.pick(lease="2", now=t + timedelta(seconds=0.5)) == []
    early = moment - timedelta(seconds=0.15)
    second = fairqueue.pick(lease="3", now=early)
    assert [(g.distribution_id, g.leased) for g in second] == [(distribution.pk, 1)]
    assert abs(second[0].not_before - moment) < timedelta(milliseconds=1)
    # One window at a time: nothing more until this one is handed over and answered.
    assert fairqueue.pick(lease="4", now=early + timedelta(seconds=0.1)) == []
    # Its hand-over, recorded before it waits for its moment, refills from the moment.
    handed = fairqueue.senders_handed_over(senders=[(sender_id, 1)], at=early)
    assert handed[sender_id] == second[0].not_before
    fairqueue.senders_answered(senders=[(sender_id, handed[sender_id], early)])
    next_moment = Sender.objects.get(pk=sender_id).ready_at
    assert next_moment >= moment + timedelta(seconds=1) - timedelta(microseconds=10)


@pytest.mark.django_db
@pytest.mark.parametrize(("rate", "share"), [(1, 0.93), (5, 0.7)])
def test_hand_overs_keep_to_the_bucket_whatever_the_work_between_pick_and_hand_over(
    settings, rate, share
):
    """Pumps pick (ahead), then spend 0–0.3 s on checks and rendering before the hand-over,
    which waits for the window's moment; the provider sees each request before its answer
    (0–30 ms later): what it sees never goes above rate * t + one second of it, and the
    sender keeps close to its rate (without the pick-ahead: 86 % and 52 % here, the work's
    time lost every window)."""
    import random

    settings.RELAY_SEND_PICK_AHEAD_SECONDS = 0.15
    count = 12 * rate
    populated(BrandFactory(), count, rate=rate, prefix="208")
    chance = random.Random(rate)
    t = timezone.now() + timedelta(seconds=1)
    sends: list[datetime] = []
    for step in range(10_000):
        if len(sends) == count:
            break
        grants = fairqueue.pick(lease=f"L{step}", now=t)
        if not grants:
            t += timedelta(seconds=0.01)
            continue
        (grant,) = grants
        prepared = t + timedelta(seconds=chance.uniform(0, 0.3))
        handed = fairqueue.senders_handed_over(senders=[(grant.sender_id, rate)], at=prepared)
        issued = max(prepared, grant.not_before or prepared)
        answered = issued + timedelta(seconds=chance.uniform(0, 0.03))
        fairqueue.senders_answered(senders=[(grant.sender_id, handed[grant.sender_id], answered)])
        # The provider sees each request at some moment between its issue and its answer.
        sends += [issued + (answered - issued) * chance.random() for _ in range(grant.leased)]
        t = answered + timedelta(seconds=0.01)
    assert len(sends) == count
    sends.sort()
    for i, first in enumerate(sends):
        for j in range(i, len(sends)):
            span = (sends[j] - first).total_seconds()
            assert j - i + 1 <= rate * span + throttle.capacity(rate) + 1e-6
    achieved = (len(sends) - throttle.capacity(rate)) / (sends[-1] - sends[0]).total_seconds()
    assert achieved >= share * rate


@contextlib.contextmanager
def another_pump_holding(lanes: list[int], *, limit: int):
    """Another pump mid-pick (its own connection, in a thread): it holds the first ``limit``
    of ``lanes`` (in that order) until the block ends. Yields the ids it holds."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL only (SQLite has one writer at a time)")
    holding, release, held = threading.Event(), threading.Event(), set()

    def other_pump():
        try:
            with transaction.atomic():
                held.update(fairqueue._lock(lanes, timezone.now(), limit=limit))
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_pump)
    thread.start()
    try:
        assert holding.wait(10)
        yield held
    finally:
        release.set()
        thread.join(10)


def slot_queued(slot: int, *, ticket: str) -> None:
    """Pump slot ``slot`` queued for a pump holding ``ticket`` (as a kick leaves it)."""
    SendPump.objects.update_or_create(
        slot=slot,
        defaults={
            "ticket": ticket,
            "state": SendPump.State.QUEUED,
            "until": timezone.now() + timedelta(seconds=10),
        },
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_pumps_picking_at_once_share_the_ready_lanes():
    """A pick takes the lanes in fair order that no other pick holds: a second pump picking
    while the first is mid-pick gets the next lanes in turn, not nothing (it went idle and
    left every sender to the first)."""
    lanes = [populated(BrandFactory(), 2, rate=1, prefix=f"3{i:02d}").pk for i in range(4)]
    with another_pump_holding(lanes, limit=2) as first:
        grants = fairqueue.pick(lease="second", max_lanes=2)
    second = {grant.distribution_id for grant in grants}
    assert len(first) == 2 and len(second) == 2
    assert first | second == set(lanes)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pump_finding_every_ready_lane_held_sleeps_briefly_not_idle(monkeypatch):
    """Ready lanes that another pump holds are looked at again shortly (asleep in the
    broker): gone idle, this slot waited for the next kick while the other pump served every
    sender alone."""
    from distributions import pump

    lanes = [populated(BrandFactory(), 2, rate=1, prefix=f"4{i:02d}").pk for i in range(2)]
    slot_queued(0, ticket="mine")
    queued = []
    monkeypatch.setattr(pump, "pumps_queue", lambda claimed, eta=None: queued.append(eta))
    with another_pump_holding(lanes, limit=10):
        outcome = pump.pump_run(slot=0, ticket="mine")
        returned = timezone.now()
    assert outcome["batches"] == 0 and "sleeping_until" in outcome
    slot = SendPump.objects.get(slot=0)
    assert slot.state == SendPump.State.SLEEPING
    assert queued == [slot.until]
    assert slot.until <= returned + timedelta(seconds=pump.BUSY_SLEEP_SECONDS)


def due_in(distribution, seconds: float) -> datetime:
    """Its sender (1 message/s) holds its next token in ``seconds``; returns that moment."""
    moment = timezone.now() + timedelta(seconds=seconds)
    Sender.objects.filter(brand=distribution.project.brand).update(
        tokens=0.0, tokens_at=moment - timedelta(seconds=1), ready_at=moment
    )
    return moment


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_pump_gathers_slow_senders_windows_into_one_batch(settings, monkeypatch):
    """A pump picks when a window is due within the pick lead (half the pick-ahead), and then
    takes every window due within the pick-ahead. Here the first long code's window is within
    the pick-ahead, the second's 0.3 s after it: a pump that picked whatever was within the
    pick-ahead took the first alone, and the second in a batch of its own (with 200 long
    codes, batches of one or two windows); now both go in one batch, whenever it is picked."""
    from distributions import pump
    from distributions.providers.registry import providers_warm

    settings.RELAY_SEND_PICK_AHEAD_SECONDS = 1.0  # the lead: 0.5 s
    first = populated(BrandFactory(), 2, rate=1, prefix="501")
    second = populated(BrandFactory(), 2, rate=1, prefix="502")
    slot_queued(0, ticket="mine")
    monkeypatch.setattr(pump, "pumps_queue", lambda claimed, eta=None: None)
    monkeypatch.setattr(pump, "PUMP_SLICE_SECONDS", 0.0)  # a batch a slice, at most
    providers_warm()
    moment = due_in(first, 0.75)  # within the pick-ahead, not within the lead
    due_in(second, 1.05)
    stats, slices = [], 0
    while Message.objects.filter(status=S.PENDING).exists():
        slices += 1
        assert slices < 100, stats
        outcome = pump.pump_run(slot=0, ticket="mine")
        stats.append(outcome)
        if outcome.get("sleeping_until"):
            wake = datetime.fromisoformat(outcome["sleeping_until"])
            time.sleep(max(0.0, (wake - timezone.now()).total_seconds()))
    batches = [s for s in stats if s["batches"]]
    # The first batch: both senders' windows, picked no sooner than the first one's lead.
    assert (batches[0]["batches"], batches[0]["lanes"]) == (1, 2), stats
    if not stats[0]["batches"]:
        assert datetime.fromisoformat(stats[0]["sleeping_until"]) >= moment - fairqueue.pick_lead()
    assert sum(s["sent"] for s in stats) == 4
