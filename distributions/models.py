"""Distributions: one send on one channel to the participants its conditions select.

A ``Message`` is one recipient row (distribution, participant): the idempotency key of a send.
Its ``status`` moves forward only (see ``Message.STATUS_RANK``), and every change is a
``MessageEvent``. ``ProviderAccount`` holds a brand's provider settings, secrets encrypted.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from brands.fields import EncryptedTextField, redact
from brands.models import Brand
from brands.scoping import BrandScopedManager
from participants.models import Participant, Person
from projects.models import Project


class ProviderAccount(models.Model):
    """How a brand sends SMS: the outbox (default) or Twilio, in either integration model.

    Secrets (``auth_token``) are Fernet-encrypted at rest and only ever shown redacted.
    Workers receive the brand id and load this row; secrets never travel through the broker.
    """

    brand_path = "brand"

    brand = models.OneToOneField(Brand, on_delete=models.CASCADE, related_name="provider_account")
    provider = models.CharField(max_length=40, default="outbox")
    account_sid = models.CharField(max_length=64, blank=True)
    auth_token = EncryptedTextField(blank=True)
    messaging_service_sid = models.CharField(max_length=64, blank=True)
    default_sender = models.CharField(
        max_length=32,
        blank=True,
        help_text="E.164 number, short code or alphanumeric sender ID used when none is chosen.",
    )
    messages_per_second = models.PositiveIntegerField(
        default=100, help_text="Throughput limit of the sender, shared by every worker."
    )
    help_text = models.CharField(
        max_length=300,
        blank=True,
        help_text="Answer to HELP/INFO replies.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    def __str__(self) -> str:
        return f"{self.brand}: {self.provider}"

    @property
    def auth_token_redacted(self) -> str:
        return redact(self.auth_token)


class Distribution(models.Model):
    class Channel(models.TextChoices):
        SMS = "sms", "SMS"
        EMAIL = "email", "Email"

    class Kind(models.TextChoices):
        INVITE = "invite", "Invite"
        REMINDER = "reminder", "Reminder"
        THANK_YOU = "thank_you", "Thank you"
        # Links made one by one through the API (a contact and a transaction each); one such
        # distribution per (project, ``label``) so that they count as invites. Never sent.
        TRANSACTIONAL = "transactional", "Transactional"

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        IN_PROGRESS = "in_progress", "In progress"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"
        CANCELLED = "cancelled", "Cancelled"

    class Mode(models.TextChoices):
        LINK = "link", "Link to the survey"
        TWO_WAY = "two_way", "Two-way (questions by text)"
        CONSENT = "consent", "Consent request (reply YES)"

    class Origin(models.TextChoices):
        COPY = "copy", "Copy"
        RETRY = "retry", "Try again"
        RESEND = "resend", "Resend to failed recipients"
        TEST = "test", "Test message"

    FINISHED = (Status.SENT, Status.FAILED, Status.INTERRUPTED, Status.CANCELLED)
    brand_path = "project__brand"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="distributions")
    channel = models.CharField(max_length=10, choices=Channel.choices, default=Channel.SMS)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.INVITE)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reminders",
        help_text="For a reminder: the invite whose non-respondents it targets.",
    )
    series = models.ForeignKey(
        "DistributionSeries",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="For one run of a recurring message: its series.",
    )
    name = models.CharField(max_length=200, blank=True)
    label = models.CharField(
        max_length=40,
        blank=True,
        help_text="A transactional distribution's channel label, e.g. push.",
    )
    message = models.TextField(
        help_text="Text with piped fields such as ${first_name} and ${link}; for an email, "
        "its HTML body (scripts are stripped)."
    )
    sender = models.CharField(max_length=32, blank=True)
    # SMS only: "two_way" asks the survey question by question in the conversation the
    # invite opens (docs/two-way.md); its first text carries the first question.
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.LINK)
    # Email only (see distributions.email): the subject, the plain-text part (generated from
    # the HTML body when empty), the From name and address (a domain the brand verified or the
    # platform's) and an optional Reply-To.
    subject = models.CharField(max_length=300, blank=True)
    text_body = models.TextField(blank=True)
    from_name = models.CharField(max_length=100, blank=True)
    from_address = models.EmailField(blank=True)
    reply_to = models.EmailField(blank=True)
    trigger = models.CharField(
        max_length=20,
        choices=[("", "Scheduled"), ("completion", "When a recipient completes the survey")],
        blank=True,
        default="",
        help_text="A thank-you sent to each recipient who completes the survey, while active.",
    )
    audience = models.CharField(
        max_length=20,
        choices=[
            ("", "Who have not responded"),
            ("started", "Who started but did not finish"),
        ],
        blank=True,
        default="",
        help_text="For a reminder: everyone who has not responded, or only those who started "
        "the survey (saved or partial answers) and did not finish it.",
    )
    conditions = models.JSONField(default=list, blank=True)
    # Send window (docs/policies.md): rows go out only between these recipient-local hours
    # (an end before the start crosses midnight) on these days (0 = Monday; empty: every day).
    window_start = models.TimeField(null=True, blank=True)
    window_end = models.TimeField(null=True, blank=True)
    window_days = models.JSONField(default=list, blank=True)
    # Days its personal links stay valid after the send (None: the project's setting).
    link_expiry_days = models.PositiveIntegerField(null=True, blank=True)
    # Contact frequency rules (docs/policies.md) apply unless a brand admin said otherwise:
    # who and when are kept as its audit trail.
    ignore_frequency_rules = models.BooleanField(default=False)
    frequency_rules_ignored_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    frequency_rules_ignored_at = models.DateTimeField(null=True, blank=True)
    send_at = models.DateTimeField(db_index=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.SCHEDULED, db_index=True
    )
    status_reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Made from another distribution (docs/distributions.md, "Copy, try again, resend"): the
    # original, and how. A resend's audience is the original's Failed, Bounced and Blocked
    # recipients; a try-again's leaves out whom the original reached; a test is one message
    # to the tester, never listed or counted with the original (see ``audiences``).
    origin = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="derived",
        help_text="The distribution this one was copied, tried again or resent from.",
    )
    origin_kind = models.CharField(max_length=10, choices=Origin.choices, blank=True)
    library_message = models.ForeignKey(
        "LibraryMessage",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The library message its text was copied from (editing it later changes "
        "nothing here).",
    )
    archived_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-send_at", "-pk"]
        indexes = [models.Index(fields=["status", "send_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "label"],
                condition=Q(kind="transactional"),
                name="distribution_unique_transactional_label",
            )
        ]

    def __str__(self) -> str:
        return self.name or f"{self.get_kind_display()} {self.pk}"

    TRIGGER_COMPLETION = "completion"
    AUDIENCE_STARTED = "started"  # a reminder to who started the survey and did not finish

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.SCHEDULED

    @property
    def is_email(self) -> bool:
        return self.channel == self.Channel.EMAIL

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def is_test(self) -> bool:
        return self.origin_kind == self.Origin.TEST

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


class LibraryMessage(models.Model):
    """A brand's saved message (the message library): picked when scheduling, its text is
    copied into the distribution, so that editing it never changes what was sent."""

    class Type(models.TextChoices):
        INVITE = "invite", "Invite"
        REMINDER = "reminder", "Reminder"
        THANK_YOU = "thank_you", "Thank you"
        OPT_OUT_CONFIRMATION = "opt_out_confirmation", "Opt-out confirmation"
        CONSENT_REQUEST = "consent_request", "Consent request"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="library_messages")
    name = models.CharField(max_length=200)
    channel = models.CharField(
        max_length=10, choices=Distribution.Channel.choices, default=Distribution.Channel.SMS
    )
    type = models.CharField(max_length=30, choices=Type.choices, default=Type.INVITE)
    message = models.TextField(help_text="SMS: the text. Email: the HTML body.")
    subject = models.CharField(max_length=300, blank=True, help_text="Email only.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


class DistributionAudit(models.Model):
    """The audit trail of distributions: who copied, tried again, resent, tested, deleted,
    archived or restored one, and when. Kept when the distribution is deleted (its id and name
    are stored, not only referenced)."""

    class Action(models.TextChoices):
        COPIED = "copied", "Copied"
        RETRIED = "retried", "Tried again"
        RESENT = "resent", "Resent to failed recipients"
        TEST_SENT = "test_sent", "Test message sent"
        DELETED = "deleted", "Deleted"
        ARCHIVED = "archived", "Archived"
        UNARCHIVED = "unarchived", "Restored from the archive"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    distribution = models.ForeignKey(
        Distribution, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit"
    )
    distribution_ref = models.PositiveBigIntegerField(help_text="Its id, kept after a delete.")
    distribution_name = models.CharField(max_length=200)
    action = models.CharField(max_length=20, choices=Action.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    detail = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["brand", "at"])]

    def __str__(self) -> str:
        return f"{self.distribution_name}: {self.action}"


class DistributionSeries(models.Model):
    """A recurring message of a Lifecycle project (docs/survey.md): daily, weekly on chosen days
    or monthly on a day, at a time of the brand's day. Each due run becomes a normal
    ``Distribution`` (``series``) that selects its participants when it is sent; a run claims
    its occurrence by moving ``next_run_at`` forward (see ``distributions.series``).
    """

    class Frequency(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        MONTHLY = "monthly", "Monthly"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        ENDED = "ended", "Ended"

    brand_path = "project__brand"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="series")
    name = models.CharField(max_length=200, blank=True)
    channel = models.CharField(
        max_length=10, choices=Distribution.Channel.choices, default=Distribution.Channel.SMS
    )
    message = models.TextField()
    sender = models.CharField(max_length=32, blank=True)
    # Email series: as on Distribution (each run copies them).
    subject = models.CharField(max_length=300, blank=True)
    text_body = models.TextField(blank=True)
    from_name = models.CharField(max_length=100, blank=True)
    from_address = models.EmailField(blank=True)
    reply_to = models.EmailField(blank=True)
    conditions = models.JSONField(default=list, blank=True)
    frequency = models.CharField(max_length=10, choices=Frequency.choices)
    weekdays = models.JSONField(
        default=list, blank=True, help_text="Weekly: days of the week, 0 = Monday … 6 = Sunday."
    )
    day_of_month = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Monthly: 1-31; short months use their last day."
    )
    time_of_day = models.TimeField(help_text="In the brand's time zone.")
    starts_on = models.DateField()
    ends_on = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "distribution series"
        indexes = [models.Index(fields=["status", "next_run_at"])]

    def __str__(self) -> str:
        return self.name or f"{self.get_frequency_display()} series {self.pk}"


class Message(models.Model):
    """One recipient of one distribution; unique per (distribution, participant)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        OPENED = "opened", "Opened"
        FAILED = "failed", "Failed"
        BOUNCED = "bounced", "Bounced"
        BLOCKED = "blocked", "Blocked"
        DUPLICATED = "duplicated", "Duplicated"
        SKIPPED = "skipped", "Skipped"
        SKIPPED_OPTOUT = "skipped_optout", "Skipped (opt-out)"
        SKIPPED_FREQUENCY = "skipped_frequency", "Skipped (frequency rule)"

    # Statuses only move forward: a late "sent" callback never undoes "delivered".
    STATUS_RANK = {
        Status.PENDING: 0,
        Status.SENDING: 1,
        Status.SENT: 2,
        Status.DELIVERED: 3,
        Status.OPENED: 4,
        Status.FAILED: 3,
        Status.BOUNCED: 3,
        Status.BLOCKED: 3,
        Status.DUPLICATED: 9,
        Status.SKIPPED: 9,
        Status.SKIPPED_OPTOUT: 9,
        Status.SKIPPED_FREQUENCY: 9,
    }
    # Handed to the provider (counts as "messages sent" in metrics and credits).
    HANDED_OVER = (Status.SENT, Status.DELIVERED, Status.OPENED, Status.BOUNCED)
    NOT_SENDABLE = (
        Status.DUPLICATED,
        Status.SKIPPED,
        Status.SKIPPED_OPTOUT,
        Status.SKIPPED_FREQUENCY,
    )
    FAILED_STATUSES = (Status.FAILED, Status.BLOCKED)
    OPEN_STATUSES = (Status.PENDING, Status.SENDING)
    # The reason of a row the balance could not pay for (``sending``); stalls read it back.
    REASON_NO_CREDITS = "Not sent: not enough credits."

    brand_path = "distribution__project__brand"

    # No index of its own: (distribution, status) starts with it, and every index costs time
    # when a million rows are materialised. No database constraint either: its deferred
    # trigger check per row cost seconds of the 1,000,000-row materialisation (docs/
    # benchmarks.md, "Measurements behind code choices"). Rows are only
    # written by materialisation, which selects the distribution it inserts for (it exists),
    # and deleting a distribution deletes its rows through Django's CASCADE (the collector),
    # as every delete in Relay goes through the ORM; a raw SQL DELETE of a distribution would
    # leave its rows behind, which nothing reads without the distribution.
    distribution = models.ForeignKey(
        Distribution,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,
        db_constraint=False,
    )
    # History references, filled by materialisation's INSERT ... SELECT from existing rows. No
    # database constraint: two deferred trigger checks per row doubled the time to materialise
    # a million rows. Deleting a participant or person still sets these to NULL (Django's
    # on_delete, through the unique (participant, distribution) index and the person index).
    participant = models.ForeignKey(
        Participant,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_constraint=False,
        db_index=False,
    )
    person = models.ForeignKey(
        Person,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_constraint=False,
    )
    address = models.CharField(max_length=254, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    status_reason = models.CharField(max_length=300, blank=True)
    status_changed_at = models.DateTimeField()
    body = models.TextField(blank=True)
    segments = models.PositiveSmallIntegerField(default=0)
    # The provider's id: a Twilio SID, or for an email its Message-ID (without <>).
    provider_id = models.CharField(max_length=200, blank=True)
    lease = models.CharField(max_length=32, blank=True)
    leased_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=20, blank=True)
    # Not before: a Pending row waits until then (the provider asked to retry later; later,
    # a send policy) without holding a worker or a lease. Materialisation sets the start time.
    due_at = models.DateTimeField(db_default=Now())

    objects = BrandScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            # Participant first: the same index answers "this participant's rows" (SET NULL
            # when one is deleted, a reminder's audience), so no separate participant index.
            models.UniqueConstraint(
                fields=["participant", "distribution"],
                condition=Q(participant__isnull=False),
                name="message_unique_participant_distribution",
            )
        ]
        indexes = [
            # The send engine takes a distribution's due Pending rows in due order from this
            # index (no sort); every (distribution, status) filter uses its prefix.
            models.Index(
                fields=["distribution", "status", "due_at"], name="message_dist_status_due"
            ),
            models.Index(
                fields=["provider_id"], condition=~Q(provider_id=""), name="message_provider_id"
            ),
            models.Index(fields=["lease"], condition=~Q(lease=""), name="message_lease"),
            # An inbound reply reads the number's last messages (its brand, the message it
            # answers). Partial: a row is written without ``sent_at`` (materialising a million
            # recipients does not touch it) and enters it once, when it is handed over.
            models.Index(
                fields=["address", "sent_at"],
                condition=Q(sent_at__isnull=False),
                name="message_sent_address",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.status})"


