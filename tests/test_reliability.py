"""Reliability through real parts: Redis broker, real Celery worker processes, PostgreSQL (or
SQLite), the real twilio SDK against the fake server. Integration: needs REDIS_URL."""

import math
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

from django.conf import settings
from django.utils import timezone

import pytest

from distributions.models import Distribution, Message, OutboxMessage, ProviderAccount
from distributions.sending import distributions_recover
from distributions.services import distribution_create, distribution_materialise
from distributions.tasks import distribution_start_task
from participants.models import Participant, Person
from tests.fake_twilio import FakeTwilio
from tests.progress import KillClock, until, wait_for_progress, wait_until_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
SENDER = "+15005550006"


def populate(project, count: int) -> list[str]:
    phones = [f"+1415{2000000 + i:07d}" for i in range(count)]
    people = Person.objects.bulk_create(
        [
            Person(brand=project.brand, person_id=f"R{i}", first_name=f"N{i}", phone=phone)
            for i, phone in enumerate(phones)
        ],
        batch_size=1000,
    )
    Participant.objects.bulk_create(
        [Participant(project=project, person=person) for person in people], batch_size=1000
    )
    return phones


def test_worker_killed_mid_distribution_sends_each_message_exactly_once(start_worker, tenancy):
    """SIGKILL a worker mid-send, with the production lease and provider timeout: every
    message reaches the provider exactly once, and the distribution finishes within its
    sending time plus 30 s (the dead worker's rows are settled one lease after it died)."""
    project = tenancy.project_a
    tenancy.participant_a.delete()
    phones = populate(project, 3000)
    with FakeTwilio(callbacks=False) as fake:
        fake.set_latency(0.01)
        ProviderAccount.objects.create(
            brand=tenancy.brand_a,
            provider="twilio",
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            default_sender=SENDER,
            messages_per_second=5000,
        )
        env = {"TWILIO_API_BASE_URL": fake.base_url}
        worker = start_worker(concurrency=2, extra_env=env)
        distribution = distribution_create(project=project, message="Hello ${first_name}")

        clock = KillClock(lambda: fake.counters()["accepted"])
        wait_for_progress(clock.measure, lambda n: n >= 1000, describe=worker.output)
        worker.kill(signal.SIGKILL)
        killed_at = clock.killed(distribution)
        assert killed_at < 3000, "the distribution finished before the worker could be killed"

        worker = start_worker(concurrency=2, extra_env=env)
        # The rows the dead worker held are settled (reconciled with the provider's list) and
        # sending resumes within 30 s of the new worker.
        clock.wait_recovered(ready=time.monotonic(), describe=worker.output)
        wait_until_finished(distribution, describe=worker.output)
        assert distribution.status == Distribution.Status.SENT, distribution.status_reason
        per_number = {}
        for message in fake.messages:
            per_number[message["to"]] = per_number.get(message["to"], 0) + 1
        assert len(per_number) == 3000
        duplicates = {number: n for number, n in per_number.items() if n != 1}
        assert duplicates == {}
        assert set(per_number) == set(phones)
        rows = Message.objects.filter(distribution=distribution)
        assert rows.filter(status=Message.Status.SENT).count() == 3000
        assert rows.filter(provider_id="").count() == 0
        assert len(set(rows.values_list("provider_id", flat=True))) == 3000


def held_rows(project, lapses: dict[str, float]) -> tuple[Distribution, Callable[[str], int]]:
    """An in-progress distribution of 40 people whose rows a dead worker holds: one lease a
    group, named and lapsing at ``lapses`` (Unix times); and how many of a group are held."""
    populate(project, 40)
    distribution = Distribution.objects.create(
        project=project,
        message="Hello ${first_name}",
        send_at=timezone.now(),
        status=Distribution.Status.IN_PROGRESS,
    )
    distribution_materialise(distribution=distribution)
    rows = list(distribution.messages.order_by("pk").values_list("pk", flat=True))
    size = len(rows) // len(lapses)
    for i, (name, lapse) in enumerate(lapses.items()):
        Message.objects.filter(pk__in=rows[i * size : (i + 1) * size]).update(
            status=Message.Status.SENDING,
            lease=f"dead-{name}",
            leased_at=datetime.fromtimestamp(lapse - settings.RELAY_SEND_LEASE_SECONDS, UTC),
        )

    def held(name: str) -> int:
        return Message.objects.filter(
            distribution=distribution, status=Message.Status.SENDING, lease=f"dead-{name}"
        ).count()

    return distribution, held


