"""Two brands share one worker: neither a big distribution nor a slow sender holds back the
other brand, and no sender goes above its rate. Integration: real Redis broker, real Celery
worker processes, PostgreSQL."""

from __future__ import annotations

import time

from django.core.exceptions import ValidationError

import pytest

from brands.models import Brand
from distributions import fairqueue
from distributions.models import Distribution, Message, ProviderAccount
from distributions.services import distribution_cancel, distribution_create
from participants.models import Participant, Person
from tests.factories.projects import ProjectFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def populate(project, count: int, prefix: str) -> None:
    people = Person.objects.bulk_create(
        [
            Person(
                brand=project.brand,
                person_id=f"{prefix}{i}",
                first_name=f"N{i}",
                phone=f"+1{prefix}{i:07d}",
            )
            for i in range(count)
        ],
        batch_size=1000,
    )
    Participant.objects.bulk_create(
        [Participant(project=project, person=person) for person in people], batch_size=1000
    )


def populate_sql(project, count: int, prefix: str) -> None:
    """Many participants at once, set-based (PostgreSQL: the integration tests' database)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO participants_person (brand_id, person_id, first_name, last_name, email,
                username, phone, metadata, created_at, updated_at)
            SELECT %s, %s || g, 'N' || g, '', '', '', '+1' || %s || lpad(g::text, 7, '0'),
                '{}'::jsonb, now(), now()
            FROM generate_series(1, %s) g
            """,
            [project.brand_id, prefix, prefix, count],
        )
        cursor.execute(
            """
            INSERT INTO participants_participant (project_id, person_id, role, metadata,
                created_at, updated_at)
            SELECT %s, id, '', '{}'::jsonb, now(), now() FROM participants_person
            WHERE brand_id = %s AND person_id LIKE %s
            """,
            [project.pk, project.brand_id, prefix + "%"],
        )
        cursor.execute("ANALYZE participants_person, participants_participant")


def start_workers(start_worker):
    """The workers as production runs them (Procfile.dev, docker-compose.yml): two pumps on
    the ``send`` queue, and the ``control`` queue (starting a distribution, its recovery) on a
    worker of its own. Returns the send worker. (With one worker for both queues, A's two
    pumps held both of its slots and B's start waited for a pump's slice, PUMP_SLICE_SECONDS:
    on a fast machine A's 30,000 were all handed over by then.)"""
    pumps = {"RELAY_SEND_PUMPS": "2"}  # what every process that kicks pumps is told
    start_worker(concurrency=1, queues="control", extra_env=pumps)
    return start_worker(concurrency=2, queues="send", extra_env=pumps)


def wait_for_progress(measure, done, *, stall: float = 60.0, every: float = 0.1):
    """Poll ``measure()`` until ``done(value)``; fail only when it stops moving for
    ``stall`` seconds (a busy machine is slow, not wrong)."""
    last, moved = measure(), time.monotonic()
    while not done(last):
        time.sleep(every)
        value = measure()
        if value != last:
            last, moved = value, time.monotonic()
        elif time.monotonic() - moved > stall:
            raise AssertionError(f"no progress for {stall:.0f} s (at {last!r})")
    return last


def conforms(times: list, rate: float, burst: float, jitter: float) -> bool:
    """Over any interval of t seconds at most rate * t + burst sends (``jitter`` seconds of
    slack for when each was recorded)."""
    times = sorted(times)
    for i, first in enumerate(times):
        for j in range(i + 1, len(times)):
            span = (times[j] - first).total_seconds()
            if j - i + 1 > rate * (span + jitter) + burst:
                return False
    return True