class MessageEvent(models.Model):
    """A status change of a message, with its time and where it came from."""

    class Source(models.TextChoices):
        MATERIALISE = "materialise", "Materialisation"
        WORKER = "worker", "Worker"
        CALLBACK = "callback", "Provider callback"
        RECONCILE = "reconcile", "Reconciliation"
        LINK = "link", "Survey link"
        BOUNCE = "bounce", "Bounce report"
        SYSTEM = "system", "System"

    brand_path = "message__distribution__project__brand"

    # Indexed by (message, at) below: a second index on message alone only slowed inserts.
    # No database constraint (as Message.distribution): its deferred trigger check per row,
    # at commit, took 0.8 s of a materialisation that skipped 100,000 rows (docs/
    # benchmarks.md, "Measurements behind code choices"). Events are only written for rows
    # read or just written, and deleting a message deletes its events through Django's
    # CASCADE (the collector), as every delete in Relay goes through the ORM.
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    status = models.CharField(max_length=20, choices=Message.Status.choices)
    at = models.DateTimeField()
    source = models.CharField(max_length=20, choices=Source.choices)
    detail = models.CharField(max_length=300, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["message", "at"])]

    def __str__(self) -> str:
        return f"{self.message_id}: {self.status} at {self.at:%Y-%m-%d %H:%M:%S}"


