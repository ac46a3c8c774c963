"""The tables of signed anonymous links: a project's signing secrets and the signatures
already used (the rules and the canonical form: ``surveys.signed_links``, docs/links.md)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from brands.fields import EncryptedTextField
from brands.scoping import BrandScopedManager


class SigningSecret(models.Model):
    """A project's secret for signed anonymous links. At most one active (not revoked)."""

    brand_path = "project__brand"

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="signing_secrets"
    )
    secret = EncryptedTextField()
    hint = models.CharField(max_length=8, help_text="The last characters, to recognise it.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # A rotated secret may still verify URLs until then (already sent links keep working).
    accepted_until = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(revoked_at__isnull=True),
                name="signing_secret_one_active_per_project",
            )
        ]

    def __str__(self) -> str:
        return f"Signing secret …{self.hint}"


class SignedLinkUse(models.Model):
    """A signed URL that was answered: its signature's sha256, unique per project."""

    brand_path = "project__brand"

    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="signed_link_uses"
    )
    digest = models.CharField(max_length=64)
    response = models.OneToOneField(
        "projects.Response",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="signed_use",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "digest"], name="signed_link_use_unique_digest"
            )
        ]

    def __str__(self) -> str:
        return self.digest[:12]
