from __future__ import annotations

from datetime import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from brands.models import Brand, validate_time_zone
from brands.scoping import BrandScopedManager
from core.tokens import new_token


class Project(models.Model):
    """What is distributed: a survey run by a brand. Only an Active project sends."""

    class Kind(models.TextChoices):
        ENGAGEMENT = "engagement", "Engagement"
        LIFECYCLE = "lifecycle", "Lifecycle"
        AD_HOC = "ad_hoc", "Ad hoc"

    class Stage(models.TextChoices):
        NEW = "new", "New"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CLOSED = "closed", "Closed"

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.ENGAGEMENT)
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.NEW)
    available_from = models.DateTimeField(
        null=True, blank=True, help_text="Responses are not collected before this time."
    )
    available_until = models.DateTimeField(
        null=True, blank=True, help_text="At this time the project closes by itself."
    )
    default_country = models.CharField(
        max_length=2,
        blank=True,
        help_text="Country for phone numbers without a country code; empty uses the brand's.",
    )
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_time_zone],
        help_text="IANA time zone of recipients whose own is unknown; empty uses the brand's.",
    )
    # The brand's quiet hours apply unless the project overrides them (docs/policies.md).
    quiet_hours_override = models.BooleanField(
        default=False, help_text="Use this project's quiet hours instead of the brand's."
    )
    quiet_hours_start = models.TimeField(default=time(21, 0))
    quiet_hours_end = models.TimeField(default=time(8, 0))
    quiet_hours_sms = models.BooleanField(default=False)
    quiet_hours_email = models.BooleanField(default=False)
    link_expiry_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Invite links expire this many days after the send; empty: never.",
    )
    public_token = models.CharField(
        max_length=16,
        unique=True,
        default=new_token,
        editable=False,
        help_text="The anonymous link's token: one reusable link per project (/a/<token>).",
    )
    by_invitation_only = models.BooleanField(
        default=False,
        help_text="Only personal links answer: the anonymous link and its QR code are disabled.",
    )
    anonymous_one_answer = models.BooleanField(
        default=False,
        help_text="One answer per person on the anonymous link: a browser that answered is "
        "told so (a signed cookie; clearing cookies or another browser gets around it).",
    )
    closed_message = models.TextField(
        max_length=1000,
        blank=True,
        help_text="Shown to whoever opens a link while the survey is closed or paused, "
        "instead of the standard wording.",
    )
    # When collection last stopped (Paused or Closed) and what the pause dialog decided for
    # respondents who had the survey open at that moment (see surveys.answers.may_finish).
    collection_stopped_at = models.DateTimeField(null=True, blank=True, editable=False)
    stop_lets_in_progress_finish = models.BooleanField(default=True, editable=False)
    stop_keeps_partial_responses = models.BooleanField(default=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["brand", "stage"])]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.quiet_hours_start == self.quiet_hours_end:
            raise ValidationError(
                {"quiet_hours_end": "The quiet hours end when they start: they are empty."}
            )

    @property
    def country(self) -> str:
        return self.default_country or self.brand.default_country

    def is_within_availability(self, at=None) -> bool:
        at = at or timezone.now()
        if self.available_from and at < self.available_from:
            return False
        return not (self.available_until and at >= self.available_until)

    @property
    def anonymous_url(self) -> str:
        """The project's one reusable link (and its QR code's target, with ``?src=qr``)."""
        return f"{settings.PUBLIC_BASE_URL}/a/{self.public_token}"

    @property
    def is_collecting(self) -> bool:
        """Active and inside its availability window: sends and accepts responses."""
        return self.stage == self.Stage.ACTIVE and self.is_within_availability()


class ProjectStageChange(models.Model):
    """Audit trail of stage changes: who, when, from, to, why."""

    brand_path = "project__brand"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="stage_changes")
    from_stage = models.CharField(max_length=20, choices=Project.Stage.choices)
    to_stage = models.CharField(max_length=20, choices=Project.Stage.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.project}: {self.from_stage} → {self.to_stage}"


class SurveyLink(models.Model):
    """A personal survey link: an opaque token tied to a participant and why they got it.

    Made per message of a distribution (``${link}``) or per transaction through the API; it
    answers once. The URL carries the token only (short: it costs SMS segments).
    """

    brand_path = "project__brand"

    # Unique by a constraint, not ``unique=True``: that would add PostgreSQL's second,
    # ``varchar_pattern_ops`` index (for LIKE), which no query uses and every link pays for.
    token = models.CharField(max_length=16)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="links")
    participant = models.ForeignKey(
        "participants.Participant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="links",
    )
    distribution = models.ForeignKey(
        "distributions.Distribution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="links",
    )
    message = models.OneToOneField(
        "distributions.Message",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="link",
    )
    channel = models.CharField(
        max_length=20,
        blank=True,
        help_text="Where the link was handed out when no distribution sent it (email, api).",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # The name ``unique=True`` gave it: migration 0010 kept the constraint.
            models.UniqueConstraint(fields=["token"], name="projects_surveylink_token_key")
        ]

    def __str__(self) -> str:
        return self.token

    @property
    def url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}/s/{self.token}"

    def response_channel(self, distribution_channel: str | None = None) -> str:
        """The channel a response through this link is recorded under."""
        return self.channel or distribution_channel or Response.Channel.API