class OutboxMessage(models.Model):
    """What the outbox provider "sent": shown on the Outbox page as a phone would show it."""

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="outbox")
    sid = models.CharField(max_length=40, unique=True)
    to = models.CharField(max_length=32, db_index=True)
    sender = models.CharField(max_length=32, blank=True)
    body = models.TextField()
    status = models.CharField(max_length=20, default="sent")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.to}: {self.body[:40]}"


class EmailAccount(models.Model):
    """How a brand sends email: the platform's mailer (settings ``EMAIL_*``) or its own SMTP
    relay. ``smtp_password`` is Fernet-encrypted at rest and only shown redacted; workers load
    this row by brand id. ``weekly_limit`` is the platform operator's (Django admin), not the
    brand's: empty means ``settings.RELAY_EMAIL_WEEKLY_LIMIT``.
    """

    class Transport(models.TextChoices):
        PLATFORM = "platform", "Platform mailer"
        SMTP = "smtp", "Own SMTP relay"

    class Security(models.TextChoices):
        STARTTLS = "starttls", "STARTTLS"
        SSL = "ssl", "SSL/TLS"
        NONE = "none", "None"

    brand_path = "brand"
    provider = "email"  # the engine's throttle key and provider lookup

    brand = models.OneToOneField(Brand, on_delete=models.CASCADE, related_name="email_account")
    transport = models.CharField(max_length=20, choices=Transport.choices, default="platform")
    smtp_host = models.CharField(max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField(default=587)
    smtp_security = models.CharField(
        max_length=10, choices=Security.choices, default=Security.STARTTLS
    )
    smtp_username = models.CharField(max_length=255, blank=True)
    smtp_password = EncryptedTextField(blank=True)
    default_from_name = models.CharField(max_length=100, blank=True)
    default_from_address = models.EmailField(blank=True)
    default_reply_to = models.EmailField(blank=True)
    messages_per_second = models.PositiveIntegerField(
        default=200, help_text="Shared by every worker (token bucket in Redis)."
    )
    weekly_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Emails per 7 days, set by the platform operator; empty: the platform default.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    def __str__(self) -> str:
        return f"{self.brand}: {self.get_transport_display()}"

    @property
    def smtp_password_redacted(self) -> str:
        return redact(self.smtp_password)


class EmailDomain(models.Model):
    """A From domain of a brand. Only a verified domain may be used in From addresses; with a
    DKIM selector and key, messages from it are signed (the key is encrypted at rest)."""

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="email_domains")
    domain = models.CharField(max_length=253)
    verified_at = models.DateTimeField(null=True, blank=True)
    dkim_selector = models.CharField(max_length=63, blank=True)
    dkim_private_key = EncryptedTextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["domain"]
        constraints = [
            models.UniqueConstraint(fields=["brand", "domain"], name="email_domain_unique")
        ]

    def __str__(self) -> str:
        return self.domain

    @property
    def verified(self) -> bool:
        return self.verified_at is not None

    @property
    def has_dkim(self) -> bool:
        return bool(self.dkim_selector and self.dkim_private_key)


