"""Thin tasks: load by id, call one service, return a small stats dict."""

from __future__ import annotations

from celery import shared_task

from core.locks import periodic_lock
from webhooks import services

# A hanging receiver is cut by the HTTP timeout (RELAY_WEBHOOKS_TIMEOUT); this hard limit is
# the backstop for one that trickles its answer byte by byte.
TASK_TIME_LIMIT = 60


@shared_task(ignore_result=True, time_limit=TASK_TIME_LIMIT, soft_time_limit=TASK_TIME_LIMIT - 5)
def webhook_deliver_task(delivery_ids: list[int] | int) -> dict:
    if isinstance(delivery_ids, int):
        delivery_ids = [delivery_ids]
    outcomes = services.deliveries_attempt(delivery_ids=delivery_ids)
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome["outcome"]] = counts.get(outcome["outcome"], 0) + 1
    return counts


@shared_task(ignore_result=True)
def webhooks_sweep_task() -> dict:
    with periodic_lock("webhooks-sweep", timeout=30) as acquired:
        if not acquired:
            return {"skipped": "another sweep is running"}
        return services.deliveries_sweep()
