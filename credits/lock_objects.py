"""Every row lock the credits app takes, in one place (see STYLE.md, "Locks and money").

A brand's ledger is written only while its ``CreditAccount`` row is locked, so that two
writers (two distributions starting, a chunk covering its messages while another debits) see
each other's entries and cannot both spend the same credits. Several accounts are always
locked in primary-key order, so that two writers never wait on each other in a cycle.

SQLite has no row locks: its write transactions already admit one writer at a time
(``transaction_mode = IMMEDIATE`` in settings), which gives the same guarantee.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction

from credits.models import CreditAccount


def _ensure_accounts(brand_ids: Iterable[int]) -> None:
    existing = set(
        CreditAccount.objects.filter(brand_id__in=list(brand_ids)).values_list(
            "brand_id", flat=True
        )
    )
    for brand_id in sorted(set(brand_ids) - existing):
        try:
            with transaction.atomic():
                CreditAccount.objects.create(brand_id=brand_id)
        except IntegrityError:
            pass  # created meanwhile by another writer: what we wanted


def credit_account_lock(*, brand_id: int) -> CreditAccount:
    """Lock the brand's credit account until the current transaction ends (created if needed).

    Must be called inside ``transaction.atomic()``.
    """
    return credit_accounts_lock(brand_ids=[brand_id])[0]


def credit_accounts_lock(*, brand_ids: Iterable[int]) -> list[CreditAccount]:
    """Lock several brands' accounts, ordered by primary key."""
    wanted = sorted(set(brand_ids))
    _ensure_accounts(wanted)
    return list(
        CreditAccount.objects.select_for_update().filter(brand_id__in=wanted).order_by("pk")
    )
