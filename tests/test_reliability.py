"""Reliability through real parts: Redis broker, real Celery worker processes, PostgreSQL (or
SQLite), the real twilio SDK against the fake server. Integration: needs REDIS_URL."""

import signal
import time

from django.utils import timezone

import pytest

from distributions.models import Distribution, Message, OutboxMessage, ProviderAccount
from distributions.services import distribution_create
from distributions.tasks import distribution_start_task
from participants.models import Participant, Person
from tests.fake_twilio import FakeTwilio
from tests.progress import KillClock, wait_for_progress, wait_until_finished

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
