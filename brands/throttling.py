"""The API's per-key rate limit (``API_KEY_RATE``, e.g. ``6000/min``).

A fixed-window counter: with Redis (``REDIS_URL``, production) one pipelined ``INCR`` and
``EXPIRE`` per call, one round trip on a client kept by the process (Django's cache would
make a client per operation and take two round trips: ``add`` then ``incr``); without Redis,
``add`` and ``incr`` in Django's cache. DRF's ``SimpleRateThrottle`` keeps the time of every
call of the window in one cache entry and reads, filters and writes it back whole on each
call: at 6,000 calls a minute that is a 6,000-item list pickled twice per call, and it is
the slowest part of a busy key's calls. The price of the counter: a client may send up to twice
the rate across the boundary of two windows.
"""

import time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle

from brands.models import ApiKey

_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL)
    return _redis_client


def _redis_count(counter: str, timeout: int) -> int:
    """Count one call in ``counter`` (made with its expiry if new); answer the count."""
    pipe = _redis().pipeline(transaction=False)
    pipe.incr(counter)
    pipe.expire(counter, timeout)
    count, _ = pipe.execute()
    return count


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key; session users are throttled by user id, others by address."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            ident = f"key:{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self.window_ends = (window + 1) * self.duration
        self.now = now
        counter = f"{key}:{window}"
        if settings.REDIS_URL:
            return _redis_count(f"relay:{counter}", self.duration + 1) <= self.num_requests
        cache.add(counter, 0, timeout=self.duration + 1)
        try:
            count = cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.set(counter, 1, timeout=self.duration + 1)
            count = 1
        return count <= self.num_requests

    def wait(self):
        return max(0.0, self.window_ends - self.now)
