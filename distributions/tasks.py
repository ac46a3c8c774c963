"""Thin tasks: load by id, call one service, return a small stats dict.

Every task runs on the ``control`` queue but the pumps, which run on ``send``
(``CELERY_TASK_ROUTES``): starting, finishing, recovery, imports, webhook deliveries and
provider receipts never wait behind sending.
"""

from __future__ import annotations

import time

from celery import shared_task
from celery.signals import worker_ready

from core.locks import periodic_lock
from distributions import pump, sending, services
from distributions.charging import reservations_settle_all
from distributions.models import Distribution, OutboxMessage
from distributions.series import series_run_due
from projects.models import Response


@shared_task(name="distributions.tasks.distribution_start_task")
def distribution_start_task(distribution_id: int) -> dict:
    return services.distribution_start(distribution_id=distribution_id)


@shared_task(name="distributions.tasks.send_pump_task", ignore_result=True, acks_late=False)
def send_pump_task(slot: int, ticket: str) -> dict:
    """A pump slice (``distributions.pump``). Acknowledged on receipt: a pump holds no
    rows between batches, and a dead worker's slot is claimed again by the next kick."""
    return pump.pump_run(slot=slot, ticket=ticket)


@shared_task(name="distributions.tasks.send_chunk_task")
def send_chunk_task(distribution_id: int, first_id: int, last_id: int, attempt: int = 0) -> dict:
    """Chunk tasks queued by a release before the fair queue: their distribution goes into
    the fair queue instead (its rows are sent by the pumps)."""
    distribution = Distribution.objects.select_related("project__brand").get(pk=distribution_id)
    if distribution.status != Distribution.Status.IN_PROGRESS:
        return {"skipped": distribution.status}
    return {"pending": sending.distribution_enqueue(distribution=distribution)}


@shared_task(name="distributions.tasks.distributions_dispatch_due_task")
def distributions_dispatch_due_task() -> dict:
    """Start every due distribution (each is claimed exactly once, whoever runs this)."""
    with periodic_lock("dispatch-due", timeout=10) as acquired:
        if not acquired:
            return {"skipped": "another dispatcher is running"}
        started = 0
        for distribution_id in services.distributions_due():
            started += bool(services.distribution_start(distribution_id=distribution_id)["started"])
        return {"started": started}


# The recovery lock outlives a worker killed mid-recovery by this much (core.locks: a live run
# keeps it however long it takes); the next worker's recovery then waits at most this long.
RECOVER_LOCK_SECONDS = 5


@shared_task(name="distributions.tasks.distributions_recover_task")
def distributions_recover_task(suspect_before: float | None = None) -> dict:
    with periodic_lock("recover", timeout=RECOVER_LOCK_SECONDS) as acquired:
        if not acquired:
            # The run in progress may have looked before what this one was queued for (a
            # lease that just lapsed): look again shortly rather than never.
            distributions_recover_task.apply_async(
                kwargs={"suspect_before": suspect_before}, countdown=2
            )
            return {"skipped": "another recovery is running; again in 2 s"}
        return sending.distributions_recover(suspect_before=suspect_before)


@worker_ready.connect
def _recover_when_a_worker_starts(sender=None, **kwargs) -> None:
    """A worker that (re)starts runs recovery at once: rows leased before it started may be
    a dead worker's, settled as soon as their lease lapses, and its pumps replaced, without
    waiting for beat. Runs asked for before it started are forgotten: the dead worker may
    hold them."""
    sending.recoveries_forget_scheduled()
    distributions_recover_task.apply_async(kwargs={"suspect_before": time.time()}, countdown=1)


@shared_task(name="distributions.tasks.outbox_deliver_task")
def outbox_deliver_task(receipts: list[list]) -> dict:
    """Simulated delivery receipts ([message id, sid] pairs), through the same ingest path as
    real provider callbacks."""

    delivered = 0
    for message_id, sid in receipts:
        delivered += services.message_status_ingest(
            provider="outbox", provider_status="delivered", provider_id=sid, message_id=message_id
        )
    OutboxMessage.objects.filter(sid__in=[sid for _, sid in receipts]).update(status="delivered")
    return {"delivered": delivered}


@shared_task(name="distributions.tasks.distribution_on_completion_task")
def distribution_on_completion_task(response_ids: list[int] | int) -> dict:
    """Thank-you emails to the recipients who completed the survey (if any are set to go).
    ``response_ids``: a list (a single id: a task queued before lists)."""
    if isinstance(response_ids, int):
        response_ids = [response_ids]
    responses = list(Response.objects.filter(pk__in=response_ids).order_by("pk"))
    return {"queued": services.distribution_on_completion(responses=responses)}


@shared_task(name="distributions.tasks.distribution_series_run_due_task")
def distribution_series_run_due_task() -> dict:
    """Make the due runs of recurring messages (Lifecycle projects). Each occurrence is claimed
    under a row lock, so the Redis lock only saves a second beat the duplicate work."""
    with periodic_lock("series-run-due", timeout=30) as acquired:
        if not acquired:
            return {"skipped": "another series run is in progress"}
        return series_run_due()


@shared_task(name="distributions.tasks.credits_settle_task")
def credits_settle_task() -> dict:
    """Release what the reservations of finished distributions still hold (a distribution
    stopped while rows were in flight, or deleted): the backstop of the writer paths, so
    that reading a balance never has to write."""
    with periodic_lock("credits-settle", timeout=30) as acquired:
        if not acquired:
            return {"skipped": "another settlement is running"}
        return {"settled": reservations_settle_all()}
