"""Applying stored replies to their conversations, in a worker (docs/two-way.md, "The
conversation"): the webhook stores a reply *pending* in one INSERT and answers the provider
at once; ``replies_apply`` takes the pending replies in batches and applies each with
``conversations.services`` (the same matching, answers, expiry, consent and keywords as
before the reply left the request).

What callers can rely on:
- a reply is applied once: a batch is one transaction, which claims its replies by locking
  their rows (``FOR UPDATE SKIP LOCKED``: another applier skips them, never waits for them)
  and marks each applied by a conditional UPDATE (still pending) before it commits; a
  worker that dies mid-batch leaves its replies pending and free at once (its transaction
  rolled back, its locks gone), and the next run applies them;
- the replies of one number are applied in received order (the order they were stored),
  never two at once: a batch applies a number's replies only when no earlier pending reply
  of that number is outside it (another applier's); it leaves the others for the run that
  follows;
- a reply whose kick was lost is taken by the periodic run (``replies_apply_task`` in the
  beat schedule);
- the texts the batch records (next questions, corrections...) and its replies to debit are
  handed to the send task in one publish per batch, after commit;
- kicking the applier costs a Redis ``SET NX`` (``core.flags``) and one publish when no
  applier is draining, not one per reply; a process that has just seen the kick standing
  trusts it for ``KICK_TRUSTED_SECONDS`` (no Redis call), and an applier that runs dry takes
  a last look that long after it cleared the kick (``replies_kick``, ``replies_apply``).
"""

from __future__ import annotations

import logging
import time

from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from brands.models import Brand
from conversations.sending import turns_batch
from conversations.services import inbound_converse, inbound_converse_many
from core.bulk import update_rows_returning
from core.flags import flag_add, flag_clear
from core.queueing import task_queue
from distributions.models import Distribution, Message
from optouts.models import Channel, InboundMessage
from participants.models import Person
from projects.models import Project

logger = logging.getLogger(__name__)

APPLY_TASK = "conversations.tasks.replies_apply_task"
# Replies claimed at once: each row with its brand and its number's last message (with the
# distribution and person) is a few kilobytes in memory; the batch is one transaction.
BATCH_SIZE = 200
# After a batch that was not full (no backlog: the replies came in since the last claim), the
# next claim waits GATHER_SECONDS (re-queued, no sleep); a full batch claims again at once. A
# batch costs a fixed number of statements (≈ 12 ms of a worker's and PostgreSQL's CPU)
# whatever its size, so under a steady flow claiming each reply at once would spend most of
# the worker on them: in-process, 0.35 ms of CPU a reply in batches of 40, 0.22 in batches
# of 200 (docs/benchmarks.md). Claiming again at once after any batch of 100 or more made
# every other batch a small one (what came in while the last was applied). It adds at most
# that wait to the apply latency of the replies after the first (a lone reply is applied at
# once); a phone's next text comes seconds later anyway.
GATHER_SECONDS = 0.2
# A worker drains batches for at most this long, then queues itself again (others get a turn).
DRAIN_SECONDS = 20.0
KICK_FLAG = "conversations:replies-kick"
# How long a kick stands for the replies after it: the applier clears it when it runs dry, so
# a reply stored after that kicks again. It lapses if the publish was lost (or a drain lasts
# longer: another applier then joins, the claims keep them apart).
KICK_SECONDS = 10
# A process that set the kick or saw it standing trusts it this long: the replies it stores
# meanwhile kick nothing (no Redis call: at a few hundred replies a second, most of them).
# An applier that runs dry takes a last look this long after it cleared the kick, for the
# replies a process stored trusting a kick it had seen just before the clear.
KICK_TRUSTED_SECONDS = 0.2
_kick_trusted_until = 0.0  # time.monotonic() of this process
Pending = InboundMessage.Apply


def replies_kick() -> None:
    """After commit: queue the applier unless one is queued or draining (the kick stands),
    or this process saw it standing less than ``KICK_TRUSTED_SECONDS`` ago."""

    def kick() -> None:
        global _kick_trusted_until
        now = time.monotonic()  # before the SET: the trust never outlasts what was seen
        if now < _kick_trusted_until:
            return
        _kick_trusted_until = now + KICK_TRUSTED_SECONDS
        if flag_add(KICK_FLAG, KICK_SECONDS):
            task_queue(APPLY_TASK)

    transaction.on_commit(kick)


def replies_kick_forget() -> None:
    """Forget the kick this process trusts (tests: a kick a test left standing)."""
    global _kick_trusted_until
    _kick_trusted_until = 0.0


