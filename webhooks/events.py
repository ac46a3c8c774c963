"""Raising webhook events: the one function each service calls when something happened.

``events_raise`` asks once (one indexed query) which enabled endpoints of the brand want the
event type; when none does, it returns at once and the payload is never built (the hot paths
that call it, e.g. a send window of 100 rows, pay one query per batch, nothing per row). When
some do, it inserts the events and their deliveries in bulk, and queues the deliveries after
the surrounding transaction commits (``transaction.on_commit``): a rolled-back change sends
nothing, and a worker never looks for a row that is not committed yet.

Each app builds the events of the objects it owns and calls ``events_raise``: its
``*_raised`` helpers live in ``distributions.events``, ``optouts.events`` and
``surveys.events``. This app knows no other app: it only records and delivers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime

from django.utils import timezone

from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.services import enqueue

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

    by_endpoint: dict[int, list[int]] = {}
    for delivery in deliveries:
        by_endpoint.setdefault(delivery.endpoint_id, []).append(delivery.pk)
    for ids in by_endpoint.values():
        enqueue(ids)  # after commit
    return len(deliveries)


def iso(value: datetime | None) -> str | None:
    """A timestamp as an event payload writes it (ISO 8601), or None."""
    return value.isoformat() if value else None
