"""The fair queue: which rows a free worker slot sends next, and how many.

A *lane* is a distribution with rows to send; it belongs to a *sender* (one per provider,
brand and sender id: a phone number, short code, messaging service or From address), and
senders to brands. A pump (``distributions.pump``) takes a *batch* at a time:

- lanes in round-robin order: brands least recently served first, then each brand's senders
  least recently served first, then the sender's lanes likewise, one lane per sender;
- each lane granted what its sender's token bucket holds now (``distributions.throttle``),
  at most ``SEND_WINDOW`` rows, until the batch holds ``SEND_WINDOW`` rows or ``MAX_LANES``
  lanes;
- the granted rows leased (Pending -> Sending) in the same transaction that takes the tokens
  and moves the turns, so a token is spent only on a row that is sent, and two pumps never
  take one lane or one sender's tokens at once (``FOR UPDATE ... SKIP LOCKED``: a pump never
  waits for another).

Nothing waits: a sender whose bucket is empty is not ready until it refills (``ready_at``), a
lane whose rows are deferred (``Message.due_at``) is not ready until its next row is due; a
pump simply does not pick them, and sleeps in the broker, not in a worker slot, when nothing
is ready (``next_ready_at``). The state lives in the database beside the rows it schedules,
so one transaction keeps both consistent, whatever the broker (see docs/scaling.md).

What reaches the provider keeps to the bucket, not only what is picked: a sender's refill
starts again at its window's hand-over (``senders_handed_over``), then at the provider's
answer (``senders_answered``), and a sender whose second of tokens fits in one window (up to
``SEND_WINDOW`` messages a second) has one window in flight at a time, free for its next pick
only once the last one is answered, so that neither a slow pick followed by a fast one nor a
provider taking a request late can bring two windows to it closer than the rate allows.
A rate-limited sender's window is picked ahead of its moment and handed over at the moment:
a pump picks when the next moment is within the pick lead (``pick_due``: half the
pick-ahead, ``pick_ahead``) and takes every window due within the pick-ahead, so that slow
senders coming due close together share one batch, and the pick, checks and rendering are
done by the moment, not after it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.bulk import update_rows
from distributions import throttle
from distributions.models import Message, Sender, SendLane, SendPump

logger = logging.getLogger(__name__)

MStatus = Message.Status
# Rows in one batch: handed to providers at once (at most one second of a sender's rate: see
# ``grant``), and the granularity of the opt-out re-check.
SEND_WINDOW = 500
# Lanes in one batch: many slow senders (a US long code sends one message a second) are
# served by one slot, a batch of one-message windows at a time.
MAX_LANES = 100
# Rows a lane takes in a batch that several brands share: a brand's big send goes in batches
# a fifth as long while another brand waits its turn.
SHARED_WINDOW = 100


class Picked(list):
    """The grants of a pick (a list), and ``idled``: the distributions whose lane it found
    with nothing left to send now or later (worth asking whether they are finished)."""

    def __init__(self, grants=(), idled=()):
        super().__init__(grants)
        self.idled = list(idled)


@dataclass(frozen=True)
class Grant:
    """Rows of one lane leased for this batch: ``leased`` of ``granted`` asked for."""

    distribution_id: int
    brand_id: int
    sender_id: int
    granted: int
    leased: int
    # Picked ahead of its sender's bucket: handed over no sooner than this (None: now).
    not_before: datetime | None = None


def _t(value: datetime | None):
    """A time as the database takes it in raw SQL (SQLite: Django's text form)."""
    return connection.ops.adapt_datetimefield_value(value) if value is not None else None


def _quote(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _later(a: str, b: str) -> str:
    """SQL for the later of two times (NULL if either is)."""
    return f"GREATEST({a}, {b})" if connection.vendor == "postgresql" else f"MAX({a}, {b})"


def _earlier(a: str, b: str) -> str:
    """SQL for the earlier of two times, ignoring a NULL."""
    if connection.vendor == "postgresql":
        return f"LEAST({a}, {b})"
    return f"COALESCE(MIN({a}, {b}), {a}, {b})"


# --- senders and lanes --------------------------------------------------------------------
def sender_ensure(*, key: str, brand_id: int, rate: int, now: datetime | None = None) -> int:
    """The id of the sender named ``key``, created with a full bucket if new; its rate
    follows the brand's current settings."""
    now = now or timezone.now()
    sender = Sender.objects.filter(key=key).values_list("pk", "rate").first()
    if sender is None:
        Sender.objects.bulk_create(
            [
                Sender(
                    key=key,
                    brand_id=brand_id,
                    rate=rate,
                    tokens=throttle.capacity(rate) if rate > 0 else 0,
                    tokens_at=now,
                    ready_at=now,
                    served_at=now - timedelta(days=3650),
                )
            ],
            ignore_conflicts=True,
        )
        sender = Sender.objects.filter(key=key).values_list("pk", "rate").get()
    pk, known_rate = sender
    if known_rate != rate:
        Sender.objects.filter(pk=pk).update(rate=rate)
    return pk


def lane_open(
    *, distribution_id: int, brand_id: int, sender_id: int, now: datetime | None = None
) -> datetime | None:
    """Put the distribution in the fair queue from its next due Pending row (idempotent; an
    open lane keeps the earlier time). Returns when it is ready, None if nothing is Pending.

    Call after rows become Pending (a start, a retry, recovery); pumps are kicked after the
    transaction commits (``distributions.pump.pumps_kick``).
    """
    now = now or timezone.now()
    first_due = (
        Message.objects.filter(distribution_id=distribution_id, status=MStatus.PENDING)
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first()
    )
    if first_due is None:
        return None
    lanes = _quote(SendLane)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {lanes} (distribution_id, brand_id, sender_id, ready_at, served_at)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (distribution_id) DO UPDATE SET
                sender_id = excluded.sender_id,
                ready_at = {_earlier(f"{lanes}.ready_at", "excluded.ready_at")}
            """,  # noqa: S608 - table names are ours, values are bound
            [distribution_id, brand_id, sender_id, _t(first_due), _t(now - timedelta(days=3650))],
        )
    return first_due


def lane_close(*, distribution_id: int) -> None:
    """Take a finished distribution out of the fair queue."""
    SendLane.objects.filter(distribution_id=distribution_id).delete()


def sender_pause(*, sender_id: int, until: datetime, reason: str) -> None:
    """The provider asked this sender to wait (HTTP 429, Retry-After): no lane of it is
    picked before ``until``; its bucket starts empty then."""
    Sender.objects.filter(pk=sender_id, ready_at__lt=until).update(
        ready_at=until, tokens=0, tokens_at=until, paused_reason=reason[:200]
    )


def _senders_refill_from(
    moments: dict[int, datetime], keep, *, free: bool = True
) -> dict[int, datetime]:
    """Under the senders' locks (one transaction): each rate-limited sender of ``moments``
    for which ``keep(sender, tokens_at, moment)`` gives a time refills from that time (its
    ``ready_at`` follows, unless ``free`` is false and the sender is served one window at a
    time: it stays held). Returns the times set."""
    if not moments:
        return {}
    wanted = sorted(moments)
    marks = ", ".join(["%s"] * len(wanted))
    lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
    rows, refilled = [], {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, rate, tokens, tokens_at, ready_at FROM {_quote(Sender)} "  # noqa: S608
            f"WHERE id IN ({marks}) AND rate > 0 ORDER BY id{lock}",
            wanted,
        )
        for sender_id, rate, tokens, tokens_at, ready_at in cursor.fetchall():
            since = keep(sender_id, _as_datetime(tokens_at), moments[sender_id])
            if since is None:
                continue
            refilled[sender_id] = since
            if free or rate > SEND_WINDOW:
                ready = throttle.ready_at(rate=rate, tokens=tokens, now=since)
            else:
                ready = _as_datetime(ready_at)
            rows.append((sender_id, _t(since), _t(ready)))
        update_rows(Sender, ["tokens_at", "ready_at"], rows, casts=_TIMES_READY)
    return refilled


def senders_handed_over(*, senders: list[tuple[int, int]], at: datetime) -> dict[int, datetime]:
    """Windows of these senders ((id, rate) each) go to the provider now: their buckets
    refill from now, not from when the windows were picked. Tokens are paid at the pick; the
    work between the pick and the hand-over (rendering, credits, a cold worker) would
    otherwise let the next window reach the provider sooner than the rate allows. The refill
    of that interval is given up (the pick's few milliseconds), so that hand-overs, not picks,
    keep to the bucket. A sender served one window at a time stays held until its answer
    (``senders_answered``). Returns each sender's hand-over time (later than ``at`` for a
    window picked ahead)."""
    limited = {sender_id: at for sender_id, rate in senders if rate > 0}
    return _senders_refill_from(
        limited, lambda _, tokens_at, moment: max(tokens_at, moment), free=False
    )


def senders_answered(*, senders: list[tuple[int, datetime, datetime]]) -> None:
    """The provider answered these senders' windows ((id, handed over at, answered at) each,
    the first as ``senders_handed_over`` returned it): each bucket refills from the answer
    (unless the sender was picked again meanwhile: a fast sender, several windows a second),
    and a sender served one window at a time is free for its next pick (ahead). The provider
    saw a window at some moment between the two (its requests queue behind the batch's
    others; a busy provider takes them late): counted from the answer, what the provider sees
    keeps to the rate, not only what was sent, however late the answer is recorded."""
    handed = {sender_id: since for sender_id, since, _ in senders}
    answered = {sender_id: max(since, done) for sender_id, since, done in senders}

    def unless_picked_again(sender_id: int, tokens_at: datetime, done: datetime):
        # Picked again already: that pick's window keeps its moment.
        return done if tokens_at == handed[sender_id] else None

    _senders_refill_from(answered, unless_picked_again)


def senders_release(*, sender_ids: list[int]) -> None:
    """Senders picked for windows that never reached the provider (every row closed before):
    ready again as their tokens allow."""
    wanted = sorted({sender_id for sender_id in sender_ids if sender_id})
    if not wanted:
        return
    now = timezone.now()
    rows = []
    for sender_id, rate, tokens, tokens_at in Sender.objects.filter(
        pk__in=wanted, rate__gt=0, ready_at__gt=now
    ).values_list("pk", "rate", "tokens", "tokens_at"):
        tokens = throttle.refill(rate=rate, tokens=tokens, tokens_at=tokens_at, now=now)
        rows.append((sender_id, _t(throttle.ready_at(rate=rate, tokens=tokens, now=now))))
    update_rows(Sender, ["ready_at"], rows, casts={"ready_at": "timestamptz"})


def lanes_idle(*, distribution_ids: list[int]) -> list[int]:
    """Which of these distributions have nothing left to send now or later (their lane is
    idle or gone): the ones worth asking whether they are finished."""
    busy = set(
        SendLane.objects.filter(
            distribution_id__in=distribution_ids, ready_at__isnull=False
        ).values_list("distribution_id", flat=True)
    )
    return [pk for pk in distribution_ids if pk not in busy]


# --- the pick -----------------------------------------------------------------------------
def pick_ahead() -> timedelta:
    """How long before its bucket allows it a rate-limited sender's window may be picked
    (``settings.RELAY_SEND_PICK_AHEAD_SECONDS``)."""
    return timedelta(seconds=max(0.0, float(settings.RELAY_SEND_PICK_AHEAD_SECONDS)))


def pick_lead() -> timedelta:
    """How long before the next rate-limited lane's moment a pump picks (``pick_due``):
    half the pick-ahead, so that its pick gathers every lane due within the next half (many
    slow senders' windows in one batch, not one a pick) and still has the other half to check,
    price and render them before the first moment."""
    return pick_ahead() / 2


def pick_due(now: datetime) -> tuple[bool, datetime | None]:
    """Whether a pump picks at ``now``, and when the next lane is ready (``next_ready_at``):
    when something is due now or within the pick lead. Until then a pump does not pick, even
    with windows within the pick-ahead: picked as each came within it, 200 long codes made
    batches of one or two windows, each paying a whole batch's statements (6.6 messages a
    batch in the fairness bench's (c), the pumps 70 % busy); gathered, a batch carries every
    window due within the next half pick-ahead, still picked half of it before its moment."""
    wake = next_ready_at()
    return wake is not None and wake <= now + pick_lead(), wake


def _ready_lanes(now: datetime) -> list[tuple]:
    """(distribution, brand, sender, lane served, sender served) of every ready lane: rows
    due now, a sender ready now or within the pick-ahead."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT l.distribution_id, l.brand_id, l.sender_id, l.served_at, s.served_at
            FROM {_quote(SendLane)} l JOIN {_quote(Sender)} s ON s.id = l.sender_id
            WHERE l.ready_at <= %s AND s.ready_at <= %s
            """,  # noqa: S608
            [_t(now), _t(now + pick_ahead())],
        )
        return cursor.fetchall()


def _brand_turns(brand_ids: set[int]) -> dict[int, datetime]:
    """When each brand was last served: its most recently served sender's time."""
    marks = ", ".join(["%s"] * len(brand_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT brand_id, MAX(served_at) FROM {_quote(Sender)} "  # noqa: S608
            f"WHERE brand_id IN ({marks}) GROUP BY brand_id",
            list(brand_ids),
        )
        return {brand_id: _as_datetime(served_at) for brand_id, served_at in cursor.fetchall()}


def _as_datetime(value) -> datetime:
    """A time read by raw SQL (SQLite returns text)."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)


def fair_order(lanes: list[tuple], brand_turns: dict[int, datetime]) -> list[tuple]:
    """Ready lanes in the order they are served: round-robin across brands (least recently
    served first), within a brand across its senders likewise, one lane per sender (the
    sender's least recently served). Each lane is (distribution, brand, sender, lane served,
    sender served)."""
    best: dict[int, tuple] = {}  # sender -> its lane served longest ago
    for lane in lanes:
        current = best.get(lane[2])
        if current is None or (_as_datetime(lane[3]), lane[0]) < (
            _as_datetime(current[3]),
            current[0],
        ):
            best[lane[2]] = lane
    senders: dict[int, list[tuple]] = defaultdict(list)
    for lane in best.values():
        senders[lane[1]].append(lane)
    for brand_lanes in senders.values():
        brand_lanes.sort(key=lambda lane: (_as_datetime(lane[4]), lane[2]))
    oldest = datetime.min.replace(tzinfo=UTC)
    brands = sorted(senders, key=lambda brand: (brand_turns.get(brand, oldest), brand))
    order: list[tuple] = []
    depth = max((len(brand_lanes) for brand_lanes in senders.values()), default=0)
    for turn in range(depth):
        order += [senders[brand][turn] for brand in brands if turn < len(senders[brand])]
    return order


def _lock(distribution_ids: list[int], now: datetime, *, limit: int) -> dict[int, tuple]:
    """Lock the first ``limit`` lanes of ``distribution_ids`` (in that order: the fair order)
    that no other pump holds and that are still ready, with their senders. On PostgreSQL the
    lanes another pump is picking this moment are skipped and the next ones in turn are taken
    (``ORDER BY ... LIMIT ... SKIP LOCKED`` locks rows as it returns them), so that two pumps
    picking at once share the ready lanes instead of one of them finding its first ``limit``
    all held and nothing to do."""
    if not distribution_ids:
        return {}
    if connection.vendor == "postgresql":
        turns, ids = (
            "unnest(%s) WITH ORDINALITY AS o(distribution_id, turn)",
            list(distribution_ids),
        )
        tail, tail_params = " ORDER BY o.turn LIMIT %s FOR UPDATE OF l, s SKIP LOCKED", [limit]
    else:  # SQLite: no row locks (one writer at a time); the order is kept below
        turns = "(SELECT value AS distribution_id FROM json_each(%s)) o"
        ids, tail, tail_params = json.dumps(list(distribution_ids)), "", []
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT l.distribution_id, s.id, s.rate, s.tokens, s.tokens_at FROM {turns} "  # noqa: S608
            f"JOIN {_quote(SendLane)} l ON l.distribution_id = o.distribution_id "
            f"JOIN {_quote(Sender)} s ON s.id = l.sender_id "
            f"WHERE l.ready_at <= %s AND s.ready_at <= %s{tail}",
            [ids, _t(now), _t(now + pick_ahead()), *tail_params],
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
    return {pk: rows[pk] for pk in [pk for pk in distribution_ids if pk in rows][:limit]}


def _lease_lane(
    *,
    distribution_id: int,
    count: int,
    lease: str,
    now: datetime,
    first_id: int | None = None,
    last_id: int | None = None,
) -> int:
    """Lease up to ``count`` of the lane's due Pending rows (with ids in [first_id, last_id]
    if given), in due order."""
    messages = _quote(Message)
    id_range, range_params = "", []
    if first_id is not None:
        id_range, range_params = "AND id >= %s AND id <= %s", [first_id, last_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {messages} SET status = %s, lease = %s, leased_at = %s,
                attempts = attempts + 1
            WHERE id IN (
                SELECT id FROM {messages}
                WHERE distribution_id = %s AND status = %s AND due_at <= %s {id_range}
                ORDER BY due_at LIMIT %s
            ) AND status = %s
            """,  # noqa: S608
            [
                MStatus.SENDING,
                lease,
                _t(now),
                distribution_id,
                MStatus.PENDING,
                _t(now),
                *range_params,
                count,
                MStatus.PENDING,
            ],
        )
        return cursor.rowcount


def _lease_lanes(counts: dict[int, int], *, lease: str, now: datetime) -> dict[int, int]:
    """Lease up to ``counts[d]`` due Pending rows of each lane ``d``, in due order; returns
    how many each got. PostgreSQL: one statement for every lane (a lateral join)."""
    if not counts:
        return {}
    if connection.vendor != "postgresql":
        return {
            pk: _lease_lane(distribution_id=pk, count=count, lease=lease, now=now)
            for pk, count in counts.items()
        }
    messages = _quote(Message)
    values = ", ".join(["(%s::bigint, %s::int)"] * len(counts))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH picked AS MATERIALIZED (
                SELECT x.id FROM (VALUES {values}) AS g(distribution_id, wanted)
                CROSS JOIN LATERAL (
                    SELECT id FROM {messages}
                    WHERE distribution_id = g.distribution_id AND status = %s AND due_at <= %s
                    ORDER BY due_at LIMIT g.wanted
                ) x
            )
            UPDATE {messages} m SET status = %s, lease = %s, leased_at = %s,
                attempts = m.attempts + 1
            FROM picked WHERE m.id = picked.id AND m.status = %s
            RETURNING m.distribution_id
            """,  # noqa: S608 - MATERIALIZED: the few rows picked first, then their updates
            [
                *[value for pair in counts.items() for value in pair],
                MStatus.PENDING,
                now,
                MStatus.SENDING,
                lease,
                now,
                MStatus.PENDING,
            ],
        )
        leased: dict[int, int] = {}
        for (distribution_id,) in cursor.fetchall():
            leased[distribution_id] = leased.get(distribution_id, 0) + 1
    return leased


def _next_due(distribution_id: int):
    return (
        Message.objects.filter(distribution_id=distribution_id, status=MStatus.PENDING)
        .order_by("due_at")
        .values_list("due_at", flat=True)
        .first()
    )


def pick(
    *,
    lease: str,
    now: datetime | None = None,
    max_rows: int = SEND_WINDOW,
    max_lanes: int = MAX_LANES,
) -> Picked:
    """Take the next fair batch: lease its rows under ``lease`` and pay their tokens.

    Returns one ``Grant`` per lane served (``leased`` rows of it are now Sending under
    ``lease``); an empty list when nothing is ready now.
    """
    now = now or timezone.now()
    latest = now + pick_ahead()
    with transaction.atomic():
        ready = _ready_lanes(now)
        if not ready:
            return Picked()
        order = fair_order(ready, _brand_turns({lane[1] for lane in ready}))
        locked = _lock([lane[0] for lane in order], now, limit=max_lanes)
        grants: list[Grant] = []
        lanes_served: list[tuple] = []
        lanes_idle: list[tuple] = []
        senders: list[tuple] = []
        rows_left = max_rows
        # Brands competing for this batch: a lane then takes a share, not the whole window,
        # so that the batch (and the next brand's turn) comes round sooner.
        competing = len({lane[1] for lane in order if lane[0] in locked}) > 1
        per_lane = SHARED_WINDOW if competing else SEND_WINDOW
        wanted: dict[int, tuple] = {}  # distribution -> (brand, sender, rate, tokens, count)
        for distribution_id, brand_id, sender_id, _lane_served, _sender_served in order:
            if rows_left <= 0:
                break
            state = locked.get(distribution_id)
            if state is None:
                continue  # another pump holds it, or it stopped being ready
            _, rate, tokens, tokens_at = state
            tokens_at = _as_datetime(tokens_at)
            # The window goes when the bucket holds a batch: now, or within the pick-ahead
            # (then its hand-over waits for that moment: ``Grant.not_before``).
            at = throttle.due(rate=rate, tokens=tokens, tokens_at=tokens_at, now=now)
            tokens = throttle.refill(rate=rate, tokens=tokens, tokens_at=tokens_at, now=at)
            count = throttle.take(tokens, min(rows_left, per_lane)) if at <= latest else 0
            if count < 1:  # refilled less than a token since it was found ready
                senders.append((sender_id, tokens, _t(max(at, now)), _t(at), _t(now)))
                continue
            rows_left -= count
            wanted[distribution_id] = (brand_id, sender_id, rate, tokens, count, at)
        leased_by = _lease_lanes({pk: item[4] for pk, item in wanted.items()}, lease=lease, now=now)
        for distribution_id, (brand_id, sender_id, rate, tokens, count, at) in wanted.items():
            leased = leased_by.get(distribution_id, 0)
            if rate > 0:
                tokens -= leased
            left = 0.0 if tokens == throttle.UNLIMITED else tokens
            when = throttle.ready_at(rate=rate, tokens=left, now=at)
            if 0 < rate <= SEND_WINDOW and leased:
                # Served one window at a time: free again at its answer
                # (``senders_answered``), or when the lease lapses if its pump died.
                when = at + timedelta(seconds=settings.RELAY_SEND_LEASE_SECONDS)
            senders.append((sender_id, left, _t(at), _t(when), _t(now)))
            if leased < count:  # nothing more is due now: ready again when the next row is
                lanes_idle.append((distribution_id, _t(_next_due(distribution_id)), _t(now)))
            else:
                lanes_served.append((distribution_id, _t(now)))
            if leased:
                not_before = at if leased and at > now else None
                grants.append(
                    Grant(distribution_id, brand_id, sender_id, count, leased, not_before)
                )
        update_rows(
            Sender, ["tokens", "tokens_at", "ready_at", "served_at"], senders, casts=_TIMES_4
        )
        update_rows(SendLane, ["served_at"], lanes_served, casts=_TIMES_1, pk="distribution_id")
        update_rows(
            SendLane, ["ready_at", "served_at"], lanes_idle, casts=_TIMES_2, pk="distribution_id"
        )
    return Picked(grants, [pk for pk, due, _ in lanes_idle if due is None])


_TIMES_1 = {"served_at": "timestamptz"}
_TIMES_READY = {"tokens_at": "timestamptz", "ready_at": "timestamptz"}
_TIMES_2 = {"ready_at": "timestamptz", "served_at": "timestamptz"}
_TIMES_4 = {
    "tokens": "double precision",
    "tokens_at": "timestamptz",
    "ready_at": "timestamptz",
    "served_at": "timestamptz",
}


def take_range(
    *, sender_id: int, distribution_id: int, first_id: int, last_id: int, lease: str
) -> tuple[int, float | None]:
    """For a foreground send (``sending.send_chunk``): lease what the sender's bucket pays
    for now (at most a window) of the distribution's due Pending rows in an id range.
    Returns (rows leased, seconds until worth asking again; None when the range is done)."""
    now = timezone.now()
    with transaction.atomic():
        sender = Sender.objects.select_for_update().get(pk=sender_id)
        tokens = throttle.refill(
            rate=sender.rate, tokens=sender.tokens, tokens_at=sender.tokens_at, now=now
        )
        ready = max(sender.ready_at, throttle.ready_at(rate=sender.rate, tokens=tokens, now=now))
        wanted = throttle.take(tokens, SEND_WINDOW) if ready <= now else 0
        leased = 0
        if wanted:
            leased = _lease_lane(
                distribution_id=distribution_id,
                count=wanted,
                lease=lease,
                now=now,
                first_id=first_id,
                last_id=last_id,
            )
            if sender.rate > 0:
                tokens -= leased
            Sender.objects.filter(pk=sender_id).update(
                tokens=0.0 if tokens == throttle.UNLIMITED else tokens,
                tokens_at=now,
                ready_at=throttle.ready_at(rate=sender.rate, tokens=tokens, now=now),
                served_at=now,
            )
        if leased:
            return leased, 0.0
        pending = Message.objects.filter(
            distribution_id=distribution_id,
            status=MStatus.PENDING,
            pk__gte=first_id,
            pk__lte=last_id,
        )
        next_due = pending.order_by("due_at").values_list("due_at", flat=True).first()
    if next_due is None:
        return 0, None
    return 0, max(0.01, (max(next_due, ready) - now).total_seconds())


def next_ready_at(*, after: datetime | None = None) -> datetime | None:
    """When the next lane will be ready (a deferred row comes due, a sender refills); None
    when no lane has anything left to send. ``after``: the next one later than that (the
    lanes ready now being another pump's)."""
    lanes, senders = _quote(SendLane), _quote(Sender)
    ready = _later("l.ready_at", "s.ready_at")
    later, params = ("", []) if after is None else (f" AND {ready} > %s", [_t(after)])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MIN({ready}) FROM {lanes} l "  # noqa: S608
            f"JOIN {senders} s ON s.id = l.sender_id WHERE l.ready_at IS NOT NULL{later}",
            params,
        )
        (value,) = cursor.fetchone()
    return _as_datetime(value) if value is not None else None


def new_lease() -> str:
    return uuid.uuid4().hex


# --- pump slots (the pumps themselves: distributions.pump) ---------------------------------
State = SendPump.State
# A queued or running pump that has not touched its slot for this long is taken to be dead
# (a live one touches it between batches; a batch outlasting this only costs a second pump).
PUMP_CLAIM_SECONDS = 10


def _slots() -> int:
    return max(1, int(settings.RELAY_SEND_PUMPS))


def _claimable(now: datetime) -> Q:
    return Q(state__in=[State.IDLE, State.SLEEPING]) | Q(until__lt=now) | Q(until__isnull=True)


def pumps_kick(*, now: datetime | None = None) -> int:
    """Queue a pump for every slot that is free, sleeping or lapsed (after the current
    transaction commits). Returns how many were claimed."""
    now = now or timezone.now()
    wanted = _slots()
    existing = set(SendPump.objects.values_list("slot", flat=True))
    if len(existing) < wanted:
        SendPump.objects.bulk_create(
            [SendPump(slot=slot) for slot in range(wanted) if slot not in existing],
            ignore_conflicts=True,
        )
    claimed: list[tuple[int, str]] = []
    candidates = SendPump.objects.filter(_claimable(now), slot__lt=wanted)
    for slot in candidates.values_list("slot", flat=True):
        ticket = uuid.uuid4().hex
        if (
            SendPump.objects.filter(_claimable(now), slot=slot).update(
                ticket=ticket,
                state=State.QUEUED,
                until=now + timedelta(seconds=PUMP_CLAIM_SECONDS),
            )
            == 1
        ):
            claimed.append((slot, ticket))
    if claimed:
        transaction.on_commit(lambda: pumps_queue(claimed))
    return len(claimed)


_pump_task = None


def register_pump_task(task) -> None:
    """The Celery task that runs a pump (``distributions.tasks``, above this module),
    registered when the app is ready."""
    global _pump_task
    _pump_task = task


def pumps_lapsed(*, now: datetime) -> int:
    """Slots whose queued or running pump stopped touching them (its worker died)."""
    return SendPump.objects.filter(
        state__in=[State.QUEUED, State.RUNNING], until__lt=now, slot__lt=_slots()
    ).count()


def pumps_next_lapse() -> datetime | None:
    """When the first held slot's claim lapses (a dead worker's slot becomes claimable)."""
    return (
        SendPump.objects.filter(state__in=[State.QUEUED, State.RUNNING], slot__lt=_slots())
        .order_by("until")
        .values_list("until", flat=True)
        .first()
    )


def pumps_queue(claimed: list[tuple[int, str]], eta: datetime | None = None) -> None:
    """Queue the pump task of each (slot, ticket) on the send queue."""
    if _pump_task is None:
        raise RuntimeError("no pump task registered (DistributionsConfig.ready)")
    for slot, ticket in claimed:
        _pump_task.apply_async(args=[slot, ticket], eta=eta)


def pump_set(slot: int, ticket: str, **fields) -> bool:
    """Change a slot's state if ``ticket`` still holds it."""
    return SendPump.objects.filter(slot=slot, ticket=ticket).update(**fields) == 1
