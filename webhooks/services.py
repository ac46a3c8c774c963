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
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone

from brands.models import Membership
from brands.roles import Role
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
    *, brand, url: str, events, description: str = "", actor=None
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


def endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor=None) -> str:
    """A new secret, effective for the next attempt; returned once."""
    secret = signing.new_secret()
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "updated_at"])
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
        transaction.on_commit(lambda: _enqueue_heads(endpoint_id=endpoint.pk))
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


def _claim(delivery: WebhookDelivery, now: datetime) -> str:
    """Take the delivery for this worker: one conditional UPDATE (pending, due, first of its
    object, endpoint enabled). Returns the lease, or '' when it is not ours to send now."""
    lease = uuid.uuid4().hex
    changed = (
        WebhookDelivery.objects.filter(
            pk=delivery.pk,
            state=State.PENDING,
            next_attempt_at__lte=now,
            endpoint__is_enabled=True,
        )
        .exclude(Exists(_earlier_open(delivery.pk, delivery.endpoint_id, delivery.object_key)))
        .update(state=State.SENDING, lease=lease, leased_at=now)
    )
    return lease if changed else ""


def delivery_attempt(*, delivery_id: int) -> dict:
    """Make one attempt of a delivery if it is due and first in line; record its outcome and
    schedule what follows. Returns a small stats dict (what happened)."""
    delivery = (
        WebhookDelivery.objects.select_related("endpoint", "event").filter(pk=delivery_id).first()
    )
    if delivery is None:
        return {"outcome": "missing"}
    now = timezone.now()
    if delivery.state != State.PENDING:
        return {"outcome": delivery.state}
    if delivery.next_attempt_at > now:
        _schedule(delivery.pk, (delivery.next_attempt_at - now).total_seconds())
        return {"outcome": "not_due"}
    lease = _claim(delivery, now)
    if not lease:
        return {"outcome": "waiting"}
    endpoint = delivery.endpoint
    body = delivery_body(delivery)
    number = delivery.attempts + 1
    headers = {
        signing.SIGNATURE_HEADER: signing.signature_header(endpoint.secret, body),
        signing.EVENT_ID_HEADER: str(delivery.event.event_id),
        signing.EVENT_TYPE_HEADER: delivery.event.type,
        signing.DELIVERY_ID_HEADER: str(delivery.pk),
        signing.ATTEMPT_HEADER: str(number),
    }
    result = transport.post(endpoint.url, body, headers)
    return _record(delivery, lease, number, result)


def _record(delivery: WebhookDelivery, lease: str, number: int, result) -> dict:
    now = timezone.now()
    error = result.error
    if result.status_code is not None and not result.ok and not error:
        error = f"HTTP {result.status_code}"
    WebhookAttempt.objects.create(
        delivery_id=delivery.pk,
        number=number,
        at=now,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        response_excerpt=result.excerpt[:500],
        error=error[:300],
    )
    common = {
        "attempts": number,
        "last_attempt_at": now,
        "status_code": result.status_code,
        "latency_ms": result.latency_ms,
        "response_excerpt": result.excerpt[:500],
        "error": error[:300],
        "lease": "",
        "leased_at": None,
    }
    mine = WebhookDelivery.objects.filter(pk=delivery.pk, state=State.SENDING, lease=lease)
    endpoint_id = delivery.endpoint_id
    if result.ok:
        mine.update(state=State.DELIVERED, delivered_at=now, **common)
        WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__isnull=False).update(
            failing_since=None
        )
        _enqueue_next(delivery)
        return {"outcome": "delivered", "status_code": result.status_code}
    WebhookEndpoint.objects.filter(pk=endpoint_id, failing_since__isnull=True).update(
        failing_since=now
    )
    window = timedelta(seconds=settings.RELAY_WEBHOOKS_RETRY_WINDOW)
    delay = backoff_seconds(number)
    if now + timedelta(seconds=delay) > delivery.window_started_at + window:
        mine.update(state=State.FAILED, **common)
        _enqueue_next(delivery)
        outcome = "failed"
    else:
        mine.update(state=State.PENDING, next_attempt_at=now + timedelta(seconds=delay), **common)
        _schedule(delivery.pk, delay)
        outcome = "retry"
    _disable_if_failing(endpoint_id, now)
    return {"outcome": outcome, "status_code": result.status_code, "error": error}


def _schedule(delivery_id: int, delay: float) -> None:
    if delay > INLINE_RETRY_MAX_SECONDS:
        return  # the sweep queues it when it is due
    from webhooks.tasks import webhook_deliver_task

    webhook_deliver_task.apply_async((delivery_id,), countdown=max(0.0, delay))


def _enqueue_next(delivery: WebhookDelivery) -> None:
    """The delivery left the line: queue the next one about the same object, if due."""
    from webhooks.tasks import webhook_deliver_task

    following = (
        WebhookDelivery.objects.filter(
            endpoint_id=delivery.endpoint_id,
            object_key=delivery.object_key,
            state=State.PENDING,
            pk__gt=delivery.pk,
        )
        .order_by("pk")
        .values_list("pk", "next_attempt_at")
        .first()
    )
    if following is not None:
        delay = (following[1] - timezone.now()).total_seconds()
        if delay <= 0:
            webhook_deliver_task.delay(following[0])
        else:
            _schedule(following[0], delay)


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
    from webhooks.tasks import webhook_deliver_task

    transaction.on_commit(lambda: webhook_deliver_task.delay(again.pk))
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
    from webhooks.tasks import webhook_deliver_task

    heads = _due_heads(now or timezone.now())
    if endpoint_id is not None:
        heads = heads.filter(endpoint_id=endpoint_id)
    ids = list(heads.values_list("pk", flat=True)[:SWEEP_BATCH])
    for delivery_id in ids:
        webhook_deliver_task.delay(delivery_id)
    return len(ids)


def deliveries_sweep(*, now: datetime | None = None) -> dict:
    """Safety net (beat): put back deliveries left Sending by a dead worker, queue due ones
    whose task was lost or whose retry was too far off for a countdown."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=float(settings.RELAY_WEBHOOKS_TIMEOUT) * 4 + 60)
    released = WebhookDelivery.objects.filter(state=State.SENDING, leased_at__lt=stale).update(
        state=State.PENDING, lease="", leased_at=None, next_attempt_at=now
    )
    # Only what is overdue: fresh deliveries and near retries have their own task queued.
    queued = _enqueue_heads(now=now - timedelta(seconds=settings.RELAY_WEBHOOKS_SWEEP_GRACE))
    return {"released": released, "queued": queued}
