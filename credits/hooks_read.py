"""What distribution pages and the API read from credits.

The interface is fixed here so that pages can be built before and after the ledger: until the
credits ledger lands these return None ("not tracked").
"""

from __future__ import annotations

from decimal import Decimal


def credits_consumed(*, distribution) -> Decimal | None:
    """Credits debited for this distribution (None: not tracked)."""
    return None


def credits_available(*, brand) -> Decimal | None:
    """The brand's balance available for new distributions (None: not tracked)."""
    return None


def credits_estimate(
    *, project, message: str, conditions: list | None, kind: str = "invite", parent=None
) -> dict | None:
    """The cost of sending ``message`` to the participants ``conditions`` select, before
    scheduling: ``{"recipients", "segments", "credits", "available", "covered",
    "by_country": [{"country", "recipients", "segments", "credits"}], "self_service"}``.
    None: not tracked."""
    return None
