from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from brands.models import Brand, validate_time_zone
from brands.scoping import BrandScopedManager
from projects.models import Project


class Person(models.Model):
    """Someone in a brand's directory. ``phone`` is E.164 or empty."""

    brand_path = "brand"

    # No index of its own: (brand, email) and (brand, phone) start with it, and one index
    # less is one write less per person an import creates.
    brand = models.ForeignKey(
        Brand, on_delete=models.CASCADE, related_name="people", db_index=False
    )
    person_id = models.CharField(
        "PersonID",
        max_length=128,
        blank=True,
        help_text="The brand's own identifier for this person (unique in the brand).",
    )
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    email = models.EmailField(max_length=254, blank=True)
    username = models.CharField("user name", max_length=150, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +14155550100")
    # A database default too: imports and the transactional link function insert people in
    # raw SQL that names only the columns they fill.
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_default="",
        validators=[validate_time_zone],
        help_text="IANA time zone, e.g. America/New_York; empty: from the phone number.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    # A person's directory fields besides ``metadata``: what the form, the API, the JSON and
    # CSV imports and the set-based upserts read and write.
    DIRECTORY_FIELDS = (
        "person_id",
        "first_name",
        "last_name",
        "email",
        "username",
        "phone",
        "time_zone",
    )

    class Meta:
        ordering = ["last_name", "first_name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["brand", "person_id"],
                condition=~Q(person_id=""),
                name="person_unique_person_id_per_brand",
            )
        ]
        indexes = [
            models.Index(fields=["brand", "email"]),
            models.Index(fields=["brand", "phone"]),
            # Imports look up "a person without PersonID who has this email" for every new
            # PersonID; this index holds only those people, so the lookup stays small.
            models.Index(
                fields=["brand", "email"],
                condition=Q(person_id=""),
                name="person_email_without_pid",
            ),
        ]
        verbose_name_plural = "people"

    def __str__(self) -> str:
        return self.full_name or self.email or self.person_id or f"Person {self.pk}"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Participant(models.Model):
    """A person in a project, with a project role and project metadata."""

    brand_path = "project__brand"

    # No index of its own: the (project, person) unique constraint starts with it.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="participants", db_index=False
    )
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="participations")
    role = models.CharField(max_length=120, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Indexed only where set (``Meta.indexes``): most participants come from imports and the
    # API, with no user, and need no entry.
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "person"], name="participant_unique_person_per_project"
            )
        ]
        indexes = [
            models.Index(fields=["project", "role"]),
            models.Index(
                fields=["added_by"],
                condition=Q(added_by__isnull=False),
                name="participant_added_by_set",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.person} in {self.project}"


def import_upload_path(instance: ImportJob, filename: str) -> str:
    """Uploads live under MEDIA_ROOT/imports/<brand>/, named by a random token, never by the
    user's file name (which is kept in ``original_name`` for display only)."""
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "csv"
    suffix = suffix if suffix.isalnum() and len(suffix) <= 5 else "csv"
    return f"imports/{instance.brand_id}/{uuid.uuid4().hex}.{suffix}"


class ImportJob(models.Model):
    """One CSV upload into a project or the brand's directory: validated first, written on
    confirmation, in one transaction.

    ``status`` moves validating → validated → importing → done, or to failed / cancelled.
    Nothing touches the directory before ``import_commit`` runs on a validated job.
    """

    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating"
        VALIDATED = "validated", "Ready to import"
        IMPORTING = "importing", "Importing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Source(models.TextChoices):
        PAGE = "page", "Browser upload"
        API = "api", "API upload"

    class MetadataTarget(models.TextChoices):
        PERSON = "person", "The directory (person metadata, shared by every project)"
        PARTICIPANT = "participant", "This project only (participant metadata)"

    ACTIVE_STATUSES = (Status.VALIDATING, Status.IMPORTING)

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="import_jobs")
    project = models.ForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="import_jobs",
        help_text="Empty for an import into the directory alone.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PAGE)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)

    file = models.FileField(upload_to=import_upload_path, max_length=255, blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    rows_file = models.FileField(
        max_length=255, blank=True, help_text="The validated rows, read by the write phase."
    )
    errors_file = models.FileField(
        max_length=255, blank=True, help_text="Every bad row with its errors (CSV)."
    )

    # Options chosen at upload.
    erase_empty = models.BooleanField(
        default=False, help_text="Empty cells erase stored values (otherwise they are skipped)."
    )
    metadata_target = models.CharField(
        max_length=12, choices=MetadataTarget.choices, default=MetadataTarget.PERSON
    )
    required_fields = models.JSONField(default=list, blank=True)
    auto_commit = models.BooleanField(
        default=False, help_text="Import at once when validation finds no bad row."
    )

    # What validation found.
    encoding = models.CharField(max_length=20, blank=True)
    delimiter = models.CharField(max_length=4, blank=True)
    columns = models.JSONField(default=list, blank=True)
    total_rows = models.PositiveIntegerField(default=0)
    to_create = models.PositiveIntegerField(default=0)
    to_update = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    error_rows = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict, blank=True)
    failure = models.TextField(blank=True)

    # Progress of the running phase, and what the write phase did.
    processed_rows = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    added_count = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["brand", "-created_at"]),
            models.Index(fields=["project", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.original_name or 'records'})"

    @property
    def is_running(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def valid_rows(self) -> int:
        return self.to_create + self.to_update + self.unchanged

    @property
    def progress_percent(self) -> int:
        return max(0, min(100, round(self.progress * 100)))
