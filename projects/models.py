from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from brands.models import Brand
from brands.scoping import BrandScopedManager


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

    @property
    def country(self) -> str:
        return self.default_country or self.brand.default_country

    def is_within_availability(self, at=None) -> bool:
        at = at or timezone.now()
        if self.available_from and at < self.available_from:
            return False
        return not (self.available_until and at >= self.available_until)

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

    token = models.CharField(max_length=16, unique=True)
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
    expires_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.token

    @property
    def url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}/s/{self.token}"
