"""Two-way SMS: a survey asked question by question in a *session* per respondent and
sender (docs/two-way.md).

- ``TwoWaySettings``: a project's rules (session expiry, invalid answers allowed).
- ``Session``: one conversation: who (number, and the participant when an invite opened it),
  on which sender, at which question, with the response its answers go to. At most one open
  session per (brand, number, sender): a newer one closes the older (``Status.REPLACED``).
- ``Turn``: each text of the conversation, sent or received, with its time, segments and
  cost: the session's history. Outbound turns are sent by ``conversations.sending`` (the
  provider registry, the opt-out guard, the ledger).
- ``SmsKeyword``: a brand's keyword on a sender that starts the project's survey for any
  number that texts it (an anonymous response).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from brands.models import Brand
from brands.scoping import BrandScopedManager
from projects.models import Project, Question, Response


class TwoWaySettings(models.Model):
    """A project's two-way rules; a project without a row has the defaults."""

    DEFAULT_EXPIRY_HOURS = 24
    DEFAULT_MAX_INVALID = 3

    brand_path = "project__brand"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="two_way")
    expiry_hours = models.PositiveIntegerField(
        default=DEFAULT_EXPIRY_HOURS,
        help_text="A session closes this long after its last question was sent.",
    )
    max_invalid = models.PositiveSmallIntegerField(
        default=DEFAULT_MAX_INVALID,
        help_text="Invalid answers to one question before the session ends.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    def __str__(self) -> str:
        return f"Two-way settings of {self.project}"


class Session(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"
        EXPIRED = "expired", "Expired"
        REPLACED = "replaced", "Closed by a newer survey"
        OPTED_OUT = "opted_out", "Opted out (STOP)"
        GAVE_UP = "gave_up", "Too many invalid answers"
        CLOSED = "closed", "Closed (survey not collecting)"

    class Origin(models.TextChoices):
        INVITE = "invite", "Invite"
        KEYWORD = "keyword", "Keyword"

    brand_path = "brand"

    # No index of their own for brand and distribution: the indexes below lead with them.
    # Every answer rewrites its session (its question moves: not a HOT update), and each
    # index is written again then.
    brand = models.ForeignKey(
        Brand, on_delete=models.CASCADE, related_name="sms_sessions", db_index=False
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sms_sessions")
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.INVITE)
    distribution = models.ForeignKey(
        "distributions.Distribution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_sessions",
        db_index=False,
    )
    message = models.OneToOneField(
        "distributions.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_session",
        help_text="The invite (or reminder) whose text asked the first question.",
    )
    keyword = models.ForeignKey(
        "SmsKeyword", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    participant = models.ForeignKey(
        "participants.Participant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_sessions",
    )
    address = models.CharField(max_length=64, help_text="The respondent's number (E.164).")
    sender = models.CharField(max_length=64, help_text="Our number the respondent texts.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    question = models.ForeignKey(
        Question,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The question waiting for an answer.",
    )
    position = models.PositiveSmallIntegerField(default=0, help_text="Its number, from 1.")
    invalid_count = models.PositiveSmallIntegerField(default=0)
    response = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    opened_at = models.DateTimeField()
    asked_at = models.DateTimeField(help_text="When the waiting question was sent.")
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-opened_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["brand", "address", "sender"],
                condition=Q(status="open"),
                name="sms_session_one_open_per_number_sender",
            )
        ]
        indexes = [
            models.Index(fields=["brand", "address", "sender", "-opened_at"]),
            models.Index(fields=["distribution", "status"]),
        ]

    def __str__(self) -> str:
        return f"Session {self.pk} ({self.address}, {self.status})"


class Turn(models.Model):
    """One text of a conversation. Outbound: Pending until sent (once: the send claims it),
    then Sent (debited once), Failed or Skipped (opt-out). Inbound: the reply as received."""

    class Direction(models.TextChoices):
        OUT = "out", "Sent"
        IN = "in", "Received"

    class Kind(models.TextChoices):
        QUESTION = "question", "Question"
        CORRECTION = "correction", "Correction"
        THANK_YOU = "thank_you", "Thank you"
        CLOSED = "closed", "Closed notice"
        CONSENT = "consent", "Consent request"
        CONSENT_GIVEN = "consent_yes", "Consent given"
        CONSENT_OTHER = "consent_no", "Reply to a consent request (not a yes)"
        ANSWER = "answer", "Answer"
        INVALID = "invalid", "Invalid answer"
        KEYWORD = "keyword", "Keyword"
        HELP = "help", "HELP"
        STOP = "stop", "STOP"
        LATE = "late", "Late answer"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED_OPTOUT = "skipped_optout", "Skipped (opt-out)"
        RECEIVED = "received", "Received"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    session = models.ForeignKey(  # indexed by (session, created_at), below
        Session,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="turns",
        db_index=False,
    )
    direction = models.CharField(max_length=3, choices=Direction.choices)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    question = models.ForeignKey(
        Question, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    address = models.CharField(max_length=64)
    sender = models.CharField(max_length=64)
    body = models.TextField()
    segments = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices)
    status_reason = models.CharField(max_length=300, blank=True)
    provider_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    inbound = models.OneToOneField(
        "optouts.InboundMessage",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The stored inbound message (inbound turns).",
    )
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(fields=["session", "created_at"]),
            models.Index(fields=["status"], condition=Q(status="pending"), name="sms_turn_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.get_direction_display()} {self.kind} to {self.address}"


class SmsKeyword(models.Model):
    """A word texted to ``sender`` that starts ``project``'s two-way survey. Unique per
    sender (whatever the brand: the number routes the message), never a STOP/HELP/YES word."""

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="sms_keywords")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sms_keywords")
    sender = models.CharField(max_length=64, help_text="Our number (E.164) it is texted to.")
    keyword = models.CharField(max_length=40, help_text="Stored normalised (upper case).")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["sender", "keyword"]
        constraints = [
            models.UniqueConstraint(
                fields=["sender", "keyword"], name="sms_keyword_unique_per_sender"
            )
        ]

    def __str__(self) -> str:
        return f"{self.keyword} on {self.sender}"
