"""Opt-outs: an address (E.164 phone or email) that a brand must never message on a channel.

``OptOut`` holds the current state (one active row per brand, channel and address); every
opt-out and opt-in is also an ``OptOutEvent`` in the audit trail. An opt-out in one brand does
not silence another brand: each brand is its own sender with its own consent.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from brands.models import Brand
from brands.scoping import BrandScopedManager


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"


class Source(models.TextChoices):
    REPLY = "reply", "STOP reply"
    LINK = "link", "Opt-out link"
    ADMIN = "admin", "Admin"
    PROVIDER = "provider", "Provider (carrier unsubscribe)"
    BOUNCE = "bounce", "Hard bounce"
    IMPORT = "import", "Import"


class Scope(models.TextChoices):
    DIRECTORY = "directory", "Directory (Opted out: Yes)"
    PROVIDER = "provider", "Provider level only"


class OptOut(models.Model):
    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="optouts")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    address = models.CharField(max_length=254)
    person = models.ForeignKey(
        "participants.Person",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="optouts",
    )
    source = models.CharField(max_length=20, choices=Source.choices)
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.DIRECTORY)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    opted_in_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["brand", "channel", "address"],
                condition=Q(active=True),
                name="optout_one_active_per_address",
            )
        ]
        indexes = [models.Index(fields=["brand", "channel", "address", "active"])]

    def __str__(self) -> str:
        return f"{self.address} ({self.channel}, {self.source})"


class OptOutEvent(models.Model):
    """Audit trail: who, when, how, and the message it answered."""

    class Action(models.TextChoices):
        OPT_OUT = "opt_out", "Opted out"
        OPT_IN = "opt_in", "Opted in"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="optout_events")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    address = models.CharField(max_length=254)
    person = models.ForeignKey(
        "participants.Person", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.DIRECTORY)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    message = models.ForeignKey(
        "distributions.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The message this opt-out answered, when known.",
    )
    inbound_text = models.CharField(max_length=1600, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.address}: {self.action} via {self.source}"
