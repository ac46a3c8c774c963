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
