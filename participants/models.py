from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from brands.models import Brand
from brands.scoping import BrandScopedManager
from projects.models import Project


class Person(models.Model):
    """Someone in a brand's directory. ``phone`` is E.164 or empty."""

    brand_path = "brand"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="people")
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
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BrandScopedManager()

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

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="participants")
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="participations")
    role = models.CharField(max_length=120, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
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
        indexes = [models.Index(fields=["project", "role"])]

    def __str__(self) -> str:
        return f"{self.person} in {self.project}"
