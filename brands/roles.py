"""Roles of a brand member or API key, ranked: a higher role can do what a lower one can."""

from django.db import models


class Role(models.TextChoices):
    BRAND_ADMIN = "brand_admin", "Brand admin"
    PROJECT_ADMIN = "project_admin", "Project admin"
    VIEWER = "viewer", "Viewer"


ROLE_RANK = {Role.VIEWER: 1, Role.PROJECT_ADMIN: 2, Role.BRAND_ADMIN: 3}


def role_allows(role: str | None, required: str) -> bool:
    """True when ``role`` is at least ``required``."""
    if role is None:
        return False
    return ROLE_RANK.get(Role(role), 0) >= ROLE_RANK[Role(required)]
