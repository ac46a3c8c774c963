from __future__ import annotations

import functools
import hashlib
import secrets
import zoneinfo
from datetime import time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

import phonenumbers

from brands.roles import Role
from brands.scoping import BrandScopedManager


def validate_region(value: str) -> None:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValidationError(f"'{value}' is not a known ISO 3166 country code.")


@functools.cache
def time_zone_names() -> frozenset[str]:
    """Every IANA zone name this machine knows (read once: it scans the zone files)."""
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in time_zone_names():
        raise ValidationError(f"'{value}' is not a known IANA time zone.")


class Brand(models.Model):
    """A tenant: an organisation with a licence, its users, projects and settings."""

    class IntegrationModel(models.TextChoices):
        SUB_ACCOUNT = "sub_account", "Sub-account (credits bought from Relay)"
        SELF_SERVICE = "self_service", "Self-service (the brand's own provider account)"

    brand_path = "pk"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    default_country = models.CharField(
        max_length=2,
        default="US",
        validators=[validate_region],
        help_text="ISO country used to read phone numbers written without a country code.",
    )
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    # Quiet hours (docs/policies.md): no message in a recipient's local night, per channel.
    # Off by default; a project may override them (``projects.Project.quiet_hours_override``).
    quiet_hours_start = models.TimeField(
        default=time(21, 0), help_text="Start of the quiet hours, recipient local time."
    )
    quiet_hours_end = models.TimeField(
        default=time(8, 0), help_text="End of the quiet hours, recipient local time."
    )
    quiet_hours_sms = models.BooleanField(
        default=False, help_text="No SMS inside the quiet hours: it waits for their end."
    )
    quiet_hours_email = models.BooleanField(
        default=False, help_text="No email inside the quiet hours: it waits for their end."
    )
    integration_model = models.CharField(
        max_length=20, choices=IntegrationModel.choices, default=IntegrationModel.SUB_ACCOUNT
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.quiet_hours_start == self.quiet_hours_end:
            raise ValidationError(
                {"quiet_hours_end": "The quiet hours end when they start: they are empty."}
            )

    @property
    def is_self_service(self) -> bool:
        """The brand sends through its own provider account and pays the provider: credits are
        neither reserved nor debited (usage is still recorded)."""
        return self.integration_model == self.IntegrationModel.SELF_SERVICE

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


class Membership(models.Model):
    """A user's role in one brand. A user may belong to several brands."""

    brand_path = "brand"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "brand"], name="membership_unique_user_brand")
        ]
        ordering = ["brand__name"]

    def __str__(self) -> str:
        return f"{self.user} in {self.brand} ({self.get_role_display()})"


class ApiKey(models.Model):
    """A REST client's credential. The secret is shown once; only its SHA-256 is stored.

    A key reads ``rly_<prefix>_<secret>``: the prefix finds the row, the hash proves the secret.
    """

    brand_path = "brand"
    PREFIX_LENGTH = 8
    SECRET_BYTES = 24

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.PROJECT_ADMIN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (rly_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def new_credentials(cls) -> tuple[str, str, str]:
        """Return (prefix, secret, full key)."""
        prefix = secrets.token_hex(cls.PREFIX_LENGTH // 2)
        secret = secrets.token_urlsafe(cls.SECRET_BYTES)
        return prefix, secret, f"rly_{prefix}_{secret}"
