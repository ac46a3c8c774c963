"""What distribution pages read from credits."""

from __future__ import annotations

from decimal import Decimal


def credits_consumed(*, distribution) -> Decimal | None:
    """Credits debited for this distribution; None until the credits ledger lands."""
    return None
