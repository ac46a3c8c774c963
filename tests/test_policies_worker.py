"""Quiet hours end to end with a real worker: recipients in three time zones, quiet hours
covering now in one of them (ending a minute or two from now). The other two receive it now,
the third when its quiet hours end, each exactly once, and the distribution ends Sent only
after the last one. Integration: real Redis broker, real Celery worker, PostgreSQL."""

from __future__ import annotations

from datetime import UTC, timedelta

from django.db.models import Count
from django.utils import timezone

import pytest

from brands.models import Brand
from distributions.models import Distribution, Message, OutboxMessage, ProviderAccount
from distributions.services import distribution_create
from participants.models import Participant, Person
from tests.factories.projects import ProjectFactory
from tests.progress import distribution_progress, wait_for_progress

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The quiet hours end this long after the test sets them: waiting for them is not a stall.
QUIET_SECONDS = 45
QUIET_WAIT_STALL = QUIET_SECONDS + 60.0


def test_quiet_hours_hold_one_zone_until_its_window_and_send_everyone_once(start_worker, tenancy):
    # The worker first: the quiet hours end QUIET_SECONDS after the distribution is created
    # (quiet hours are kept to the second), however long a busy machine takes to start it.
    worker = start_worker(concurrency=2, extra_env={"RELAY_SEND_PUMPS": "2"})
    now = timezone.now().astimezone(UTC)
    quiet_end = (now + timedelta(seconds=QUIET_SECONDS)).replace(microsecond=0)
    brand = tenancy.brand_a
    Brand.objects.filter(pk=brand.pk).update(
        integration_model="self_service",
        time_zone="UTC",
        quiet_hours_sms=True,
        quiet_hours_start=(now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        quiet_hours_end=quiet_end.time(),
    )
    ProviderAccount.objects.create(brand=brand, provider="outbox", messages_per_second=50)
    project = ProjectFactory(brand=brand, stage="active")
    zones = {
        "utc": ("UTC", ["+447911000001", "+447911000002"]),  # the person's own zone wins
        "tokyo": ("Asia/Tokyo", ["+819012340001", "+819012340002"]),
        "ny": ("", ["+12125550101", "+12125550102"]),  # from the phone number: New York
    }
    for name, (zone, phones) in zones.items():
        for index, phone in enumerate(phones):
            person = Person.objects.create(
                brand=brand, person_id=f"{name}{index}", phone=phone, time_zone=zone
            )
            Participant.objects.create(project=project, person=person)

    distribution = distribution_create(project=project, message="Hi ${first_name}")
    rows = Message.objects.filter(distribution=distribution)

    def describe() -> str:
        return f"{list(rows.values_list('address', 'status', 'due_at'))}\n{worker.output()}"

    # The two zones outside their quiet hours receive it now; the third waits.
    early = [*zones["tokyo"][1], *zones["ny"][1]]
    wait_for_progress(
        lambda: rows.filter(address__in=early, sent_at__isnull=False).count(),
        lambda n: n == len(early),
        describe=describe,
    )
    held = rows.filter(address__in=zones["utc"][1])
    assert list(held.values_list("status", flat=True)) == ["pending", "pending"], describe()
    assert all(due == quiet_end for due in held.values_list("due_at", flat=True))
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.IN_PROGRESS

    final = wait_for_progress(
        lambda: distribution_progress(distribution),
        lambda progress: progress[0] in Distribution.FINISHED,
        stall=QUIET_WAIT_STALL,
        describe=describe,
    )
    assert final[0] == Distribution.Status.SENT, describe()
    for row in rows:
        if row.address in early:
            assert row.sent_at < quiet_end, describe()
        else:
            assert row.sent_at >= quiet_end, describe()
    # Each exactly once: one outbox message per number, one hand-over per row.
    per_number = dict(
        OutboxMessage.objects.filter(brand=brand)
        .values_list("to")
        .annotate(n=Count("pk"))
        .order_by()
    )
    assert per_number == {phone: 1 for _, phones in zones.values() for phone in phones}
