"""What is sending now, across brands: the platform operator's view (``/ops/sending/``, staff
only) beside the Prometheus metrics (``distributions.metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from distributions.models import Distribution, Message
from distributions.services import distribution_counts


@dataclass(frozen=True)
class Sending:
    distribution: Distribution
    handed_over: int
    due: int
    deferred: int
    in_flight: int
    rate: float  # messages/s since it started
    limit: int  # the sender's limit (0: none), if the distribution is in the fair queue
    waiting_for: str  # why nothing goes right now, if so
    next_due: datetime | None
    expected_finish: datetime | None


def sending_now(*, now: datetime | None = None) -> list[Sending]:
    """Every distribution In progress with its progress, rate and expected finish (at the
    slower of its rate so far and its sender's limit)."""
    now = now or timezone.now()
    result = []
    running = (
        Distribution.objects.filter(status=Distribution.Status.IN_PROGRESS)
        .select_related("project__brand", "lane__sender")
        .order_by("started_at", "pk")
    )
    for distribution in running:
        counts = distribution_counts(distribution_id=distribution.pk)["by_status"]
        handed = sum(counts.get(status, 0) for status in Message.HANDED_OVER)
        pending = Message.objects.filter(distribution=distribution, status=Message.Status.PENDING)
        deferred = pending.filter(due_at__gt=now)
        due = counts.get(Message.Status.PENDING, 0) - deferred.count()
        elapsed = max(1.0, (now - (distribution.started_at or now)).total_seconds())
        rate = handed / elapsed
        lane = getattr(distribution, "lane", None)
        sender = lane.sender if lane is not None else None
        limit = sender.rate if sender is not None else 0
        waiting_for = ""
        if sender is not None and sender.ready_at > now:
            waiting_for = sender.paused_reason or "the sender's rate"
        next_due = deferred.order_by("due_at").values_list("due_at", flat=True).first()
        speed = min(x for x in (rate, float(limit or "inf")) if x > 0) if (rate or limit) else 0
        finish = None
        if due == 0:
            finish = next_due or now
        elif speed > 0:
            finish = now + timedelta(seconds=due / speed)
        result.append(
            Sending(
                distribution=distribution,
                handed_over=handed,
                due=due,
                deferred=deferred.count(),
                in_flight=counts.get(Message.Status.SENDING, 0),
                rate=rate,
                limit=limit,
                waiting_for=waiting_for,
                next_due=next_due,
                expected_finish=finish,
            )
        )
    return result
