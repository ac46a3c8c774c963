"""What the sending engine asks of credits (``distributions.sending`` calls these).

* ``credits_reserve_for_distribution``: at start, inside the materialisation transaction;
* ``credits_covering``: before a leased chunk is rendered and sent: the ids its credits cover
  (a ``Coverage`` set; ``.skipped`` maps rows in a disabled country to the reason);
* ``credits_debit_messages``: for every message the provider accepted (also reconciled ones);
* ``credits_release_for_distribution``: when the distribution finishes.

The rules live in ``credits.services``; these keep the engine's names and signatures.
"""

from __future__ import annotations

from credits.services import (
    Coverage,
    distribution_cover,
    distribution_release,
    distribution_reserve,
    distributions_cover,
    messages_debit,
    messages_debit_many,
)


def credits_reserve_for_distribution(*, distribution) -> None:
    distribution_reserve(distribution=distribution)


def credits_release_for_distribution(*, distribution) -> None:
    distribution_release(distribution=distribution)


def credits_covering(*, distribution, messages) -> Coverage:
    return distribution_cover(distribution=distribution, messages=messages)


def credits_debit_messages(*, distribution, message_ids) -> None:
    messages_debit(distribution=distribution, message_ids=message_ids)


def credits_covering_many(*, items) -> dict[int, Coverage]:
    """``credits_covering`` for every distribution of a send batch: [(distribution, rows)]."""
    return distributions_cover(items=items)


def credits_debit_many(*, items) -> None:
    """``credits_debit_messages`` for every distribution of a send batch: [(distribution,
    message ids)]."""
    messages_debit_many(items=items)
