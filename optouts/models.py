"""Opt-outs: an address (E.164 phone or email) that a brand must never message on a channel.

``OptOut`` holds the current state (one active row per brand, channel and address); every
opt-out and opt-in is also an ``OptOutEvent`` in the audit trail. ``InboundMessage`` stores
every reply the provider forwards to us, with what we did about it.

An opt-out in one brand does not silence another brand, by design: each brand is a separate
sender with its own consent (see docs/optouts.md).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from brands.models import Brand
from brands.scoping import BrandScopedManager
from optouts.keywords import Keyword


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
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["brand", "channel", "address"],
                condition=Q(active=True),
                name="optout_one_active_per_address",
            )
        ]
        indexes = [
            models.Index(fields=["brand", "channel", "address", "active"]),
            models.Index(fields=["brand", "-created_at"], name="optout_brand_created"),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.channel}, {self.source})"


class InboundMessage(models.Model):
    """One reply received from a recipient, stored whatever it says.

    ``provider_sid`` is unique per provider: a replayed webhook finds its row and changes
    nothing. ``brand`` is empty when no brand could be found for the numbers involved.

    A reply of a known brand is stored by the webhook with its conversation step *pending*
    (``apply_state``); a worker applies it (``conversations.replies``) and marks it *applied*
    in the same transaction, so it is applied once; the transaction holds the row locked
    meanwhile (its claim: another worker skips it, and a dead worker's lock goes with it).
    """

    class Apply(models.TextChoices):
        NONE = "", "Nothing to apply"
        PENDING = "pending", "Waiting for its conversation"
        APPLIED = "applied", "Applied to its conversation"
        FAILED = "failed", "Could not be applied (logged)"

    class Action(models.TextChoices):
        OPTED_OUT = "opted_out", "Opted out (directory and project)"
        OPTED_OUT_PROVIDER = "opted_out_provider", "Opted out at the provider level only"
        RESUBSCRIBED_PROVIDER = "resubscribed_provider", "Re-subscribed at the provider level"
        HELP_SENT = "help_sent", "Help text sent"
        HELP_BY_PROVIDER = "help_by_provider", "Help answered by the provider"
        STORED = "stored", "Stored (not a keyword)"
        UNKNOWN_NUMBER = "unknown_number", "Unknown number: not acted on"

    brand_path = "brand"

    # No index of its own: ``inbound_brand_from`` and ``inbound_brand_received`` lead with it,
    # and every reply stored (and each of its updates by the applier) writes every index.
    brand = models.ForeignKey(
        Brand,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="inbound_messages",
        db_index=False,
    )
    provider = models.CharField(max_length=40, default="twilio")
    provider_sid = models.CharField(max_length=64, blank=True)
    account_sid = models.CharField(max_length=64, blank=True)
    messaging_service_sid = models.CharField(max_length=64, blank=True)
    from_number = models.CharField(max_length=64)
    to_number = models.CharField(max_length=64, blank=True)
    body = models.TextField(blank=True)
    received_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(
        max_length=10, choices=[(k.value, k.value.title()) for k in Keyword], default="OTHER"
    )
    keyword = models.CharField(max_length=40, blank=True, help_text="The keyword as listed.")
    language = models.CharField(max_length=8, blank=True)
    approximate = models.BooleanField(
        default=False, help_text="Matched through characters lost to a bad encoding."
    )
    action = models.CharField(max_length=30, choices=Action.choices)
    message = models.ForeignKey(
        "distributions.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Our last message to that number (the one this reply answers).",
    )
    person = models.ForeignKey(
        "participants.Person", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    optout = models.ForeignKey(
        OptOut, null=True, blank=True, on_delete=models.SET_NULL, related_name="inbound_messages"
    )
    reply = models.CharField(max_length=480, blank=True, help_text="What we answered.")
    apply_state = models.CharField(
        max_length=10, choices=Apply.choices, default=Apply.NONE, blank=True
    )
    applied_at = models.DateTimeField(
        null=True, blank=True, help_text="When its conversation step was committed."
    )

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-received_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_sid"],
                condition=~Q(provider_sid=""),
                name="inbound_unique_provider_sid",
            )
        ]
        indexes = [
            models.Index(fields=["brand", "-received_at"], name="inbound_brand_received"),
            models.Index(fields=["brand", "from_number"], name="inbound_brand_from"),
            # The applier's queue: only the pending rows, each brand's in received order
            # (``conversations.replies._claim`` shares a batch between the brands).
            models.Index(
                fields=["brand", "id"],
                condition=Q(apply_state="pending"),
                name="inbound_pending_by_brand",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_number}: {self.body[:40]}"


class OptOutEvent(models.Model):
    """Audit trail: who, when, how, and the message it answered."""

    class Action(models.TextChoices):
        OPT_OUT = "opt_out", "Opted out"
        OPT_IN = "opt_in", "Opted in"
        RESUBSCRIBE = "resubscribe", "Re-subscribed at the provider (START)"
        CONSENT = "consent", "Consented to a project's invites (YES)"
        CONSENT_WITHDRAWN = "consent_withdrawn", "Consent withdrawn"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="optout_events")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    address = models.CharField(max_length=254)
    person = models.ForeignKey(
        "participants.Person", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    optout = models.ForeignKey(
        OptOut, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    action = models.CharField(max_length=20, choices=Action.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.DIRECTORY)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    api_key = models.ForeignKey(
        "brands.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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
    inbound = models.ForeignKey(
        InboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    inbound_text = models.CharField(max_length=1600, blank=True)
    consent = models.ForeignKey(
        "Consent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        help_text="The consent this event granted or withdrew (consent events).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["brand", "address"], name="optout_event_brand_address")]

    def __str__(self) -> str:
        return f"{self.address}: {self.action} via {self.source}"

    @property
    def actor_label(self) -> str:
        """Who did it, as the audit trail shows it."""
        if self.actor_id:
            return self.actor.get_username()
        if self.api_key_id:
            return f"API key {self.api_key.name}"
        if self.source in (Source.REPLY, Source.LINK):
            return "The recipient"
        if self.source == Source.PROVIDER:
            return "The provider"
        return "System"


class ConsentPolicy(models.Model):
    """A project that requires consent: its SMS invites go only to numbers that replied YES
    to its consent request (docs/two-way.md, "Consent first")."""

    brand_path = "project__brand"

    project = models.OneToOneField(
        "projects.Project", on_delete=models.CASCADE, related_name="consent_policy"
    )
    required = models.BooleanField(default=False)
    extra_words = models.CharField(
        max_length=300,
        blank=True,
        help_text="Words that also mean yes (comma-separated), besides YES, SI, OUI, JA…",
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    def __str__(self) -> str:
        return f"Consent policy of {self.project}"


class Consent(models.Model):
    """A number's YES to one project's invites, until withdrawn (any SMS opt-out of the
    number in the brand withdraws it, and so can an admin). Granting and withdrawing are
    ``OptOutEvent`` rows (``events``); ``inbound`` is the yes."""

    class Status(models.TextChoices):
        GIVEN = "given", "Given"
        WITHDRAWN = "withdrawn", "Withdrawn"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="consents")
    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="consents"
    )
    address = models.CharField(max_length=64)
    active = models.BooleanField(default=True)
    granted_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    inbound = models.ForeignKey(
        InboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-granted_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "address"],
                condition=Q(active=True),
                name="consent_one_active_per_address",
            )
        ]
        indexes = [models.Index(fields=["brand", "address", "active"])]

    def __str__(self) -> str:
        return f"Consent of {self.address} to {self.project_id}"

    @property
    def status(self) -> str:
        return self.Status.GIVEN if self.active else self.Status.WITHDRAWN
