"""What the sending engine asks of credits. Until the credits ledger lands, nothing is
reserved or debited and every message is covered (as for a self-service brand)."""

from __future__ import annotations


def credits_reserve_for_distribution(*, distribution) -> None:
    return None


def credits_release_for_distribution(*, distribution) -> None:
    return None


def credits_covering(*, distribution, messages) -> set[int]:
    return {message.pk for message in messages}


def credits_debit_messages(*, distribution, message_ids) -> None:
    return None
