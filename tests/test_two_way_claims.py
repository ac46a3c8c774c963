"""Two appliers claiming pending replies at once (``conversations.replies._claim``: the rows
locked by the batch's transaction): rows another applier holds are skipped, not waited for
and not taken twice; a number's later reply waits while another applier holds an earlier
one; and a claim costs the same however long the backlog it drains. Real threads, real
connections, on PostgreSQL (row locks)."""

from __future__ import annotations

import threading

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

import pytest

from conversations.models import Session
from conversations.replies import (
    Pending,
    _claim,
    _in_order,
    replies_apply,
    replies_apply_batch,
)
from optouts.models import InboundMessage
from tests.test_two_way import survey  # noqa: F401 - a fixture
from tests.test_two_way_replies import answers_of, pending, sent, store  # noqa: F401

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has neither row locks nor this planner: one writer at a time")


def backlog(brand, count: int, *, first: int = 0) -> list[int]:
    """``count`` pending replies to ``brand``, from numbers ``first``, ``first`` + 1...:
    their ids, in received order."""
    rows = InboundMessage.objects.bulk_create(
        InboundMessage(
            brand=brand,
            provider_sid=f"SM{k:032d}",
            from_number=f"+1415{k:07d}",
            to_number="+15005550006",
            body="1",
            apply_state=Pending.PENDING,
        )
        for k in range(first, first + count)
    )
    return [row.pk for row in rows]


def claim(size: int) -> list[int]:
    """The ids a batch of ``size`` would take now (its transaction then ends: released)."""
    with transaction.atomic():
        return [row.pk for row in _claim(size)]


def holding(ids: list[int]):
    """Another applier, in a thread, holding rows ``ids`` (as in the middle of its batch)
    until the returned ``release`` is called."""
    locked, done = threading.Event(), threading.Event()

    def other_applier():
        try:
            with transaction.atomic():
                list(InboundMessage.objects.filter(pk__in=ids).select_for_update())
                locked.set()
                done.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_applier)
    thread.start()
    assert locked.wait(timeout=30)

    def release():
        done.set()
        thread.join(timeout=30)

    return release


def test_a_claim_skips_the_rows_another_applier_holds(tenancy):
    ids = backlog(tenancy.brand_a, 6)
    release = holding(ids[:3])
    try:
        assert claim(3) == ids[3:]  # would block on the held rows without SKIP LOCKED
    finally:
        release()
    # Released, every row is free again: a claim writes nothing, it only locks.
    assert claim(10) == ids


def test_a_later_reply_waits_while_another_applier_holds_an_earlier_one(
    sent,  # noqa: F811 - a fixture
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    from conversations import replies

    monkeypatch.setattr(replies, "task_queue", lambda *a, **kw: None)  # no applier kicked
    brand = sent.brand_a
    first = store(brand, sent.ada, "1", sid="SM1").inbound
    store(brand, sent.ada, "7", sid="SM2")
    store(brand, sent.bob, "1", sid="SM3")
    release = holding([first.pk])  # another worker is applying Ada's first reply
    try:
        with django_capture_on_commit_callbacks(execute=True):
            stats = replies_apply_batch()
        assert (stats["claimed"], stats["applied"], stats["released"]) == (2, 1, 1)
        assert Session.objects.get(address=sent.bob).position == 2
        assert not Session.objects.filter(address=sent.ada).exists()  # "7" not applied first
        assert len(pending()) == 2
    finally:
        release()  # that worker died: its transaction rolled back, its lock gone at once
    with django_capture_on_commit_callbacks(execute=True):
        replies_apply()
    assert answers_of(sent.ada) == ["Web", 7]
    assert Session.objects.get(address=sent.ada).position == 3
    assert not pending()


@pytest.mark.parametrize("analyzed", ["with nothing pending", "with everything pending"])
def test_a_claim_reads_only_its_batch_whatever_the_backlog(tenancy, analyzed):
    """Each statement of a claim reads only the rows it takes (and one probe a brand),
    however many replies are pending and whatever statistics the planner has. Its old forms
    did not: an UPDATE of ``pk IN (SELECT ... LIMIT n)``, planned on statistics taken while
    few replies were pending, ran that subquery again for every pending row (80 ms a claim
    at 2,000 pending); a skip scan over the brands read the whole backlog by the index of
    pending ids and sorted it."""
    backlog(tenancy.brand_a, 2_000)
    backlog(tenancy.brand_b, 2_000, first=2_000)
    if analyzed == "with nothing pending":
        InboundMessage.objects.update(apply_state=Pending.APPLIED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE optouts_inboundmessage")
    InboundMessage.objects.update(apply_state=Pending.PENDING)
    with CaptureQueriesContext(connection) as statements, transaction.atomic():
        claimed = _claim(40)
        assert len(claimed) == 40
        assert _in_order(claimed) == (claimed, [])
    work = [q["sql"] for q in statements if q["sql"].lstrip().startswith(("SELECT", "UPDATE"))]
    assert len(work) == 3 and work[1].rstrip().endswith("ORDER BY id"), work
    for sql in work:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql)
                plan = cursor.fetchone()[0][0]["Plan"]
            transaction.set_rollback(True)
        scans = _scans(plan, "optouts_inboundmessage")
        assert "Seq Scan" not in {node["Node Type"] for node in scans}, (sql, plan)
        # Read: at most a batch of each brand's rows (the count stops at a batch).
        assert sum(node["Actual Rows"] * node["Actual Loops"] for node in scans) <= 2 * 40, (
            sql,
            plan,
        )


def _scans(node: dict, table: str) -> list[dict]:
    """The plan's (JSON) nodes that read ``table``."""
    here = [node] if node.get("Relation Name") == table else []
    return here + [scan for child in node.get("Plans", []) for scan in _scans(child, table)]
