"""Short-lived flags shared by every process (``SET NX PX`` in Redis), for signals that must
cost little per request, such as kicking a worker once for many requests.

Backed by the Redis of the cache when there is one, through one client per process (Django's
Redis cache builds a client for every call, which costs more than the command). Without Redis
(development on embedded defaults) no flag is shared: the web process and the worker have
their own memory, so a flag set by one could never be cleared by the other and would hold
back every kick until it lapsed. There ``flag_add`` always answers True (each request kicks:
more publishes, never a reply left waiting).
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

import redis

_client: redis.Redis | None = None
PREFIX = "relay:flag:"


def _redis() -> redis.Redis | None:
    global _client
    if not settings.REDIS_URL:
        return None
    if _client is None:
        _client = redis.Redis.from_url(settings.REDIS_URL)  # its pool reconnects after a fork
    return _client


def _key(name: str) -> str:
    """Flags are about the work of one database (its queue): named with it, so that two
    databases on one Redis (tests in parallel, a benchmark) never share one."""
    return f"{PREFIX}{connection.settings_dict['NAME']}:{name}"


def flag_add(name: str, seconds: float) -> bool:
    """Set flag ``name`` for ``seconds`` unless it is set; True if this call set it."""
    client = _redis()
    if client is None:
        return True  # not shared between processes: see the module's docstring
    return bool(client.set(_key(name), 1, nx=True, px=max(1, int(seconds * 1000))))


def flag_clear(name: str) -> None:
    """Clear flag ``name`` (the next ``flag_add`` sets it)."""
    client = _redis()
    if client is not None:
        client.delete(_key(name))
