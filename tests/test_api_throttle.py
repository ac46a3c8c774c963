"""The per-key API rate limit: a counter per key and window, 429 with Retry-After."""

from django.core.cache import cache
from rest_framework.settings import api_settings

import pytest

from tests.factories.brands import ApiKeyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def three_a_minute(monkeypatch):
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "api_key": "3/min"}
    monkeypatch.setattr("brands.throttling.ApiKeyRateThrottle.THROTTLE_RATES", rates, raising=False)
    cache.clear()
    yield
    cache.clear()


def test_a_key_over_its_rate_gets_429_and_others_do_not(three_a_minute, api_client_for, tenancy):
    first = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a))
    second = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a))

    statuses = [first.get("/api/v1/projects/").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]
    refused = first.get("/api/v1/projects/")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    assert second.get("/api/v1/projects/").status_code == 200


@pytest.fixture
def redis_counters(settings):
    """The throttle's Redis (the PostgreSQL pass of the suite sets REDIS_URL), and a key of
    this test's own: xdist processes share the database."""
    import uuid

    if not settings.REDIS_URL:
        pytest.skip("set REDIS_URL: the block counting is Redis's")
    return f"throttle:test-{uuid.uuid4().hex}"


def test_calls_are_counted_in_blocks_and_never_past_the_limit(redis_counters):
    from brands.throttling import _Claims, _redis

    key, limit = redis_counters, 2_000  # blocks of 10 calls
    processes = [_Claims(), _Claims()]

    allowed = [processes[n % 2].allow(key, 7, limit=limit, timeout=60) for n in range(limit + 100)]

    # Two processes, each holding part of a block at the end: the limit is never passed, and
    # at most a block's remainder per process is refused before it.
    assert limit - 2 * 9 <= sum(allowed) <= limit
    assert allowed[: limit - 2 * 9] == [True] * (limit - 2 * 9) and not any(allowed[limit:])
    counted = int(_redis().get(f"relay:{key}:7"))
    assert counted >= limit  # one round trip per 10 calls: the counter moved in tens
    assert counted % 10 == 0
    # A new window starts afresh.
    assert processes[0].allow(key, 8, limit=limit, timeout=60)


def test_a_small_rate_is_counted_call_by_call(redis_counters):
    from brands.throttling import _Claims, _redis, claim_block

    assert claim_block(60) == 1 and claim_block(6_000) == 10
    processes = [_Claims(), _Claims(), _Claims()]

    allowed = [processes[n % 3].allow(redis_counters, 1, limit=5, timeout=60) for n in range(8)]

    assert allowed == [True] * 5 + [False] * 3
    assert int(_redis().get(f"relay:{redis_counters}:1")) == 8
