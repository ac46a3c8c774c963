"""Brands share the applier (``conversations.replies._claim``): a brand whose replies come
faster than they are applied never holds back another brand's. On SQLite and PostgreSQL
(``tests/test_two_way_claims.py``: the claim's plans and row locks, PostgreSQL only)."""

from __future__ import annotations

import pytest

from conversations.replies import _shares
from tests.test_two_way_claims import backlog, claim

pytestmark = pytest.mark.django_db


def test_a_claim_shares_the_batch_between_the_brands_waiting(tenancy):
    """Brand A's 2,000 replies came first and B's 5 after them: the next batch takes B's 5
    with the oldest of A's (each brand's oldest, an equal share each, the share B cannot use
    given to A), not 40 of A's while B's wait behind A's backlog."""
    a = backlog(tenancy.brand_a, 2_000)
    b = backlog(tenancy.brand_b, 5, first=2_000)
    assert claim(40) == sorted(a[:35] + b)
    # Both with more than a share waiting: half each, each brand's oldest.
    more_b = backlog(tenancy.brand_b, 100, first=3_000)
    assert claim(40) == sorted(a[:20] + b + more_b[:15])


def test_shares_are_equal_and_what_a_brand_cannot_use_goes_to_the_others():
    assert _shares({1: 200, 2: 200}, 200) == {1: 100, 2: 100}
    assert _shares({1: 200, 2: 5}, 200) == {1: 195, 2: 5}
    assert _shares({1: 200, 2: 5, 3: 60}, 200) == {2: 5, 3: 60, 1: 135}
    assert _shares({1: 200, 2: 200, 3: 200}, 200) == {1: 67, 2: 67, 3: 66}
    assert _shares({1: 3}, 200) == {1: 3}
    assert sum(_shares(dict.fromkeys(range(1, 8), 200), 200).values()) == 200