class Question(models.Model):
    """One question of a project's survey, answered in ``position`` order."""

    class Kind(models.TextChoices):
        RATING = "rating", "Rating (0 to 10)"
        SINGLE = "single", "Single choice"
        MULTIPLE = "multiple", "Multiple choice"
        TEXT = "text", "Free text"

    CHOICE_KINDS = (Kind.SINGLE, Kind.MULTIPLE)
    RATING_MIN, RATING_MAX = 0, 10
    MAX_CHOICES = 30
    MAX_CHOICE_LENGTH = 200
    MAX_TEXT_ANSWER = 5000

    brand_path = "project__brand"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="questions")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    text = models.CharField(max_length=500)
    help_text = models.CharField(max_length=300, blank=True)
    choices = models.JSONField(default=list, blank=True)
    required = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["position", "pk"]
        indexes = [models.Index(fields=["project", "position"])]

    def __str__(self) -> str:
        return self.text

    @property
    def field_name(self) -> str:
        return f"q{self.pk}"

    @property
    def rating_range(self) -> range:
        return range(self.RATING_MIN, self.RATING_MAX + 1)


class Response(models.Model):
    """Answers to a project's survey: complete, partial (saved to finish later through a
    personal link, or kept when collection stopped while the respondent was in the middle of
    it), or superseded (an admin reset it so that the person can answer again: its answers are
    kept, its link released; see ``ResponseReset``).

    ``answers`` maps a question id (as text) to its answer: an int (rating), a choice (single),
    a list of choices (multiple) or text. ``embedded_data`` holds extra values; the keys listed
    in ``untrusted_keys`` came from the respondent's URL and were not checked by anyone.
    A personal link has at most one response (``link`` is unique): the second submit is refused.
    """

    class Status(models.TextChoices):
        COMPLETE = "complete", "Complete"
        PARTIAL = "partial", "Partial"
        SUPERSEDED = "superseded", "Superseded (reset)"

    class Channel(models.TextChoices):
        SMS = "sms", "SMS"
        EMAIL = "email", "Email"
        ANONYMOUS = "anonymous", "Anonymous link"
        QR = "qr", "QR code"
        API = "api", "API"
        SMS_TWO_WAY = "sms_two_way", "SMS (two-way)"

    brand_path = "project__brand"

    # Indexed by (project, status, participant) and (project, completed_at), below: an
    # index of its own would be one more written on each answer of a two-way survey.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="responses", db_index=False
    )
    participant = models.ForeignKey(
        "participants.Participant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="responses",
    )
    link = models.OneToOneField(
        SurveyLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="response"
    )
    distribution = models.ForeignKey(
        "distributions.Distribution",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="responses",
    )
    channel = models.CharField(max_length=20, choices=Channel.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.COMPLETE)
    answers = models.JSONField(default=dict, blank=True)
    embedded_data = models.JSONField(default=dict, blank=True)
    untrusted_keys = models.JSONField(default=list, blank=True)
    submission_key = models.CharField(
        max_length=40,
        blank=True,
        help_text="The form's one-time key: a second submit of the same form is refused.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-completed_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "submission_key"],
                condition=~Q(submission_key=""),
                name="response_unique_submission_key",
            )
        ]
        indexes = [
            models.Index(fields=["project", "status", "participant"]),
            models.Index(fields=["project", "completed_at"]),
        ]

    def __str__(self) -> str:
        return f"Response {self.pk} ({self.channel}, {self.status})"


class ResponseReset(models.Model):
    """The audit trail of a response reset by an admin (``surveys.services.response_reset``):
    who, when, why, what the response was, and the personal link it released. The response
    itself stays, superseded, with its answers."""

    brand_path = "response__project__brand"

    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="resets")
    link = models.ForeignKey(
        SurveyLink, null=True, blank=True, on_delete=models.SET_NULL, related_name="resets"
    )
    previous_status = models.CharField(max_length=10, choices=Response.Status.choices)
    reason = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Reset of response {self.response_id}"


# A transactional link's transaction and the signed links' secrets live in their own
# modules; imported here to register them.
from projects.signed_links import SignedLinkUse, SigningSecret  # noqa: E402, F401
from projects.transactions import Transaction  # noqa: E402, F401
