"""How a distribution ends: when no recipient row is open, Sent, Failed or Interrupted (with
the reason), its lane closed, its credits released and ``distribution.finished`` raised.
Below both the services (cancel, start) and the send engine (after every batch), which call it.
"""

from __future__ import annotations

from django.db.models import Count, Q
from django.utils import timezone

from distributions.charging import distribution_release
from distributions.events import distribution_finished_raised, recipient_statuses_raised
from distributions.fairqueue import lane_close
from distributions.models import Distribution, Message, MessageEvent

Status = Distribution.Status
MStatus = Message.Status


def distribution_counts(*, distribution_id: int) -> dict:
    rows = (
        Message.objects.filter(distribution_id=distribution_id)
        .values("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    by_status = {row["status"]: row["n"] for row in rows}
    return {"by_status": by_status, "total": sum(by_status.values())}


def open_messages_close(distribution: Distribution, *, status: str, reason: str) -> int:
    """Pending rows become ``status`` (with an event); rows being sent are left to finish."""
    now = timezone.now()
    ids = list(
        Message.objects.filter(distribution=distribution, status=MStatus.PENDING).values_list(
            "pk", flat=True
        )
    )
    if not ids:
        return 0
    changed = Message.objects.filter(pk__in=ids, status=MStatus.PENDING).update(
        status=status, status_reason=reason[:300], status_changed_at=now
    )
    MessageEvent.objects.bulk_create(
        [
            MessageEvent(message_id=pk, status=status, at=now, source="system", detail=reason[:300])
            for pk in ids
        ],
        batch_size=1000,
    )
    recipient_statuses_raised(
        distribution_id=distribution.pk, changes=[(pk, status) for pk in ids], at=now
    )
    return changed


def distribution_end(distribution: Distribution, status: str, reason: str) -> bool:
    now = timezone.now()
    done = Distribution.objects.filter(pk=distribution.pk, status=Status.IN_PROGRESS).update(
        status=status, status_reason=reason[:500], finished_at=now, updated_at=now
    )
    if done:
        distribution.status, distribution.status_reason, distribution.finished_at = (
            status,
            reason,
            now,
        )
        lane_close(distribution_id=distribution.pk)
        distribution_release(distribution=distribution)
        distribution_finished_raised(distribution=distribution)
    return bool(done)


def distribution_finish_if_done(*, distribution_id: int) -> str | None:
    """When no row is open, end the distribution Sent, Failed or Interrupted. Idempotent."""
    distribution = Distribution.objects.filter(pk=distribution_id).first()
    if distribution is None or distribution.status != Status.IN_PROGRESS:
        return None
    if distribution.trigger == Distribution.TRIGGER_COMPLETION:
        return None  # sends on each completion until it is stopped
    # Called after every chunk: one index probe while rows are open, not a count of them all.
    if Message.objects.filter(
        distribution_id=distribution_id, status__in=Message.OPEN_STATUSES
    ).exists():
        return None
    counts = distribution_counts(distribution_id=distribution_id)["by_status"]
    if any(counts.get(status) for status in Message.OPEN_STATUSES):
        return None
    handed = sum(counts.get(status, 0) for status in Message.HANDED_OVER)
    failed = sum(counts.get(status, 0) for status in Message.FAILED_STATUSES)
    skipped = sum(counts.get(status, 0) for status in Message.NOT_SENDABLE)
    reason_bits = []
    if failed:
        reason_bits.append(f"{failed} failed")
    if skipped:
        reason_bits.append(f"{skipped} skipped")
    stop_reason = _interruption_reason(distribution_id)
    if handed == 0:
        status = Status.FAILED
        if stop_reason:
            reason = f"Nothing was sent: {stop_reason}"
        elif not counts:
            reason = "No participant matched the conditions."
        else:
            reason = "No message could be sent (" + ", ".join(reason_bits) + ")."
    elif stop_reason:
        status = Status.INTERRUPTED
        reason = f"Sent partially: {stop_reason}"
    else:
        status = Status.SENT
        reason = ("Sent with issues: " + ", ".join(reason_bits) + ".") if reason_bits else ""
    distribution_end(distribution, status, reason)
    return status


def _interruption_reason(distribution_id: int) -> str:
    """Why rows were closed without sending (credits, provider account), if they were."""
    reasons = (
        Message.objects.filter(distribution_id=distribution_id, status=MStatus.FAILED)
        .filter(Q(status_reason__startswith="Not sent:"))
        .values_list("status_reason", flat=True)[:1]
    )
    reason = next(iter(reasons), "")
    return reason.removeprefix("Not sent:").strip()
