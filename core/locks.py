"""A lock with a timeout for periodic jobs, so that two beats cannot run one job twice.

Backed by the cache: Redis in production (``cache.add`` is SET NX), process memory in
development where there is one beat anyway. Correctness never rests on it alone: claims are
conditional UPDATEs; the lock only saves duplicate work.
"""

from __future__ import annotations

import contextlib
import uuid

from django.core.cache import cache


@contextlib.contextmanager
def periodic_lock(name: str, *, timeout: int):
    key = f"relay:lock:{name}"
    token = uuid.uuid4().hex
    acquired = cache.add(key, token, timeout)
    try:
        yield acquired
    finally:
        if acquired and cache.get(key) == token:
            cache.delete(key)
