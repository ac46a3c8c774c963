"""Pumps: the tasks on the ``send`` queue that take fair batches and send them.

At most ``RELAY_SEND_PUMPS`` pumps run at once (set it to the number of worker slots on the
send queue). Each holds a *slot* (``SendPump``) with a ticket; a pump:

1. takes batches from the fair queue (``fairqueue.pick``) and starts them
   (``sending.batch_start``: checked, priced, rendered and handed to the providers) for up to
   ``PUMP_SLICE_SECONDS``, then queues itself again, so that a slot is never held longer than
   a slice. On PostgreSQL a started batch stays *in flight* while the pump picks and starts
   the next: its requests wait for their moment (a slow sender's window picked ahead of its
   bucket) and for their answers on the process's hand-over loop (``providers.loop``), and
   the pump records each batch as soon as it is answered (``Batch.finish``), before it picks
   again. Many slow senders' windows are then handed over at their moments, not when the
   pump gets round to them, and no slot waits for a moment while there is work to prepare.
   It picks when something is due now or within the pick lead (``fairqueue.pick_due``), not
   as soon as a window comes within the pick-ahead: one batch for every slow sender due
   close together, not one each;
2. when nothing is ready now but something will be (a sender refills, a deferred row comes
   due), it records its batches in flight, then queues itself for that time (at most
   ``MAX_SLEEP_SECONDS`` ahead) and gives its worker slot back: it sleeps in the broker,
   never in a worker;
3. when nothing is left, frees its slot.

``pumps_kick`` (after a commit that made rows ready) queues a pump for every free, sleeping
or lapsed slot; a sleeping pump whose slot was taken finds its ticket replaced and ends. A
worker that dies with a pump only loses the pump: its slot lapses after ``PUMP_CLAIM_SECONDS``
and the next kick (recovery runs one every few seconds) claims it again.
"""

from __future__ import annotations

import concurrent.futures
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from distributions import fairqueue, metrics
from distributions.fairqueue import PUMP_CLAIM_SECONDS, State, pump_set, pumps_kick, pumps_queue
from distributions.finishing import distribution_finish_if_done
from distributions.providers.registry import providers_warm
from distributions.sending import Batch, batch_start

PUMP_SLICE_SECONDS = 5.0
MAX_SLEEP_SECONDS = 2.0
TOUCH_EVERY_SECONDS = 2.0
# Picks in a row that found every ready lane held by other pumps before this one sleeps ...
BUSY_RETRIES = 3
# ... and then sleeps in the broker this long before it looks again.
BUSY_SLEEP_SECONDS = 0.1
# Tests that run tasks inline (no broker) wait in the caller for work due this soon at most.
EAGER_WAIT_SECONDS = 15.0
# A pump with batches in flight and nothing to pick waits for their answers this long at most
# before it looks again, and at least this long (not a busy loop).
MAX_FLIGHT_WAIT_SECONDS = 0.25
MIN_FLIGHT_WAIT_SECONDS = 0.002
BUSY_WAIT_SECONDS = 0.02


def _eager() -> bool:
    from celery import current_app

    return bool(current_app.conf.task_always_eager)


def pump_run(*, slot: int, ticket: str) -> dict:
    """Run one pump slice (see the module docstring). Returns its counts."""
    started = time.monotonic()
    stats: dict = {
        "batches": 0,
        "lanes": 0,
        "rows": 0,
        "sent": 0,
        "sending_seconds": 0.0,
        "ahead_seconds": 0.0,
        "idle_seconds": 0.0,
    }
    try:
        return _pump(slot, ticket, stats)
    finally:
        held = time.monotonic() - started
        metrics.count(
            [
                (
                    "relay_pump_seconds_total",
                    {"phase": "sending"},
                    stats["sending_seconds"] - stats["ahead_seconds"],
                ),
                # A batch's record waiting for the moment of a window picked ahead while this
                # pump had work to pick (SQLite; the end of a slice): at most the pick-ahead.
                ("relay_pump_seconds_total", {"phase": "ahead"}, stats["ahead_seconds"]),
                # Nothing to pick: waiting for the batches in flight (their moments, their
                # answers) or for the next lane's moment, as it would asleep in the broker.
                ("relay_pump_seconds_total", {"phase": "idle"}, stats["idle_seconds"]),
                (
                    "relay_pump_seconds_total",
                    {"phase": "picking"},
                    max(0.0, held - stats["sending_seconds"] - stats["idle_seconds"]),
                ),
                ("relay_pump_batches_total", {}, stats["batches"]),
            ]
        )


def _pump(slot: int, ticket: str, stats: dict) -> dict:
    providers_warm()  # once a process, before this pump claims its slot or leases anything
    now = timezone.now()
    claim = timedelta(seconds=PUMP_CLAIM_SECONDS)
    if not pump_set(slot, ticket, state=State.RUNNING, until=now + claim):
        return {"superseded": True}
    flights: list[Batch] = []
    try:
        return _pump_loop(slot, ticket, stats, flights)
    except BaseException:
        for batch in flights:
            batch.abort()
        raise


