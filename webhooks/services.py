"""Writes of outbound webhooks: endpoints (create, update, rotate, enable, disable, delete),
delivery attempts with retries and ordering, redelivery, the periodic sweep.

What callers can rely on:
- an endpoint's URL passed ``security.url_check`` when it was saved, and every request passes
  it again (on the connected address) when it is made;
- a delivery is attempted by one worker at a time (a conditional UPDATE claims it); a worker
  that dies mid-request leaves it Sending until the sweep puts it back (then it may arrive twice:
  receivers dedupe on ``Relay-Event-Id``);
- deliveries of one endpoint about one object (``object_key``) go out in the order they were
  raised: a later one waits while an earlier one is pending or sending, and goes as soon as the
  earlier one is delivered or given up;
- a failed attempt is retried with exponential backoff until ``RELAY_WEBHOOKS_RETRY_WINDOW``
  after the delivery was raised, then given up (Failed; the redeliver action starts over);
- an endpoint whose attempts have all failed for ``RELAY_WEBHOOKS_DISABLE_AFTER`` is disabled,
  once, and the brand admins are told by email; the endpoint page shows why.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone

from brands.models import Brand, Membership
from brands.roles import Role
from brands.rotation import grace_check
from core.batching import batched
from core.bulk import update_rows
from core.queueing import task_queue
from webhooks import signing, transport
from webhooks.models import EventType, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.security import UnsafeURL, url_check

logger = logging.getLogger(__name__)
State = WebhookDelivery.State
# Retries closer than this go back to the queue with a countdown; later ones wait for the sweep.
INLINE_RETRY_MAX_SECONDS = 300
# Deliveries queued by one sweep (the next sweep takes the rest).
SWEEP_BATCH = 1000


# --- endpoints -----------------------------------------------------------------------------
def _clean(*, url: str, events, description: str = "") -> dict:
    errors = {}
    url = (url or "").strip()
    if not url:
        errors["url"] = "Enter the URL that receives the events."
    elif len(url) > 500:
        errors["url"] = "At most 500 characters."
    else:
        try:
            url_check(url)
        except UnsafeURL as exc:
            errors["url"] = str(exc)
    if isinstance(events, str):
        events = [events]
    events = list(dict.fromkeys(events or []))
    unknown = [event for event in events if event not in EventType.values]
    if not events:
        errors["events"] = "Choose at least one event."
    elif unknown:
        errors["events"] = f"Unknown event type: {', '.join(map(str, unknown))}."
    if errors:
        raise ValidationError(errors)
    return {"url": url, "events": events, "description": (description or "").strip()[:200]}


@dataclass
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def endpoint_create(
    *, brand: Brand, url: str, events, description: str = "", actor=None
) -> IssuedEndpoint:
    """Register an endpoint; the answer carries its secret, the only time it is shown."""
    values = _clean(url=url, events=events, description=description)
    if WebhookEndpoint.objects.filter(brand=brand).count() >= WebhookEndpoint.MAX_PER_BRAND:
        raise ValidationError(
            {"url": f"A brand has at most {WebhookEndpoint.MAX_PER_BRAND} webhook endpoints."}
        )
    secret = signing.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        brand=brand,
        secret=secret,
        created_by=actor if getattr(actor, "pk", None) else None,
        **values,
    )
    return IssuedEndpoint(endpoint, secret)


def endpoint_update(*, endpoint: WebhookEndpoint, actor=None, **changes) -> WebhookEndpoint:
    """Change the URL, the events or the description (each optional)."""
    values = _clean(
        url=changes.get("url", endpoint.url),
        events=changes.get("events", endpoint.events),
        description=changes.get("description", endpoint.description),
    )
    for name, value in values.items():
        setattr(endpoint, name, value)
    endpoint.save(update_fields=[*values, "updated_at"])
    return endpoint


def endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, actor=None, grace: timedelta = timedelta(0)
) -> str:
    """A new secret, effective for the next attempt; returned once. With ``grace`` (at most
    ``brands.rotation.MAX_GRACE``) deliveries are signed with the previous secret too until it ends,
    so the receiver can switch without refusing any."""
    grace_check(grace)
    secret = signing.new_secret()
    endpoint.previous_secret = endpoint.secret if grace else ""
    endpoint.previous_secret_until = timezone.now() + grace if grace else None
    endpoint.secret = secret
    endpoint.save(
        update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"]
    )
    return secret


def endpoint_disable(*, endpoint: WebhookEndpoint, reason: str, actor=None) -> bool:
    """Stop delivering to the endpoint (its pending deliveries wait). True if it changed."""
    now = timezone.now()
    changed = WebhookEndpoint.objects.filter(pk=endpoint.pk, is_enabled=True).update(
        is_enabled=False, disabled_reason=reason[:300], disabled_at=now, updated_at=now
    )
    endpoint.refresh_from_db()
    return bool(changed)


def endpoint_enable(*, endpoint: WebhookEndpoint, actor=None) -> bool:
    """Deliver again: the waiting deliveries go now, each with a fresh retry window."""
    now = timezone.now()
    changed = WebhookEndpoint.objects.filter(pk=endpoint.pk, is_enabled=False).update(
        is_enabled=True, disabled_reason="", disabled_at=None, failing_since=None, updated_at=now
    )
    endpoint.refresh_from_db()
    if changed:
        WebhookDelivery.objects.filter(endpoint=endpoint, state=State.PENDING).update(
            next_attempt_at=now, window_started_at=now
        )
        _enqueue_heads(endpoint_id=endpoint.pk)
    return bool(changed)


def endpoint_delete(*, endpoint: WebhookEndpoint, actor=None) -> None:
    endpoint.delete()


# --- deliveries ----------------------------------------------------------------------------
def backoff_seconds(attempts: int) -> float:
    """Delay before attempt ``attempts + 1``: base x 2^(attempts - 1), capped."""
    base = float(settings.RELAY_WEBHOOKS_BACKOFF_BASE)
    cap = float(settings.RELAY_WEBHOOKS_BACKOFF_MAX)
    return min(cap, base * (2 ** max(0, attempts - 1)))


def delivery_body(delivery: WebhookDelivery) -> bytes:
    event = delivery.event
    envelope = {
        "id": str(event.event_id),
        "type": event.type,
        "created_at": event.created_at.isoformat(),
        "data": event.payload,
    }
    return json.dumps(envelope, separators=(",", ":"), sort_keys=False).encode()


def _earlier_open(delivery_ref, endpoint_ref, key_ref):
    return WebhookDelivery.objects.filter(
        endpoint_id=endpoint_ref,
        object_key=key_ref,
        pk__lt=delivery_ref,
        state__in=WebhookDelivery.OPEN_STATES,
    )


def _claim(ids: list[int], now: datetime) -> str:
    """Take the deliveries of ``ids`` that may go now for this worker: one conditional UPDATE
    (pending, due, endpoint enabled, no earlier open delivery about the same object). Returns
    the lease that marks them."""
    lease = uuid.uuid4().hex
    WebhookDelivery.objects.filter(
        pk__in=ids, state=State.PENDING, next_attempt_at__lte=now, endpoint__is_enabled=True
    ).exclude(
        Exists(_earlier_open(OuterRef("pk"), OuterRef("endpoint_id"), OuterRef("object_key")))
    ).update(state=State.SENDING, lease=lease, leased_at=now)
    return lease


# Markers of deliveries claimed but not attempted in this call.
DEFERRED = object()  # their endpoint just failed to answer: wait for the first retry delay
REQUEUED = object()  # the call used its time budget: straight back to the queue
# Seconds of requests per call before the rest goes back to the queue (the task's hard limit
# is 60 s: a receiver answering slowly, just under the timeout, must not reach it).
CHUNK_BUDGET_SECONDS = 20


def _headers(delivery: WebhookDelivery, body: bytes, number: int) -> dict[str, str]:
    return {
        signing.SIGNATURE_HEADER: signing.signature_header(
            delivery.endpoint.signing_secrets(), body
        ),
        signing.EVENT_ID_HEADER: str(delivery.event.event_id),
        signing.EVENT_TYPE_HEADER: delivery.event.type,
        signing.DELIVERY_ID_HEADER: str(delivery.pk),
        signing.ATTEMPT_HEADER: str(number),
    }


def deliveries_attempt(*, delivery_ids: list[int]) -> dict[int, dict]:
    """Attempt the deliveries of ``delivery_ids`` that are due and first in line (one worker
    each: they are claimed by one UPDATE), record the outcomes in a few statements, and queue
    what follows (retries, the next delivery about the same object).

    Requests to one endpoint go one after the other; once one of them gets no answer (timeout,
    refused connection) the endpoint's other deliveries of this call are put back unattempted
    for the first retry delay, so that a hanging receiver costs one timeout, not one per row.
    Returns ``{delivery id: {"outcome": …}}``.
    """
    ids = sorted(set(delivery_ids))
    now = timezone.now()
    lease = _claim(ids, now)
    claimed = list(
        WebhookDelivery.objects.filter(pk__in=ids, lease=lease, state=State.SENDING)
        .select_related("endpoint", "event")
        .order_by("pk")
    )
    outcomes = _unclaimed_outcomes(set(ids) - {d.pk for d in claimed}, now)
    unreachable: set[int] = set()
    checked: set[int] = set()
    results = []
    started = time.monotonic()
    for delivery in claimed:
        if delivery.endpoint_id in unreachable:
            results.append((delivery, DEFERRED))
            continue
        if results and time.monotonic() - started > CHUNK_BUDGET_SECONDS:
            results.append((delivery, REQUEUED))  # a slow receiver: the rest in a new task
            continue
        body = delivery_body(delivery)
        number = delivery.attempts + 1
        result = transport.post(
            delivery.endpoint.url,
            body,
            _headers(delivery, body, number),
            check=delivery.endpoint_id not in checked,  # once per endpoint and call
        )
        checked.add(delivery.endpoint_id)
        if result.status_code is None:
            unreachable.add(delivery.endpoint_id)
        results.append((delivery, result))
    if results:
        outcomes.update(_record(results, lease))
    return outcomes


def delivery_attempt(*, delivery_id: int) -> dict:
    """One delivery (see ``deliveries_attempt``)."""
    return deliveries_attempt(delivery_ids=[delivery_id])[delivery_id]


def _unclaimed_outcomes(ids: set[int], now: datetime) -> dict[int, dict]:
    """Why each of ``ids`` was not taken; a pending one that is not due yet is queued for
    when it is (a duplicate or early task must not leave it to the sweep)."""
    if not ids:
        return {}
    outcomes = {pk: {"outcome": "missing"} for pk in ids}
    for pk, state, due in WebhookDelivery.objects.filter(pk__in=ids).values_list(
        "pk", "state", "next_attempt_at"
    ):
        if state != State.PENDING:
            outcomes[pk] = {"outcome": state}
        elif due > now:
            _schedule([pk], (due - now).total_seconds())
            outcomes[pk] = {"outcome": "not_due"}
        else:
            outcomes[pk] = {"outcome": "waiting"}  # an earlier one first, or endpoint disabled
    return outcomes


# Columns written per delivery after an attempt, with their PostgreSQL types (VALUES rows).
RECORD_COLUMNS = [
    "state",
    "attempts",
    "next_attempt_at",
    "last_attempt_at",
    "delivered_at",
    "status_code",
    "latency_ms",
    "response_excerpt",
    "error",
    "lease",
    "leased_at",
]
RECORD_CASTS = {
    "attempts": "integer",
    "next_attempt_at": "timestamptz",
    "last_attempt_at": "timestamptz",
    "delivered_at": "timestamptz",
    "status_code": "integer",
    "latency_ms": "integer",
    "leased_at": "timestamptz",
}


def _record(results: list, lease: str) -> dict[int, dict]:
    """Write the attempts and the deliveries' new states in bulk; schedule what follows."""

    now = timezone.now()
    window = timedelta(seconds=settings.RELAY_WEBHOOKS_RETRY_WINDOW)
    outcomes: dict[int, dict] = {}
    attempts: list[WebhookAttempt] = []
    rows = []
    retries: dict[float, list[int]] = {}
    left_line: list[WebhookDelivery] = []
    succeeded: set[int] = set()
    failed: set[int] = set()
    for delivery, result in results:
        if result in (DEFERRED, REQUEUED):  # not attempted (see deliveries_attempt)
            wait = backoff_seconds(1) if result is DEFERRED else 0.0
            rows.append(
                (
                    delivery.pk,
                    State.PENDING,
                    delivery.attempts,
                    now + timedelta(seconds=wait),
                    delivery.last_attempt_at,
                    None,
                    delivery.status_code,
                    delivery.latency_ms,
                    delivery.response_excerpt,
                    delivery.error,
                    "",
                    None,
                )
            )
            retries.setdefault(wait, []).append(delivery.pk)
            outcomes[delivery.pk] = {"outcome": "deferred" if wait else "requeued"}
            continue
        number = delivery.attempts + 1
        error = result.error or ("" if result.ok else f"HTTP {result.status_code}")
        excerpt = result.excerpt[:500]
        attempts.append(
            WebhookAttempt(
                delivery_id=delivery.pk,
                number=number,
                at=now,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                response_excerpt=excerpt,
                error=error[:300],
            )
        )
        delay = backoff_seconds(number)
        if result.ok:
            state, next_at, delivered_at = State.DELIVERED, delivery.next_attempt_at, now
            succeeded.add(delivery.endpoint_id)
            left_line.append(delivery)
        elif now + timedelta(seconds=delay) > delivery.window_started_at + window:
            state, next_at, delivered_at = State.FAILED, delivery.next_attempt_at, None
            failed.add(delivery.endpoint_id)
            left_line.append(delivery)
        else:
            state, next_at, delivered_at = State.PENDING, now + timedelta(seconds=delay), None
            failed.add(delivery.endpoint_id)
            retries.setdefault(delay, []).append(delivery.pk)
        rows.append(
            (
                delivery.pk,
                state,
                number,
                next_at,
                now,
                delivered_at,
                result.status_code,
                result.latency_ms,
                excerpt,
                error[:300],
                "",
                None,
            )
        )
        outcomes[delivery.pk] = {
            "outcome": {"pending": "retry"}.get(state, state),
            "status_code": result.status_code,
            "error": error,
        }
    WebhookAttempt.objects.bulk_create(attempts)
    update_rows(
        WebhookDelivery,
        RECORD_COLUMNS,
        rows,
        where="t.lease = %s AND t.state = %s",
        params=[lease, State.SENDING],
        casts=RECORD_CASTS,
    )
    if succeeded:
        WebhookEndpoint.objects.filter(pk__in=succeeded, failing_since__isnull=False).update(
            failing_since=None
        )
    if failed - succeeded:
        WebhookEndpoint.objects.filter(
            pk__in=failed - succeeded, failing_since__isnull=True
        ).update(failing_since=now)
        for endpoint_id in failed - succeeded:
            _disable_if_failing(endpoint_id, now)
    for delay, ids in retries.items():
        _schedule(ids, delay)
    _enqueue_next(left_line)
    return outcomes