def assert_taken_back_as_they_lapse(distribution, held, lapses: dict[str, float]) -> None:
    """Every group is taken back, the last one by the recovery run asked for its lapse
    (0.5-1.5 s after it), not by a safety net seconds later (beat's 5 s period, a pump
    slot's 10 s lapse, the broker's visibility timeout); then the distribution finishes."""
    last = max(lapses, key=lapses.get)
    until(lambda: held(last) == 0, progress=lambda: [held(name) for name in lapses])
    late_by = time.time() - lapses[last]
    assert [held(name) for name in lapses] == [0] * len(lapses)
    assert late_by < 5.0, f"the rows were taken back {late_by:.1f} s after their lease lapsed"
    wait_until_finished(distribution)
    assert distribution.status == Distribution.Status.SENT
    assert OutboxMessage.objects.filter(brand=distribution.project.brand).count() == 40


def test_leases_lapsing_within_one_second_are_all_taken_back_as_they_lapse(start_worker, tenancy):
    """A dead worker's rows whose leases lapse in the same second, the later ones just after
    the recovery run that the earlier ones asked for: they are taken back as they lapse too
    (CI on 092ed93 waited 10.5 s for them, and so took 30.1 s to recover from a kill)."""
    tenancy.participant_a.delete()
    start_worker(concurrency=2)
    # Both lapse within the second ``at`` (2-3 s from now): one as it starts, one near its end.
    at = math.floor(time.time()) + 3
    lapses = {"early": at + 0.02, "late": at + 0.95}
    distribution, held = held_rows(tenancy.project_a, lapses)
    # What a worker's start does after a death: recovery, suspecting every lease so far.
    distributions_recover(suspect_before=time.time())
    assert_taken_back_as_they_lapse(distribution, held, lapses)


def test_a_recovery_run_held_by_a_killed_worker_is_asked_for_again(start_worker, tenancy):
    """Recovery asked for a run at a lease's lapse, and the worker holding that run (a
    countdown task) was killed: its replacement asks again and the rows are taken back as
    they lapse, not when the broker gives the dead worker's task back."""
    tenancy.participant_a.delete()
    worker = start_worker(concurrency=1)
    lapses = {"dead": time.time() + 8}
    distribution, held = held_rows(tenancy.project_a, lapses)

    def received() -> int:
        return len(re.findall(r"distributions_recover_task\[[^]]+\] received", worker.output()))

    before = received()
    distributions_recover(suspect_before=time.time())
    wait_for_progress(received, lambda count: count > before, describe=worker.output)
    worker.kill(signal.SIGKILL)
    start_worker(concurrency=1)
    assert_taken_back_as_they_lapse(distribution, held, lapses)


def test_racing_dispatchers_start_a_distribution_once(start_worker, tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    populate(project, 300)
    start_worker(concurrency=2)
    start_worker(concurrency=2)
    distribution = Distribution.objects.create(
        project=project, message="Once ${first_name}", send_at=timezone.now()
    )
    results = [distribution_start_task.delay(distribution.pk) for _ in range(8)]
    outcomes = [result.get(timeout=60) for result in results]
    assert sum(1 for outcome in outcomes if outcome["started"]) == 1

    wait_until_finished(distribution)
    assert distribution.status == Distribution.Status.SENT
    assert Message.objects.filter(distribution=distribution).count() == 300
    assert OutboxMessage.objects.filter(brand=tenancy.brand_a).count() == 300
    assert OutboxMessage.objects.values("to").distinct().count() == 300