def _pump_loop(slot: int, ticket: str, stats: dict, flights: list[Batch]) -> dict:
    """The pump's loop: ``flights`` are its batches in flight (handed over, not recorded);
    every way out of the loop records them first."""
    claim = timedelta(seconds=PUMP_CLAIM_SECONDS)
    started = touched = time.monotonic()
    busy_elsewhere = 0
    while True:
        _land(flights, stats)
        due, wake = fairqueue.pick_due(timezone.now())
        grants = fairqueue.Picked()
        if due:  # then every slow sender's window within the pick-ahead: one batch for them
            lease = fairqueue.new_lease()
            picked = time.monotonic()
            grants = fairqueue.pick(lease=lease)
            granted = {grant.distribution_id for grant in grants}
            for distribution_id in grants.idled:
                if distribution_id not in granted:  # its last rows went in an earlier batch
                    distribution_finish_if_done(distribution_id=distribution_id)
            if not grants:
                wake = fairqueue.next_ready_at()
        if grants:
            busy_elsewhere = 0
            stats["batches"] += 1
            stats["lanes"] += len(grants)
            stats["rows"] += sum(grant.leased for grant in grants)
            batch = batch_start(lease=lease, grants=grants)
            stats["sending_seconds"] += time.monotonic() - picked
            if batch.pipelined and not _eager():
                flights.append(batch)  # recorded once answered, while the next is prepared
            else:
                _record(batch, stats)
            clock = time.monotonic()
            if clock - started >= PUMP_SLICE_SECONDS and not _eager():
                _land(flights, stats, wait=True)
                if pump_set(slot, ticket, state=State.QUEUED, until=timezone.now() + claim):
                    transaction.on_commit(lambda: pumps_queue([(slot, ticket)]))
                return stats
            if clock - touched >= TOUCH_EVERY_SECONDS:
                touched = clock
                if not pump_set(slot, ticket, until=timezone.now() + claim):
                    _land(flights, stats, wait=True)
                    return {**stats, "superseded": True}
            continue
        now = timezone.now()
        if flights:
            # Batches in flight: wait for the first to be answered, or until the next lane
            # may be picked (its window prepared while the others' requests are out).
            _wait(flights, stats, until=None if wake is None else wake - fairqueue.pick_lead())
            continue
        if wake is not None and wake <= now:
            # Ready lanes that another pump was picking that very moment: try again, then
            # leave them to it and look again shortly, asleep in the broker. Its pick takes
            # only the lanes it can serve (``fairqueue.pick``); the rest, and the lanes its
            # answered windows free, are this slot's. Never idle while lanes are ready: gone
            # idle, this slot waited for the next kick while the other pump served every
            # sender alone (with 200 slow senders behind their rate, 40 % of slot time).
            busy_elsewhere += 1
            if busy_elsewhere <= BUSY_RETRIES:
                continue
            busy_elsewhere = 0
            later = fairqueue.next_ready_at(after=now)
            soon = now + timedelta(seconds=BUSY_SLEEP_SECONDS)
            wake = soon if later is None else min(later, soon)
        if wake is None or (_eager() and (wake - now).total_seconds() > EAGER_WAIT_SECONDS):
            pump_set(slot, ticket, state=State.IDLE, until=None)
            # A lane that opened while this pump was deciding saw it running: no one was
            # kicked for it.
            ready = fairqueue.next_ready_at()
            if ready is not None and ready <= timezone.now():
                pumps_kick()
            return stats
        # A sender's window is picked ahead of its bucket (``fairqueue.pick_lead``); a lane
        # waiting for its rows (not its sender) is only ready at ``wake`` itself.
        early = wake - fairqueue.pick_lead()
        wake = early if early > now else wake
        wake = min(wake, now + timedelta(seconds=MAX_SLEEP_SECONDS))
        if _eager():
            # Tests running tasks inline have no broker to hold the pump until then.
            time.sleep(max(0.0, (wake - now).total_seconds()))
            continue
        if not pump_set(slot, ticket, state=State.SLEEPING, until=wake):
            return {**stats, "superseded": True}
        transaction.on_commit(lambda wake=wake: pumps_queue([(slot, ticket)], eta=wake))
        return {**stats, "sleeping_until": wake.isoformat()}


def _record(batch: Batch, stats: dict) -> None:
    """Record a batch's answers (waiting for them if need be) into the pump's counts."""
    started = time.monotonic()
    outcome = batch.finish()
    stats["sent"] += outcome.get("sent", 0)
    stats["ahead_seconds"] += outcome.get("ahead_seconds", 0.0)
    stats["sending_seconds"] += time.monotonic() - started


def _land(flights: list[Batch], stats: dict, *, wait: bool = False) -> None:
    """Record the batches in flight that are answered (all of them, waiting, if ``wait``),
    oldest first."""
    for batch in list(flights):
        if wait or batch.done():
            flights.remove(batch)
            _record(batch, stats)


def _wait(flights: list[Batch], stats: dict, *, until) -> None:
    """With nothing to pick: block until a batch in flight is answered or ``until`` (when the
    next lane may be picked; at most ``MAX_FLIGHT_WAIT_SECONDS``, at least a moment). Idle
    time (``idle_seconds``): the pump would sleep in the broker as long, and wakes for the
    next lane as it would there; no lane that could be sent waits for it."""
    if any(batch.done() for batch in flights):
        return
    now = time.time()
    limit = now + MAX_FLIGHT_WAIT_SECONDS
    if until is not None:
        # Lanes ready now that this pump could not take are another pump's: look again soon.
        limit = min(limit, max(until.timestamp(), now + BUSY_WAIT_SECONDS))
    # A sync window waiting for its moment is handed over by its batch's record.
    limit = min([limit, *(batch.moment() for batch in flights if batch.moment() > now)])
    limit = max(limit, now + MIN_FLIGHT_WAIT_SECONDS)
    futures = [batch.future() for batch in flights if batch.future() is not None]
    if futures:
        concurrent.futures.wait(
            futures, timeout=limit - now, return_when=concurrent.futures.FIRST_COMPLETED
        )
    else:
        time.sleep(limit - now)
    stats["idle_seconds"] += time.time() - now