# Deliveries per task: a few hundred milliseconds of requests to a healthy receiver.
DELIVERY_CHUNK = 50
DELIVER_TASK = "webhooks.tasks.webhook_deliver_task"


def enqueue(ids: list[int], *, delay: float = 0.0) -> None:
    """Queue deliveries, ``DELIVERY_CHUNK`` per task, after the current transaction commits
    (at once in autocommit, as in a worker)."""
    for chunk in batched(ids, DELIVERY_CHUNK):
        task_queue(DELIVER_TASK, list(chunk), countdown=delay if delay > 0 else None)


def _schedule(ids: list[int], delay: float) -> None:
    if delay > INLINE_RETRY_MAX_SECONDS:
        return  # the sweep queues them when they are due
    enqueue(ids, delay=max(0.0, delay))


def _enqueue_next(done: list[WebhookDelivery]) -> None:
    """These deliveries left the line: queue the next one about each same object (one query)."""
    if not done:
        return
    keys = {(d.endpoint_id, d.object_key): d.pk for d in done}
    waiting = (
        WebhookDelivery.objects.filter(
            endpoint_id__in={endpoint for endpoint, _ in keys},
            object_key__in={key for _, key in keys},
            state=State.PENDING,
            pk__gt=min(keys.values()),
        )
        .order_by("pk")
        .values_list("pk", "endpoint_id", "object_key", "next_attempt_at")
    )
    now = timezone.now()
    due, later = [], {}
    seen = set()
    for pk, endpoint_id, object_key, next_at in waiting:
        key = (endpoint_id, object_key)
        if key not in keys or key in seen or pk < keys[key]:
            continue
        seen.add(key)
        delay = (next_at - now).total_seconds()
        if delay <= 0:
            due.append(pk)
        else:
            later.setdefault(delay, []).append(pk)
    if due:
        enqueue(due)
    for delay, ids in later.items():
        _schedule(ids, delay)


