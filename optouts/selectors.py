"""Reads of opt-out state, used by every send path."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Exists, OuterRef

from optouts.models import OptOut


def optout_active_exists(*, brand_id: int, channel: str, address_ref: OuterRef) -> Exists:
    """A subquery expression: is the address at ``address_ref`` opted out in this brand?"""
    return Exists(
        OptOut.objects.filter(brand_id=brand_id, channel=channel, active=True, address=address_ref)
    )


def opted_out_addresses(*, brand_id: int, channel: str, addresses: Iterable[str]) -> set[str]:
    """Which of ``addresses`` are opted out right now (one query)."""
    wanted = {address for address in addresses if address}
    if not wanted:
        return set()
    return set(
        OptOut.objects.filter(
            brand_id=brand_id, channel=channel, active=True, address__in=wanted
        ).values_list("address", flat=True)
    )


def is_opted_out(*, brand_id: int, channel: str, address: str) -> bool:
    return bool(opted_out_addresses(brand_id=brand_id, channel=channel, addresses=[address]))
