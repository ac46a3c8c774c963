"""What distribution pages and the API read from credits (the interface is fixed here)."""

from __future__ import annotations

from decimal import Decimal

from brands.models import Brand


def credits_consumed(*, distribution) -> Decimal | None:
    """Credits debited for this distribution (None: not tracked, e.g. an email distribution).

    A self-service brand is never debited: 0 (its usage is reported in segments)."""
    from credits.selectors import distribution_consumed

    if distribution.channel != "sms":
        return None
    return distribution_consumed(distribution=distribution)


def credits_available(*, brand) -> Decimal | None:
    """The brand's balance available for new distributions (None: a self-service brand,
    whose provider bills it directly)."""
    from credits.selectors import credits_balance
    from credits.services import reservations_settle

    if brand is None or brand.integration_model == Brand.IntegrationModel.SELF_SERVICE:
        return None
    reservations_settle(brand=brand)  # a distribution stopped while sending releases here
    return credits_balance(brand=brand).available


def credits_estimate(
    *, project, message: str, conditions: list | None, kind: str = "invite", parent=None
) -> dict | None:
    """The cost of sending ``message`` to the participants ``conditions`` select, before
    scheduling: ``{"recipients", "segments", "credits", "available", "covered",
    "by_country": [{"country", "recipients", "segments", "credits"}], "self_service"}``.
    None: not tracked."""
    from credits.estimate import schedule_estimate

    return schedule_estimate(
        project=project, message=message, conditions=conditions, kind=kind, parent=parent
    )
