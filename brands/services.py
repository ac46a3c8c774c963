"""Writes for brands, memberships and API keys."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from brands.models import ApiKey, Brand, Membership
from brands.roles import Role
from brands.scoping import fresh_copy

SEND_POLICY_FIELDS = (
    "time_zone",
    "quiet_hours_start",
    "quiet_hours_end",
    "quiet_hours_sms",
    "quiet_hours_email",
)


def brand_send_policies_update(*, brand: Brand, **changes) -> Brand:
    """Change the brand's time zone and quiet hours (docs/policies.md); ValidationError by
    field (an unknown zone, empty quiet hours) and nothing saved."""
    unknown = set(changes) - set(SEND_POLICY_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed here."))
    for name, value in changes.items():
        setattr(brand, name, value)
    brand.full_clean()
    brand.save(update_fields=list(changes) or None)
    return brand


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
    """Revoke ``api_key``: refused at once by this process, by every process within
    ``API_KEY_CACHE_SECONDS`` (see ``api_key_authenticate``)."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    api_key_cache_forget(pk=api_key.pk)
    return api_key


LAST_USED_RESOLUTION_SECONDS = 60
# How long a process reuses what it read about a key: a key revoked (or its role or brand
# changed) in another process is still honoured by this one for at most this long.
API_KEY_CACHE_SECONDS = 5.0
API_KEY_CACHE_SIZE = 1000  # keys per process; the whole cache is dropped when it is full

# sha256 of the presented key -> (monotonic time the entry expires, the key with its brand).
# Keyed by the whole presented key, secret included: a hit is a key whose secret was proven.
_key_cache: dict[str, tuple[float, ApiKey]] = {}


def api_key_cache_forget(*, pk: int | None = None) -> None:
    """Drop this process's cached lookups of key ``pk`` (of every key if None)."""
    if pk is None:
        _key_cache.clear()
        return
    for digest in [d for d, (_, k) in _key_cache.items() if k.pk == pk]:
        _key_cache.pop(digest, None)


def _api_key_lookup(key: str) -> ApiKey | None:
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
    return api_key


def api_key_authenticate(*, key: str) -> ApiKey | None:
    """Return the active key matching ``key`` (with its brand), or None. Touches
    ``last_used_at`` (coarsely).

    The lookup (a query and a hash check) is kept by the process for
    ``API_KEY_CACHE_SECONDS``: a busy client's calls do not each read the key. Each call gets
    its own copy of the key and brand, so nothing a request does to them leaks to the next.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()
    clock = time.monotonic()
    entry = _key_cache.get(digest)
    if entry is not None and entry[0] > clock:
        cached = entry[1]
    else:
        cached = _api_key_lookup(key)
        if cached is None:
            _key_cache.pop(digest, None)
            return None
        if len(_key_cache) >= API_KEY_CACHE_SIZE:
            _key_cache.clear()
        _key_cache[digest] = (clock + API_KEY_CACHE_SECONDS, cached)
    now = timezone.now()
    last = cached.last_used_at
    if last is None or (now - last).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        # One write a minute at most (per process): a busy client must not turn every call
        # into a write.
        ApiKey.objects.filter(pk=cached.pk).update(last_used_at=now)
        cached.last_used_at = now
    api_key = fresh_copy(cached)
    api_key.brand = fresh_copy(cached.brand)
    return api_key