def replies_apply(
    *,
    batch_size: int = BATCH_SIZE,
    drain_seconds: float = DRAIN_SECONDS,
    last_look: bool = False,
) -> dict:
    """Apply the pending replies that are free to take, batch after batch, until none is
    left (or a batch was small, or ``drain_seconds`` passed: the task is queued again, a
    moment later for a small batch). Returns counts.

    The kick stands while it drains (replies stored meanwhile publish nothing); when a claim
    finds nothing it clears the kick and claims once more: a reply committed before the clear
    is seen by that claim, one committed after it kicks again, or (stored by a process that
    trusted the kick it saw before the clear: ``replies_kick``) is seen by the last look,
    queued ``KICK_TRUSTED_SECONDS`` later. A last look (``last_look``) that finds nothing
    ends there: it neither clears the kick nor looks again."""
    stats = {"batches": 0, "applied": 0, "failed": 0, "released": 0}
    started = time.monotonic()
    cleared = False
    claimed = 0
    while True:
        batch = replies_apply_batch(batch_size=batch_size)
        stats["batches"] += 1
        claimed += batch["claimed"]
        for key in ("applied", "failed", "released"):
            stats[key] += batch[key]
        if batch["claimed"] == 0:
            if last_look and not claimed:
                return stats
            if cleared:
                task_queue(APPLY_TASK, last_look=True, countdown=KICK_TRUSTED_SECONDS)
                return stats
            flag_clear(KICK_FLAG)
            replies_kick_forget()  # this process too stores replies (eager tasks): they kick
            cleared = True
            continue
        cleared = False
        if batch["claimed"] < batch_size:
            # No backlog: the next run waits a moment for more replies, so that a batch's
            # fixed statements are shared (the kick stands meanwhile).
            task_queue(APPLY_TASK, countdown=GATHER_SECONDS)
            return stats
        if time.monotonic() - started > drain_seconds:
            task_queue(APPLY_TASK)  # it goes on draining: the kick still stands
            return stats


def _claim(batch_size: int) -> list[InboundMessage]:
    """Up to ``batch_size`` pending replies, shared fairly between the brands that have
    some, each brand's oldest first; each row locked until the batch's transaction ends
    (call it inside). A brand whose replies arrive faster than they are applied never holds
    back another brand's: the batch gives each brand an equal share of its room, and the
    share a brand cannot use goes to the others (``_shares``). A pending reply always has
    its brand (``distributions.inbound``).

    Two reads, whatever the backlog: how many each brand has waiting (at most a batch each,
    one probe a brand), then each brand's oldest rows (``FOR UPDATE SKIP LOCKED`` where the
    database has row locks: rows another applier holds are skipped, not waited for; SQLite
    has one writer at a time). Both go through the partial index of pending replies by
    (brand, id), whose every plan reads only the rows taken: a brand's equality and its id
    order, not a scan of pending ids that the statistics of an empty queue would choose (a
    skip scan over brands did, and read the whole backlog on every claim). No claim is
    written (a claim column cost an UPDATE of every reply)."""
    waiting = _waiting(batch_size)
    if not waiting:
        return []
    wanted = _shares(waiting, batch_size)
    if connection.vendor != "postgresql":
        rows = [
            row
            for brand_id, count in wanted.items()
            for row in InboundMessage.objects.filter(
                apply_state=Pending.PENDING, brand_id=brand_id
            ).order_by("pk")[:count]
        ]
        return sorted(rows, key=lambda row: row.pk)
    table = connection.ops.quote_name(InboundMessage._meta.db_table)
    values = ", ".join(["(%s::bigint, %s::int)"] * len(wanted))
    return list(
        InboundMessage.objects.raw(
            f"""
            SELECT i.* FROM (VALUES {values}) AS g(brand_id, wanted)
            CROSS JOIN LATERAL (
                SELECT * FROM {table} WHERE apply_state = %s AND brand_id = g.brand_id
                ORDER BY id LIMIT g.wanted FOR UPDATE SKIP LOCKED
            ) i
            ORDER BY id
            """,  # noqa: S608 - the table's quoted name; values are parameters
            [*(value for pair in wanted.items() for value in pair), Pending.PENDING],
        )
    )