class BounceReport(models.Model):
    """An asynchronous bounce (an RFC 3464 delivery status notification) as received: stored
    whatever it says; ``action`` tells what was done with it."""

    class Action(models.TextChoices):
        BOUNCED = "bounced", "Hard bounce: row Bounced, address suppressed"
        SOFT = "soft", "Temporary failure: recorded only"
        UNMATCHED = "unmatched", "No message matched: not acted on"
        MALFORMED = "malformed", "Not a delivery status notification: not acted on"

    brand_path = "brand"

    brand = models.ForeignKey(
        Brand, null=True, blank=True, on_delete=models.CASCADE, related_name="bounce_reports"
    )
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="bounce_reports"
    )
    recipient = models.CharField(max_length=254, blank=True)
    status_code = models.CharField(max_length=20, blank=True)
    diagnostic = models.CharField(max_length=500, blank=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    raw = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-received_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.recipient or '?'}: {self.action}"


class FrequencyRule(models.Model):
    """A contact frequency rule (docs/policies.md): at most ``max_messages`` messages per
    rolling ``period_days`` and at least ``min_gap_hours`` between two, on one channel or all,
    for the recipients matching ``conditions`` (empty: everyone). A brand rule has no project;
    a project with rules of its own uses them instead of the brand's. Invites count; reminders,
    thank-you messages and transactional links only when the rule says so. A recipient over a
    rule is Skipped (frequency rule), decided at materialisation (``policies``).
    """

    brand_path = "brand"
    MAX_PER_BRAND = 20
    # Bounds of the numbers (a rule past them limits nothing a survey would meet).
    MAX_MESSAGES = 100_000
    MAX_PERIOD_DAYS = 3650
    MAX_GAP_HOURS = 87_600

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="frequency_rules")
    project = models.ForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="frequency_rules",
        help_text="A project's custom rule; empty: a brand rule.",
    )
    name = models.CharField(max_length=100)
    channel = models.CharField(
        max_length=10,
        blank=True,
        choices=[("", "All channels"), *Distribution.Channel.choices],
        help_text="Count and limit messages on this channel only; empty: all channels.",
    )
    max_messages = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many messages per period; empty: no limit."
    )
    period_days = models.PositiveIntegerField(default=7)
    min_gap_hours = models.PositiveIntegerField(
        default=0, help_text="At least this many hours between two messages; 0: no minimum."
    )
    conditions = models.JSONField(default=list, blank=True)
    count_reminders = models.BooleanField(default=False)
    count_thank_you = models.BooleanField(default=False)
    count_transactional = models.BooleanField(default=False)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["project_id", "pk"]

    def __str__(self) -> str:
        return self.name

    def counted_kinds(self) -> list[str]:
        kinds = [Distribution.Kind.INVITE]
        if self.count_reminders:
            kinds.append(Distribution.Kind.REMINDER)
        if self.count_thank_you:
            kinds.append(Distribution.Kind.THANK_YOU)
        if self.count_transactional:
            kinds.append(Distribution.Kind.TRANSACTIONAL)
        return kinds


