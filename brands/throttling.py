"""The API's per-key rate limit (``API_KEY_RATE``, e.g. ``6000/min``).

A fixed-window counter: with Redis (``REDIS_URL``, production) one pipelined ``INCR`` and
``EXPIRE`` per call, one round trip on a client kept by the process (Django's cache would
make a client per operation and take two round trips: ``add`` then ``incr``); without Redis,
``add`` and ``incr`` in Django's cache. DRF's ``SimpleRateThrottle`` keeps the time of every
call of the window in one cache entry and reads, filters and writes it back whole on each
call: at 6,000 calls a minute that is a 6,000-item list pickled twice per call, and it is
the slowest part of a busy key's calls. The price of the counter: a client may send up to twice
the rate across the boundary of two windows.

With Redis a process counts a busy key's calls in blocks (``_Claims``): it adds up to
``CLAIM_BLOCK`` to the window's counter at once and lets that many calls through without
asking again (one round trip per block, not per call). The limit is still never exceeded,
since a block is only granted what is left under it; a key may be refused slightly before its
limit instead (at most ``block - 1`` calls per process and window, a hundredth of the rate at
most), and a rate under 200 a window is counted call by call, exactly.
"""

import threading
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


def _redis_count(counter: str, timeout: int, amount: int = 1) -> int:
    """Add ``amount`` calls to ``counter`` (made with its expiry if new); answer the count."""
    pipe = _redis().pipeline(transaction=False)
    pipe.incrby(counter, amount)
    pipe.expire(counter, timeout)
    count, _ = pipe.execute()
    return count


CLAIM_BLOCK = 10  # at most this many calls counted per round trip to Redis


def claim_block(limit: int) -> int:
    """How many calls a process claims at once under ``limit`` calls a window: a hundredth of
    the limit, between 1 and ``CLAIM_BLOCK``."""
    return max(1, min(CLAIM_BLOCK, limit // 100))


class _Claims:
    """Calls this process has counted in Redis ahead of time, per counter (key and window)."""

    def __init__(self):
        self.left: dict[str, tuple[int, int]] = {}  # key -> (window, calls left)
        self.lock = threading.Lock()

    def allow(self, key: str, window: int, *, limit: int, timeout: int) -> bool:
        with self.lock:
            held_window, left = self.left.get(key, (window, 0))
            if held_window == window and left > 0:
                self.left[key] = (window, left - 1)
                return True
        block = claim_block(limit)
        count = _redis_count(f"relay:{key}:{window}", timeout, block)
        granted = min(block, limit - (count - block))  # what is left under the limit
        if granted <= 0:
            return False
        with self.lock:
            if len(self.left) > 10_000:  # keys of past windows
                self.left = {k: v for k, v in self.left.items() if v[0] == window}
            self.left[key] = (window, granted - 1)
        return True


_claims = _Claims()


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key; session users are throttled by user id, others by address."""

    scope = "api_key"

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiKey):
            # The key's prefix (unique and random): a counter never shared by two keys, even
            # between databases that use one Redis (test runs in parallel).
            ident = f"key:{request.auth.prefix}"
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
        if settings.REDIS_URL:
            timeout = self.duration + 1
            return _claims.allow(key, window, limit=self.num_requests, timeout=timeout)
        counter = f"{key}:{window}"
        cache.add(counter, 0, timeout=self.duration + 1)
        try:
            count = cache.incr(counter)
        except ValueError:  # expired between add and incr
            cache.set(counter, 1, timeout=self.duration + 1)
            count = 1
        return count <= self.num_requests

    def wait(self):
        return max(0.0, self.window_ends - self.now)