def _disable_if_failing(endpoint_id: int, now: datetime) -> None:
    limit = now - timedelta(seconds=settings.RELAY_WEBHOOKS_DISABLE_AFTER)
    reason = (
        "Disabled automatically: every delivery attempt failed for "
        f"{_span(settings.RELAY_WEBHOOKS_DISABLE_AFTER)}."
    )
    changed = WebhookEndpoint.objects.filter(
        pk=endpoint_id, is_enabled=True, failing_since__lte=limit
    ).update(is_enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
    if changed:
        endpoint = WebhookEndpoint.objects.select_related("brand").get(pk=endpoint_id)
        _notify_admins(endpoint)


def _span(seconds: int) -> str:
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{seconds} seconds"


def _notify_admins(endpoint: WebhookEndpoint) -> int:
    """Email the brand admins that the endpoint was disabled (Django's mail backend)."""
    emails = sorted(
        {
            email
            for email in Membership.objects.filter(
                brand_id=endpoint.brand_id, role=Role.BRAND_ADMIN
            ).values_list("user__email", flat=True)
            if email
        }
    )
    if not emails:
        return 0
    page = settings.PUBLIC_BASE_URL + reverse("webhook_endpoints:detail", args=[endpoint.pk])
    try:
        return send_mail(
            subject=f"[Relay] Webhook endpoint disabled: {endpoint.url}"[:200],
            message=(
                f"The webhook endpoint {endpoint.url} of {endpoint.brand.name} was disabled.\n\n"
                f"{endpoint.disabled_reason}\n\n"
                "Its pending deliveries are kept. Fix the receiver, then enable the endpoint "
                f"again on its page:\n{page}\n"
            ),
            from_email=None,
            recipient_list=emails,
        )
    except OSError:
        logger.exception("could not email the brand admins about endpoint %s", endpoint.pk)
        return 0


def delivery_redeliver(*, delivery: WebhookDelivery, actor=None) -> WebhookDelivery:
    """Send the same event (same id and body) to the same endpoint again, as a new delivery
    in the log; it takes its place in the object's line like any new delivery."""
    now = timezone.now()
    again = WebhookDelivery.objects.create(
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        object_key=delivery.object_key,
        next_attempt_at=now,
        window_started_at=now,
        created_at=now,
    )
    enqueue([again.pk])
    return again


# --- the periodic sweep --------------------------------------------------------------------
def _due_heads(now: datetime):
    return (
        WebhookDelivery.objects.filter(
            state=State.PENDING, next_attempt_at__lte=now, endpoint__is_enabled=True
        )
        .exclude(
            Exists(_earlier_open(OuterRef("pk"), OuterRef("endpoint_id"), OuterRef("object_key")))
        )
        .order_by("next_attempt_at", "pk")
    )


def _enqueue_heads(*, endpoint_id: int | None = None, now: datetime | None = None) -> int:
    heads = _due_heads(now or timezone.now())
    if endpoint_id is not None:
        heads = heads.filter(endpoint_id=endpoint_id)
    ids = list(heads.values_list("pk", flat=True)[:SWEEP_BATCH])
    enqueue(ids)
    return len(ids)


def deliveries_sweep(*, now: datetime | None = None) -> dict:
    """Safety net (beat): put back deliveries left Sending by a dead worker, queue due ones
    whose task was lost or whose retry was too far off for a countdown."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=float(settings.RELAY_WEBHOOKS_TIMEOUT) * 4 + 60)
    stale_ids = list(
        WebhookDelivery.objects.filter(state=State.SENDING, leased_at__lt=stale).values_list(
            "pk", flat=True
        )[:SWEEP_BATCH]
    )
    released = WebhookDelivery.objects.filter(
        pk__in=stale_ids, state=State.SENDING, leased_at__lt=stale
    ).update(state=State.PENDING, lease="", leased_at=None, next_attempt_at=now)
    if released:
        enqueue(stale_ids)
    # Only what is overdue: fresh deliveries and near retries have their own task queued.
    queued = _enqueue_heads(now=now - timedelta(seconds=settings.RELAY_WEBHOOKS_SWEEP_GRACE))
    return {"released": released, "queued": queued}
