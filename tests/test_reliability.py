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


def wait_until(predicate, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def test_worker_killed_mid_distribution_sends_each_message_exactly_once(start_worker, tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    phones = populate(project, 5000)
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
        env = {
            "TWILIO_API_BASE_URL": fake.base_url,
            "RELAY_SEND_LEASE_SECONDS": "4",
            "CELERY_VISIBILITY_TIMEOUT": "8",
        }
        worker = start_worker(concurrency=2, extra_env=env)
        distribution = distribution_create(project=project, message="Hello ${first_name}")

        assert wait_until(lambda: fake.stats()["accepted"] >= 1200, timeout=60), worker.output()
        worker.kill(signal.SIGKILL)
        killed_at = fake.stats()["accepted"]
        assert killed_at < 5000, "the distribution finished before the worker could be killed"

        start_worker(concurrency=2, extra_env=env)

        def finished():
            distribution.refresh_from_db()
            return distribution.is_finished

        assert wait_until(finished, timeout=120, every=0.5), distribution.status
        assert distribution.status == Distribution.Status.SENT, distribution.status_reason
        per_number = {}
        for message in fake.messages:
            per_number[message["to"]] = per_number.get(message["to"], 0) + 1
        assert len(per_number) == 5000
        duplicates = {number: n for number, n in per_number.items() if n != 1}
        assert duplicates == {}
        assert set(per_number) == set(phones)
        rows = Message.objects.filter(distribution=distribution)
        assert rows.filter(status=Message.Status.SENT).count() == 5000
        assert rows.filter(provider_id="").count() == 0
        assert len(set(rows.values_list("provider_id", flat=True))) == 5000


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

    def finished():
        distribution.refresh_from_db()
        return distribution.is_finished

    assert wait_until(finished, timeout=60)
    assert distribution.status == Distribution.Status.SENT
    assert Message.objects.filter(distribution=distribution).count() == 300
    assert OutboxMessage.objects.filter(brand=tenancy.brand_a).count() == 300
    assert OutboxMessage.objects.values("to").distinct().count() == 300