# --- the fair send engine's state (see distributions.fairqueue) ----------------------------
class Sender(models.Model):
    """One sender of one brand (a phone number, short code, messaging service or From
    address, per provider): its token bucket and its turn among the brand's senders.

    ``tokens`` at ``tokens_at`` refill at ``rate`` per second up to one second of the rate;
    ``ready_at`` is when the sender may send again (its bucket is empty, or the provider
    asked to wait). Rows are created when a distribution on the sender starts.
    """

    brand_path = "brand"

    key = models.CharField(max_length=200, unique=True)
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    rate = models.PositiveIntegerField(default=0, help_text="Messages per second; 0: no limit.")
    tokens = models.FloatField(default=0)
    tokens_at = models.DateTimeField()
    ready_at = models.DateTimeField()
    paused_reason = models.CharField(max_length=200, blank=True)
    served_at = models.DateTimeField()

    objects = BrandScopedManager()

    def __str__(self) -> str:
        return self.key


class SendLane(models.Model):
    """A distribution with rows to send, in the fair queue: ``ready_at`` is when its next
    Pending row is due (None: nothing to send now or later; the lane is idle)."""

    brand_path = "brand"

    distribution = models.OneToOneField(
        Distribution, primary_key=True, on_delete=models.CASCADE, related_name="lane"
    )
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="+")
    sender = models.ForeignKey(Sender, on_delete=models.CASCADE, related_name="lanes")
    ready_at = models.DateTimeField(null=True, blank=True)
    served_at = models.DateTimeField()

    objects = BrandScopedManager()

    class Meta:
        indexes = [
            models.Index(
                fields=["ready_at"], condition=Q(ready_at__isnull=False), name="lane_ready"
            )
        ]

    def __str__(self) -> str:
        return f"lane {self.distribution_id}"


class SendPump(models.Model):
    """A pump slot: at most ``RELAY_SEND_PUMPS`` pump tasks take turns on the send queue.

    ``ticket`` names the task that holds the slot; ``until`` is when a queued or running
    claim lapses (a dead worker's slot is claimed again) or when a sleeping pump wakes.
    """

    class State(models.TextChoices):
        IDLE = "idle", "Idle"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SLEEPING = "sleeping", "Sleeping"

    slot = models.PositiveSmallIntegerField(primary_key=True)
    ticket = models.CharField(max_length=32, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IDLE)
    until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"pump {self.slot}: {self.state}"
