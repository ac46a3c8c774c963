"""Thin tasks: load by id, call one service, return a small stats dict (for the worker's log:
no result is stored, nobody waits for one)."""

from __future__ import annotations

from celery import shared_task

from conversations.replies import replies_apply
from conversations.sending import turns_send, turns_send_stale


@shared_task(name="conversations.tasks.turns_send_task", ignore_result=True)
def turns_send_task(turn_ids: list[int]) -> dict:
    """Send a conversation's Pending texts (each at most once)."""
    return turns_send(turn_ids=turn_ids)


@shared_task(name="conversations.tasks.turns_send_stale_task")
def turns_send_stale_task() -> dict:
    """Periodic: queue again the Pending texts whose task was lost."""
    return {"queued": turns_send_stale()}


@shared_task(name="conversations.tasks.replies_apply_task", ignore_result=True)
def replies_apply_task(last_look: bool = False) -> dict:
    """Apply the stored replies waiting for their conversation step (kicked after a reply is
    stored, and periodic: picks up what a dead worker or a lost kick left; ``last_look``:
    queued by a run that went dry, see ``replies_apply``)."""
    return replies_apply(last_look=last_look)
