"""Outbound webhooks: a brand's endpoints, the events raised for them, each delivery and its
attempts.

One ``WebhookEvent`` per thing that happened (only when some endpoint of the brand wants its
type); one ``WebhookDelivery`` per (event, endpoint), which carries the retry state; one
``WebhookAttempt`` per HTTP request made, for the delivery log. ``object_key`` names the object
an event is about (``link:12``, ``message:7``): deliveries of one endpoint about one object go
out in the order they were raised.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from brands.fields import EncryptedTextField, redact
from brands.models import Brand
from brands.scoping import BrandScopedManager


class EventType(models.TextChoices):
    LINK_OPENED = "link.opened", "Link opened"
    RESPONSE_COMPLETED = "response.completed", "Response completed"
    RECIPIENT_STATUS_CHANGED = "recipient.status_changed", "Recipient status changed"
    DISTRIBUTION_FINISHED = "distribution.finished", "Distribution finished"
    PARTICIPANT_OPTED_OUT = "participant.opted_out", "Participant opted out"


class WebhookEndpoint(models.Model):
    """A URL of the brand that receives the events it chose, signed with its secret."""

    brand_path = "brand"
    MAX_PER_BRAND = 20

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField("URL", max_length=500)
    description = models.CharField(max_length=200, blank=True)
    events = models.JSONField(default=list, help_text="Event types this endpoint receives.")
    # Fernet-encrypted at rest (RELAY_ENCRYPTION_KEYS); shown in full once, when made.
    secret = EncryptedTextField()
    # After a rotation with a grace period, deliveries are signed with both secrets until then.
    previous_secret = EncryptedTextField(blank=True, default="")
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    is_enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Start of the current run of failed attempts (None when the last attempt succeeded).
    failing_since = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["brand", "is_enabled"], name="webhook_ep_brand_enabled")]

    def __str__(self) -> str:
        return self.url

    @property
    def secret_hint(self) -> str:
        return redact(self.secret)

    def signing_secrets(self, now=None) -> list[str]:
        """The secrets deliveries are signed with now: the current one, then the previous
        one while its grace period lasts."""
        now = now or timezone.now()
        if self.previous_secret and self.previous_secret_until and self.previous_secret_until > now:
            return [self.secret, self.previous_secret]
        return [self.secret]

    def wants(self, event_type: str) -> bool:
        return event_type in (self.events or [])


class WebhookEvent(models.Model):
    """Something that happened in the brand, as sent to its endpoints (the payload is frozen
    when raised: a redelivery sends the same body)."""

    brand_path = "brand"

    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=40, choices=EventType.choices)
    object_key = models.CharField(max_length=120)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"{self.type} {self.object_key}"


class WebhookDelivery(models.Model):
    """One event to one endpoint: pending until a 2xx answer, retried with backoff, given up
    after the retry window."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed (gave up)"

    OPEN_STATES = (State.PENDING, State.SENDING)
    brand_path = "endpoint__brand"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    # Copied from the event: the ordering check reads (endpoint, object_key) on this table only.
    object_key = models.CharField(max_length=120)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # Retries stop after RELAY_WEBHOOKS_RETRY_WINDOW from here (a redelivery starts a new one).
    window_started_at = models.DateTimeField()
    lease = models.CharField(max_length=32, blank=True)
    leased_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "object_key", "state"], name="webhook_dl_order"),
            models.Index(fields=["state", "next_attempt_at"], name="webhook_dl_due"),
            models.Index(fields=["endpoint", "-id"], name="webhook_dl_endpoint_log"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.state})"


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery: what the endpoint answered, how fast."""

    brand_path = "delivery__endpoint__brand"

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    error = models.CharField(max_length=300, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