def test_a_slow_senders_big_send_never_holds_back_another_brand(start_worker, tenancy):
    brand_a, brand_b = tenancy.brand_a, tenancy.brand_b
    for brand, rate in ((brand_a, 5), (brand_b, 100)):
        Brand.objects.filter(pk=brand.pk).update(integration_model="self_service")
        ProviderAccount.objects.create(brand=brand, provider="outbox", messages_per_second=rate)
    project_a = ProjectFactory(brand=brand_a, stage="active")
    project_b = ProjectFactory(brand=brand_b, stage="active")
    populate(project_a, 3000, "415200")
    worker = start_workers(start_worker)

    big = distribution_create(project=project_a, message="Hi ${first_name}")
    sent_a = Message.objects.filter(
        distribution__project=project_a, status__in=["sent", "delivered"]
    )
    wait_for_progress(sent_a.count, lambda n: n >= 10)

    waits = []
    for round_ in range(3):
        project = ProjectFactory(brand=brand_b, stage="active") if round_ else project_b
        populate(project, 5, f"41530{round_}")
        small = distribution_create(project=project, message="Quick ${first_name}")
        handed = Message.objects.filter(distribution=small, sent_at__isnull=False)
        wait_for_progress(handed.count, lambda n: n >= 5)
        small.refresh_from_db()
        last = max(handed.values_list("sent_at", flat=True))
        waits.append((last - small.started_at).total_seconds())
    # Every one of B's messages was handed over within 5 s of its distribution starting,
    # while A's 3,000 wait for a 5 messages/s sender.
    assert max(waits) < 5, waits
    assert Message.objects.filter(distribution=big, status="pending").count() > 2000

    # A's sender never went above its rate: a full bucket of 5, then 5 a second. A row's
    # lease is refreshed just before its hand-over: that is when it left for the provider
    # (a batch's rendering and bookkeeping move it by a fraction of a second).
    times = list(
        Message.objects.filter(distribution=big, sent_at__isnull=False).values_list(
            "leased_at", flat=True
        )
    )
    assert len(times) >= 10 and conforms(times, rate=5, burst=5, jitter=0.25), " ".join(
        [worker.output()]
        + [
            f"{m.leased_at:%S.%f}/{m.lease[:4]}"
            for m in Message.objects.filter(distribution=big, sent_at__isnull=False).order_by(
                "leased_at"
            )
        ]
    )
    distribution_cancel(distribution=big)
    big.refresh_from_db()
    assert big.status == Distribution.Status.INTERRUPTED


def test_a_big_fast_send_never_holds_back_another_brand(start_worker, tenancy):
    brand_a, brand_b = tenancy.brand_a, tenancy.brand_b
    for brand in (brand_a, brand_b):
        Brand.objects.filter(pk=brand.pk).update(integration_model="self_service")
        ProviderAccount.objects.create(brand=brand, provider="outbox", messages_per_second=0)
    project_a = ProjectFactory(brand=brand_a, stage="active")
    project_b = ProjectFactory(brand=brand_b, stage="active")
    populate_sql(project_a, 30_000, "415210")
    populate(project_b, 10, "415310")
    worker = start_workers(start_worker)

    big = distribution_create(project=project_a, message="Hi ${first_name}")
    sent_a = Message.objects.filter(distribution=big, sent_at__isnull=False)
    try:
        wait_for_progress(sent_a.count, lambda n: n >= 1000)
    except AssertionError as exc:
        from django.db.models import Count

        counts = list(big.messages.values("status", "status_reason").annotate(n=Count("pk")))
        big.refresh_from_db()
        raise AssertionError(f"{big.status_reason} {counts} {worker.output()[-1500:]}") from exc
    small = distribution_create(project=project_b, message="Quick ${first_name}")
    handed = Message.objects.filter(distribution=small, sent_at__isnull=False)
    wait_for_progress(handed.count, lambda n: n >= 10)
    small.refresh_from_db()
    last = max(handed.values_list("sent_at", flat=True))
    # B did not queue behind A: from B's start to its last hand-over, A handed over at most
    # the batches already in flight (two pumps, a window each) and a share of the next ones,
    # not its 29,000 others. Counted in A's messages, not seconds: a busy machine slows both.
    a_meanwhile = sent_a.filter(sent_at__gt=small.started_at, sent_at__lte=last).count()
    assert a_meanwhile <= 4 * fairqueue.SEND_WINDOW, (a_meanwhile, worker.output())
    # B went out while A was still sending, not after it: A handed over more after B's last.
    # (Not "A still has pending rows when the test looks": on a fast machine A's 29,000 others
    # can all be sent between B's last hand-over and that look.)
    after_b = sent_a.filter(sent_at__gt=last)
    wait_for_progress(after_b.count, lambda n: n > 0)
    # Stop A's remaining rows (it may have finished meanwhile on a fast machine: nothing to stop).
    big.refresh_from_db()
    if big.status == Distribution.Status.IN_PROGRESS:
        try:
            distribution_cancel(distribution=big)
        except ValidationError:
            big.refresh_from_db()
            assert big.status == Distribution.Status.SENT, big.status