def _waiting(batch_size: int) -> dict[int, int]:
    """How many pending replies each brand has, counted up to ``batch_size`` (one probe of
    the pending index a brand: a long backlog is not counted), for the brands with some.
    The probe's order is the index's, so that no plan reads the table instead: with
    statistics taken during a backlog, a scan that stops at the first rows of a brand looks
    cheap, and reads every row before them."""
    if connection.vendor != "postgresql":
        counts = (
            InboundMessage.objects.filter(apply_state=Pending.PENDING)
            .values_list("brand_id")
            .annotate(count=Count("pk"))
            .order_by()
        )
        return {brand_id: min(count, batch_size) for brand_id, count in counts}
    table = connection.ops.quote_name(InboundMessage._meta.db_table)
    brands = connection.ops.quote_name(Brand._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT b.id, w.waiting FROM {brands} b
            CROSS JOIN LATERAL (
                SELECT count(*) AS waiting FROM (
                    SELECT 1 FROM {table} WHERE apply_state = %s AND brand_id = b.id
                    ORDER BY id LIMIT %s
                ) s
            ) w
            WHERE w.waiting > 0
            """,  # noqa: S608 - the tables' quoted names; values are parameters
            [Pending.PENDING, batch_size],
        )
        return dict(cursor.fetchall())


def _shares(waiting: dict[int, int], room: int) -> dict[int, int]:
    """Each brand's share of ``room`` rows: equal shares, and what a brand with fewer rows
    waiting leaves goes to the others equally (the fewest waiting are served first)."""
    shares: dict[int, int] = {}
    order = sorted(waiting.items(), key=lambda item: (item[1], item[0]))
    for i, (brand_id, count) in enumerate(order):
        share = min(count, -(-room // (len(order) - i)))  # the room split between the rest
        shares[brand_id] = share
        room -= share
    return shares


def _in_order(rows: list[InboundMessage]) -> tuple[list[InboundMessage], list[int]]:
    """The claimed replies this batch may apply, and the ones it must leave: a number's
    replies (to one brand) wait while an earlier pending reply of that number is not in the
    batch (held by another applier). Each brand's claimed rows are its oldest that were
    free, so only its pending rows before its last claimed one are looked at, not another
    brand's backlog."""
    if not rows:
        return [], []
    numbers = {row.from_number for row in rows}
    last = {row.brand_id: row.pk for row in rows}  # rows come in id order (``_claim``)
    before = Q()
    for brand_id, pk in last.items():
        before |= Q(brand_id=brand_id, pk__lt=pk)
    earlier: dict[tuple[int, str], int] = {}
    for brand_id, number, pk in (
        InboundMessage.objects.filter(before, apply_state=Pending.PENDING, from_number__in=numbers)
        .exclude(pk__in=[row.pk for row in rows])
        .values_list("brand_id", "from_number", "pk")
    ):
        earlier[brand_id, number] = min(pk, earlier.get((brand_id, number), pk))
    if not earlier:
        return rows, []
    blocked = {
        (row.brand_id, row.from_number)
        for row in rows
        if earlier.get((row.brand_id, row.from_number), row.pk) < row.pk
    }
    return (
        [row for row in rows if (row.brand_id, row.from_number) not in blocked],
        [row.pk for row in rows if (row.brand_id, row.from_number) in blocked],
    )


def _last_messages(rows: list[InboundMessage]) -> dict[tuple[int, str], Message]:
    """Each (brand, number)'s last SMS handed over (``last_message_to``), for the whole
    batch in one read: the newest per pair, with its distribution (one read). The ranking
    is raw SQL: the ORM's window filter cost more to compile than the batch took to apply."""
    numbers = sorted({row.from_number for row in rows})
    brands = sorted({row.brand_id for row in rows})
    if not numbers:
        return {}
    quote = connection.ops.quote_name
    messages, distributions, projects = (
        quote(model._meta.db_table) for model in (Message, Distribution, Project)
    )
    ranked = (
        "SELECT id FROM (SELECT m.id, ROW_NUMBER() OVER ("  # noqa: S608 - names are ours
        "PARTITION BY m.address, p.brand_id ORDER BY m.sent_at DESC, m.id DESC) AS newest "
        f"FROM {messages} m JOIN {distributions} d ON d.id = m.distribution_id "
        f"JOIN {projects} p ON p.id = d.project_id "
        f"WHERE m.address IN ({', '.join(['%s'] * len(numbers))}) AND m.sent_at IS NOT NULL "
        f"AND d.channel = %s AND p.brand_id IN ({', '.join(['%s'] * len(brands))})"
        ") ranked WHERE newest = 1"
    )
    newest = RawSQL(ranked, [*numbers, Channel.SMS, *brands])  # noqa: S611 - values are bound
    found = list(
        Message.objects.filter(pk__in=newest).annotate(
            brand_id=F("distribution__project__brand_id")
        )
    )
    # Their distributions (a batch answers a few), each read once and shared; their people
    # are read only where needed (by id: ``person_id``).
    shared = Distribution.objects.in_bulk({message.distribution_id for message in found})
    for message in found:
        message.distribution = shared[message.distribution_id]
    return {(message.brand_id, message.address): message for message in found}


def _people(rows: list[InboundMessage], last: dict) -> dict[tuple[int, str], Person]:
    """The directory person of each (brand, number) that no last message names
    (``directory_person_for``: the first by id), in one read."""
    wanted = {
        (row.brand_id, row.from_number)
        for row in rows
        if row.message_id is None
        and row.person_id is None
        and getattr(last.get((row.brand_id, row.from_number)), "person_id", None) is None
    }
    if not wanted:
        return {}
    people: dict[tuple[int, str], Person] = {}
    for person in Person.objects.filter(
        brand_id__in={b for b, _ in wanted}, phone__in={n for _, n in wanted}
    ).order_by("pk"):
        people.setdefault((person.brand_id, person.phone), person)
    return people


def replies_apply_batch(*, batch_size: int = BATCH_SIZE) -> dict:
    """Claim a batch of pending replies and apply them, in one transaction (see the module
    docstring). Returns counts: claimed, applied, failed (logged, marked failed: the others
    go on), released (left pending for a later run, to keep a number's order)."""
    with turns_batch(), transaction.atomic():
        claimed = _claim(batch_size)
        stats = {"claimed": len(claimed), "applied": 0, "failed": 0, "released": 0}
        rows, left = _in_order(claimed)
        stats["released"] = len(left)
        if not rows:
            return stats
        # Each brand once, with its provider account (the conversation's sender match).
        brands = {
            brand.pk: brand
            for brand in Brand.objects.filter(pk__in={row.brand_id for row in rows}).select_related(
                "provider_account"
            )
        }
        for row in rows:
            row.brand = brands[row.brand_id]
        last = _last_messages(rows)
        people = _people(rows, last)
        for row in rows:
            if row.message_id is None and row.person_id is None:
                # Stored by the webhook without them: what the brand's last message and its
                # directory say now (STOP and START had them in the request).
                key = (row.brand_id, row.from_number)
                row.message = last.get(key)
                if row.message is not None and row.message.person_id is not None:
                    row.person_id = row.message.person_id  # read if needed (consent)
                else:
                    row.person = people.get(key)
        done = _apply_together(rows, last)
        stats["applied"] = len(done)
        one_by_one: list[int] = []
        for row in rows:
            if row.pk in done:
                continue
            try:
                with transaction.atomic():
                    if not InboundMessage.objects.filter(
                        pk=row.pk, apply_state=Pending.PENDING
                    ).update(
                        apply_state=Pending.APPLIED,
                        message_id=row.message_id,
                        person_id=row.person_id,
                    ):
                        continue  # applied meanwhile (not while this batch holds its row)
                    inbound_converse(
                        brand=row.brand,
                        inbound=row,
                        last_message=last.get((row.brand_id, row.from_number)),
                    )
            except Exception:
                logger.exception("inbound reply %s could not be applied", row.pk)
                InboundMessage.objects.filter(pk=row.pk).update(apply_state=Pending.FAILED)
                stats["failed"] += 1
                continue
            one_by_one.append(row.pk)
        stats["applied"] += len(one_by_one)
        if one_by_one:
            # Applied when committed: the time the next texts are handed to the send task.
            InboundMessage.objects.filter(pk__in=one_by_one).update(applied_at=timezone.now())
    return stats


def _apply_together(rows: list[InboundMessage], last: dict) -> set[int]:
    """Apply the first reply of each number at once where ``inbound_converse_many`` can (a
    number's later replies follow one by one, after it); marked applied in one conditional
    UPDATE. Returns their ids; none if anything failed (nothing of it is kept: the replies
    go one by one)."""
    firsts: dict[str, InboundMessage] = {}
    for row in rows:
        firsts.setdefault(row.from_number, row)
    try:
        with transaction.atomic():
            done = inbound_converse_many(
                replies=[
                    (row, last.get((row.brand_id, row.from_number))) for row in firsts.values()
                ]
            )
            if not done:
                return set()
            # Marked applied (with the last message and person the webhook left out) only
            # where still pending (the batch holds the rows: all of them). The batch's last
            # statement before its commit: its time is the applied time.
            applied_at = connection.ops.adapt_datetimefield_value(timezone.now())
            marked = update_rows_returning(
                InboundMessage,
                ["apply_state", "message_id", "person_id", "applied_at"],
                [
                    (r.pk, Pending.APPLIED, r.message_id, r.person_id, applied_at)
                    for r in firsts.values()
                    if r.pk in done
                ],
                where="t.apply_state = %s",
                params=[Pending.PENDING],
                casts={"message_id": "bigint", "person_id": "bigint", "applied_at": "timestamptz"},
            )
            if len(marked) != len(done):
                raise _ClaimLost
    except _ClaimLost:
        return set()
    except Exception:
        logger.exception("replies could not be applied together: one by one instead")
        return set()
    return done


class _ClaimLost(Exception):
    """One of the batch's replies was no longer pending when marked applied."""


def replies_pending_count() -> int:
    """Replies waiting for their conversation step (for monitoring and tests)."""
    return InboundMessage.objects.filter(apply_state=Pending.PENDING).count()
