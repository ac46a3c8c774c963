"""Raising webhook events: the one function each service calls when something happened.

``events_raise`` asks once (one indexed query) which enabled endpoints of the brand want the
event type; when none does, it returns at once and the payload is never built (the hot paths
that call it, e.g. a send window of 100 rows, pay one query per batch, nothing per row). When
some do, it inserts the events and their deliveries in bulk, and queues the deliveries after
the surrounding transaction commits (``transaction.on_commit``): a rolled-back change sends
nothing, and a worker never looks for a row that is not committed yet.

The ``*_raised`` helpers below build each event's payload; services call those.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime

from django.db.models import Count
from django.utils import timezone

from webhooks.models import EventType, WebhookDelivery, WebhookEndpoint, WebhookEvent

# Events per INSERT: one send window (100 rows) or one bulk status ingest fits in one.
EVENT_BATCH = 500

Items = Iterable[tuple[str, dict]]


def subscribed_endpoints(
    *, event_type: str, brand_id: int | None = None, distribution_id: int | None = None
) -> list[tuple[int, int]]:
    """(endpoint id, brand id) of the brand's enabled endpoints that want ``event_type``
    (one query). The brand
    is given, or found through a distribution in the same query."""
    endpoints = WebhookEndpoint.objects.filter(is_enabled=True)
    if brand_id is not None:
        endpoints = endpoints.filter(brand_id=brand_id)
    else:
        endpoints = endpoints.filter(brand__projects__distributions=distribution_id)
    rows = endpoints.order_by().values_list("pk", "brand_id", "events")
    return [(pk, brand) for pk, brand, events in rows if event_type in (events or [])]


def brands_subscribed(*, event_type: str, brand_ids: Iterable[int]) -> set[int]:
    """Which of these brands have an enabled endpoint that wants ``event_type`` (one query):
    a send batch of many brands asks once, and raises events only for those."""
    wanted = set(brand_ids)
    if not wanted:
        return set()
    rows = (
        WebhookEndpoint.objects.filter(is_enabled=True, brand_id__in=wanted)
        .order_by()
        .values_list("brand_id", "events")
    )
    return {brand for brand, events in rows if event_type in (events or [])}


def events_raise(
    *,
    event_type: str,
    build: Callable[[], Items],
    brand_id: int | None = None,
    distribution_id: int | None = None,
    at: datetime | None = None,
) -> int:
    """Record ``event_type`` for each (object key, data) that ``build`` returns, for every
    endpoint of the brand that wants it; queue the deliveries after commit. Returns the
    number of deliveries made (0, without calling ``build``, when no endpoint wants it)."""
    found = subscribed_endpoints(
        event_type=event_type, brand_id=brand_id, distribution_id=distribution_id
    )
    if not found:
        return 0
    endpoint_ids = [pk for pk, _ in found]
    brand_id = found[0][1]
    at = at or timezone.now()
    events = [
        WebhookEvent(
            event_id=uuid.uuid4(),
            brand_id=brand_id,
            type=event_type,
            object_key=key[:120],
            payload=data,
            created_at=at,
        )
        for key, data in build()
    ]
    if not events:
        return 0
    WebhookEvent.objects.bulk_create(events, batch_size=EVENT_BATCH)
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint_id=endpoint_id,
                event=event,
                object_key=event.object_key,
                next_attempt_at=at,
                window_started_at=at,
                created_at=at,
            )
            for event in events
            for endpoint_id in endpoint_ids
        ],
        batch_size=EVENT_BATCH,
    )
    # One endpoint's deliveries per task: a slow receiver never holds up another's.
    from webhooks.services import enqueue

    by_endpoint: dict[int, list[int]] = {}
    for delivery in deliveries:
        by_endpoint.setdefault(delivery.endpoint_id, []).append(delivery.pk)
    for ids in by_endpoint.values():
        enqueue(ids)  # after commit
    return len(deliveries)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _distribution_facts(distribution_id: int) -> tuple[int, int, str, str, str]:
    """(brand id, project id, channel, kind, label) of a distribution (one query)."""
    from distributions.models import Distribution

    row = Distribution.objects.filter(pk=distribution_id).values_list(
        "project__brand_id", "project_id", "channel", "kind", "label"
    )
    return tuple(row.get())


def _person_ids(participant_ids: Iterable[int | None]) -> dict[int, str]:
    from participants.models import Participant

    wanted = {pk for pk in participant_ids if pk}
    if not wanted:
        return {}
    return dict(Participant.objects.filter(pk__in=wanted).values_list("pk", "person__person_id"))


# --- link.opened and response.completed --------------------------------------------------------
def _link_facts(link) -> dict:
    from projects.transactions import Transaction

    label = ""
    if link.distribution_id:
        label = _distribution_facts(link.distribution_id)[4]
    transaction_id = (
        Transaction.objects.filter(link_id=link.pk).values_list("external_id", flat=True).first()
        if label
        else None
    )
    return {
        "link_id": link.pk,
        "project_id": link.project_id,
        "distribution_id": link.distribution_id,
        "participant_id": link.participant_id,
        "person_id": _person_ids([link.participant_id]).get(link.participant_id),
        "channel": label or link.channel,
        "transaction_id": transaction_id,
    }


def link_opened_raised(*, link, at: datetime) -> int:
    """A personal link was opened for the first time."""

    def build():
        yield f"link:{link.pk}", {**_link_facts(link), "opened_at": _iso(at)}

    return events_raise(
        brand_id=link.project.brand_id, event_type=EventType.LINK_OPENED, build=build, at=at
    )


def response_completed_raised(*, response) -> int:
    """A response was recorded as complete (personal link, anonymous link or API)."""
    project = response.project

    def build():
        from projects.models import Question

        questions = {
            str(pk): (text, kind)
            for pk, text, kind in Question.objects.filter(project_id=project.pk).values_list(
                "pk", "text", "kind"
            )
        }
        answers = [
            {
                "question_id": int(key),
                "question": questions.get(key, ("", ""))[0],
                "kind": questions.get(key, ("", ""))[1],
                "value": value,
            }
            for key, value in (response.answers or {}).items()
        ]
        facts = (
            _link_facts(response.link)
            if response.link_id
            else {
                "link_id": None,
                "project_id": project.pk,
                "distribution_id": response.distribution_id,
                "participant_id": response.participant_id,
                "person_id": _person_ids([response.participant_id]).get(response.participant_id),
                "channel": response.channel,
                "transaction_id": None,
            }
        )
        key = f"link:{response.link_id}" if response.link_id else f"response:{response.pk}"
        yield (
            key,
            {
                "response_id": response.pk,
                **facts,
                "status": response.status,
                "started_at": _iso(response.started_at),
                "completed_at": _iso(response.completed_at),
                "answers": answers,
                "embedded_data": response.embedded_data or {},
                "untrusted_keys": response.untrusted_keys or [],
            },
        )

    return events_raise(
        brand_id=project.brand_id,
        event_type=EventType.RESPONSE_COMPLETED,
        build=build,
        at=response.completed_at,
    )


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
        from distributions.models import Message

        _, project_id, channel, kind, label = _distribution_facts(distribution_id)

        rows = {
            row["pk"]: row
            for row in Message.objects.filter(pk__in=[pk for pk, _ in changes]).values(
                "pk", "participant_id", "address", "error_code", "status_reason"
            )
        }
        people = _person_ids(row["participant_id"] for row in rows.values())
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
                    "participant_id": row["participant_id"],
                    "person_id": people.get(row["participant_id"]),
                    "address": row["address"],
                    "status": str(status),
                    "changed_at": _iso(at),
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
def distribution_finished_raised(*, distribution) -> int:
    """A distribution ended (Sent, Failed or Interrupted)."""

    def build():
        from distributions.models import Message

        _, project_id, channel, kind, label = _distribution_facts(distribution.pk)

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
                "status": distribution.status,
                "reason": distribution.status_reason,
                "started_at": _iso(getattr(distribution, "started_at", None)),
                "finished_at": _iso(distribution.finished_at),
                "recipients": {"total": sum(counts.values()), "by_status": counts},
            },
        )

    return events_raise(
        distribution_id=distribution.pk,
        event_type=EventType.DISTRIBUTION_FINISHED,
        build=build,
        at=distribution.finished_at,
    )


# --- participant.opted_out -----------------------------------------------------------------
def opted_out_raised(*, optout, reason: str = "") -> int:
    """An address was opted out of a channel (STOP reply, opt-out link, provider, admin)."""

    def build():
        person = optout.person
        yield (
            f"optout:{optout.channel}:{optout.address}",
            {
                "opt_out_id": optout.pk,
                "channel": optout.channel,
                "address": optout.address,
                "scope": optout.scope,
                "source": optout.source,
                "reason": reason,
                "person_id": person.person_id if person else None,
                "directory_person": person.pk if person else None,
                "opted_out_at": _iso(optout.created_at),
            },
        )

    return events_raise(
        brand_id=optout.brand_id,
        event_type=EventType.PARTICIPANT_OPTED_OUT,
        build=build,
        at=optout.created_at,
    )
