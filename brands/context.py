"""Who is acting, for which brand, with which role: resolved once per request."""

from __future__ import annotations

from dataclasses import dataclass

from brands.models import ApiKey, Brand, Membership

SESSION_BRAND_KEY = "relay_brand_id"


@dataclass(frozen=True)
class BrandContext:
    brand: Brand | None
    role: str | None
    api_key: ApiKey | None = None


NO_BRAND = BrandContext(brand=None, role=None)


def user_memberships(user) -> list[Membership]:
    if not getattr(user, "is_authenticated", False) or not getattr(user, "pk", None):
        return []
    return list(Membership.objects.filter(user=user).select_related("brand"))


def context_for_user(user, session) -> BrandContext:
    """The brand chosen in the session (if the user still belongs to it), else their first."""
    memberships = user_memberships(user)
    if not memberships:
        return NO_BRAND
    wanted = session.get(SESSION_BRAND_KEY) if session is not None else None
    chosen = next((m for m in memberships if m.brand_id == wanted), memberships[0])
    return BrandContext(brand=chosen.brand, role=chosen.role)


def context_for_api_key(api_key: ApiKey) -> BrandContext:
    return BrandContext(brand=api_key.brand, role=api_key.role, api_key=api_key)
