"""Two appliers claiming pending replies at once (``conversations.replies._claim``): rows
another applier is claiming are skipped, not waited for and not taken twice; and a claim
costs the same however long the backlog it drains. Real threads, real connections, on
PostgreSQL (row locks)."""

from __future__ import annotations

import threading

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import pytest

from conversations.replies import Pending, _claim
from optouts.models import InboundMessage

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has neither row locks nor this planner: one writer at a time")


def backlog(brand, count: int) -> list[int]:
    rows = InboundMessage.objects.bulk_create(
        InboundMessage(
            brand=brand,
            provider_sid=f"SM{k:032d}",
            from_number=f"+1415555{k:04d}",
            to_number="+15005550006",
            body="1",
            apply_state=Pending.PENDING,
        )
        for k in range(count)
    )
    return [row.pk for row in rows]


def claimed(token: str) -> list[int]:
    return list(
        InboundMessage.objects.filter(claim=token).order_by("pk").values_list("pk", flat=True)
    )


def test_a_claim_skips_the_rows_another_applier_is_claiming(tenancy):
    ids = backlog(tenancy.brand_a, 6)
    locked, release = threading.Event(), threading.Event()

    def other_applier():
        """Holds the three oldest rows, as an applier between its read and its UPDATE."""
        try:
            with transaction.atomic():
                list(InboundMessage.objects.filter(pk__in=ids[:3]).select_for_update())
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_applier)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        token = _claim(3, timezone.now())  # would block on the held rows without SKIP LOCKED
        assert claimed(token) == ids[3:]
    finally:
        release.set()
        thread.join(timeout=30)
    # Released, the oldest rows go to the next claim; nothing is claimed twice.
    assert claimed(_claim(10, timezone.now())) == ids[:3]


def test_a_claim_reads_only_its_batch_whatever_the_backlog(tenancy):
    """Each statement of a claim scans once, however many replies are pending and whatever
    statistics the planner has. Its old form (an UPDATE of ``pk IN (SELECT ... LIMIT n)``),
    planned on statistics taken while few replies were pending, ran that subquery again for
    every pending row: 80 ms a claim at 2,000 pending."""
    backlog(tenancy.brand_a, 2_000)
    InboundMessage.objects.update(apply_state=Pending.APPLIED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE optouts_inboundmessage")  # planned as if nothing was pending
    InboundMessage.objects.update(apply_state=Pending.PENDING)
    with CaptureQueriesContext(connection) as statements:
        token = _claim(40, timezone.now())
    assert len(claimed(token)) == 40
    work = [q["sql"] for q in statements if q["sql"].startswith(("SELECT", "UPDATE"))]
    assert len(work) == 2
    for sql in work:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
                plan = cursor.fetchone()[0][0]["Plan"]
            transaction.set_rollback(True)
        assert max(_loops(plan)) == 1, (sql, plan)


def _loops(node: dict) -> list[int]:
    """The loops of each node of a plan (JSON)."""
    return [node.get("Actual Loops", 1)] + [
        loops for child in node.get("Plans", []) for loops in _loops(child)
    ]
