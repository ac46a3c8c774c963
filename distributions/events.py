"""The webhook events of distributions: ``recipient.status_changed`` and
``distribution.finished`` (built here, delivered by ``webhooks``; see docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count

from distributions.models import Distribution, Message
from participants.selectors import person_ids_of
from webhooks.events import events_raise, iso
from webhooks.models import EventType


def distribution_facts(distribution_id: int) -> tuple[int, int, str, str, str, bool]:
    """(brand id, project id, channel, kind, label, is a test message) of a distribution (one
    query)."""
    row = Distribution.objects.filter(pk=distribution_id).values_list(
        "project__brand_id", "project_id", "channel", "kind", "label", "origin_kind"
    )
    *facts, origin_kind = row.get()
    return (*facts, origin_kind == Distribution.Origin.TEST)


# --- recipient.status_changed --------------------------------------------------------------
def recipient_statuses_raised(
    *, distribution_id: int, changes: Iterable[tuple[int, str]], at: datetime
) -> int:
    """Recipient rows of one distribution moved to a new status: ``changes`` is
    ``(message id, new status)``. One query when no endpoint listens, three when one does,
    however many rows."""
    changes = list(changes)
    if not changes:
        return 0

    def build():
        _, project_id, channel, kind, label, test = distribution_facts(distribution_id)

        rows = {
            row["pk"]: row
            for row in Message.objects.filter(pk__in=[pk for pk, _ in changes]).values(
                "pk", "participant_id", "address", "error_code", "status_reason"
            )
        }
        people = person_ids_of(row["participant_id"] for row in rows.values())
        for message_id, status in changes:
            row = rows.get(message_id)
            if row is None:
                continue
            yield (
                f"message:{message_id}",
                {
                    "message_id": message_id,
                    "distribution_id": distribution_id,
                    "project_id": project_id,
                    "channel": label or channel,
                    "kind": kind,
                    "test": test,
                    "participant_id": row["participant_id"],
                    "person_id": people.get(row["participant_id"]),
                    "address": row["address"],
                    "status": str(status),
                    "changed_at": iso(at),
                    "error_code": row["error_code"],
                    "reason": row["status_reason"],
                },
            )

    return events_raise(
        distribution_id=distribution_id,
        event_type=EventType.RECIPIENT_STATUS_CHANGED,
        build=build,
        at=at,
    )


# --- distribution.finished -----------------------------------------------------------------
def distribution_finished_raised(*, distribution: Distribution) -> int:
    """A distribution ended (Sent, Failed or Interrupted)."""

    def build():
        _, project_id, channel, kind, label, test = distribution_facts(distribution.pk)

        counts = {
            row["status"]: row["n"]
            for row in Message.objects.filter(distribution_id=distribution.pk)
            .values("status")
            .annotate(n=Count("pk"))
            .order_by()
        }
        yield (
            f"distribution:{distribution.pk}",
            {
                "distribution_id": distribution.pk,
                "project_id": project_id,
                "name": getattr(distribution, "name", "") or "",
                "channel": label or channel,
                "kind": kind,
                "test": test,
                "status": distribution.status,
                "reason": distribution.status_reason,
                "started_at": iso(getattr(distribution, "started_at", None)),
                "finished_at": iso(distribution.finished_at),
                "recipients": {"total": sum(counts.values()), "by_status": counts},
            },
        )

    return events_raise(
        distribution_id=distribution.pk,
        event_type=EventType.DISTRIBUTION_FINISHED,
        build=build,
        at=distribution.finished_at,
    )
