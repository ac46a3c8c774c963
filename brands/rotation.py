"""Rotation of a secret that others hold (a project's signing secret, a webhook endpoint's):
the previous one may stay valid for a grace period while they switch."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError

MAX_GRACE = timedelta(days=7)
MAX_GRACE_HOURS = int(MAX_GRACE.total_seconds() // 3600)


def grace_check(grace: timedelta) -> timedelta:
    """``grace`` if it is allowed (0 to ``MAX_GRACE``); else a ValidationError on
    ``grace_hours``."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise ValidationError(
            {"grace_hours": f"Grace period: between 0 and {MAX_GRACE_HOURS} hours."}, code="invalid"
        )
    return grace


def grace_from_hours(value) -> timedelta:
    """The grace period a form asked for (``grace_hours``: empty means none)."""
    try:
        hours = int(value or 0)
    except (TypeError, ValueError):
        raise ValidationError(
            {"grace_hours": f"Grace period: a number of hours from 0 to {MAX_GRACE_HOURS}."},
            code="invalid",
        ) from None
    return grace_check(timedelta(hours=hours))
