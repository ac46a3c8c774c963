"""Writes for brands, memberships and API keys."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from brands.models import ApiKey, Brand, Membership
from brands.roles import Role


def brand_create(
    *,
    name: str,
    slug: str | None = None,
    default_country: str = "US",
    time_zone: str = "UTC",
    integration_model: str = Brand.IntegrationModel.SUB_ACCOUNT,
    admin: AbstractBaseUser | None = None,
) -> Brand:
    """Create a brand, with ``admin`` (if given) as its first brand admin."""
    brand = Brand(
        name=name,
        slug=slug or slugify(name)[:80],
        default_country=default_country.upper(),
        time_zone=time_zone,
        integration_model=integration_model,
    )
    brand.full_clean()
    with transaction.atomic():
        brand.save()
        if admin is not None:
            Membership.objects.create(user=admin, brand=brand, role=Role.BRAND_ADMIN)
    return brand


def membership_set(*, brand: Brand, user: AbstractBaseUser, role: str) -> Membership:
    """Give ``user`` the ``role`` in ``brand`` (creating or changing the membership)."""
    membership, _ = Membership.objects.update_or_create(
        brand=brand, user=user, defaults={"role": Role(role)}
    )
    return membership


@dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    key: str  # the full secret: shown to the caller once, never stored


def api_key_create(
    *, brand: Brand, name: str, role: str = Role.PROJECT_ADMIN, created_by=None
) -> IssuedApiKey:
    prefix, secret, full_key = ApiKey.new_credentials()
    api_key = ApiKey.objects.create(
        brand=brand,
        name=name,
        prefix=prefix,
        secret_hash=ApiKey.hash_secret(secret),
        role=Role(role),
        created_by=created_by,
    )
    return IssuedApiKey(api_key=api_key, key=full_key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


LAST_USED_RESOLUTION_SECONDS = 60


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """Return the active key matching ``key``, or None. Touches ``last_used_at`` (coarsely)."""
    try:
        scheme, prefix, secret = key.split("_", 2)
    except ValueError:
        return None
    if scheme != "rly" or not prefix or not secret:
        return None
    api_key = ApiKey.objects.select_related("brand").filter(prefix=prefix).first()
    if api_key is None or api_key.revoked_at is not None:
        return None
    if not hmac.compare_digest(api_key.secret_hash, ApiKey.hash_secret(secret)):
        return None
    now = timezone.now()
    last = api_key.last_used_at
    if last is None or (now - last).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        # One write a minute at most: a busy client must not turn every call into a write.
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
