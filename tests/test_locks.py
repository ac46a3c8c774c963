"""core.locks.periodic_lock: one holder at a time, kept while its holder runs however long,
and lapsing soon after a holder that died (a killed worker must not block recovery for long)."""

from __future__ import annotations

import time
import uuid

from django.core.cache import cache

from core.locks import periodic_lock
from tests.progress import until


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_one_holder_at_a_time_and_released_on_exit():
    name = _name()
    with periodic_lock(name, timeout=5) as first:
        assert first
        with periodic_lock(name, timeout=5) as second:
            assert not second
    with periodic_lock(name, timeout=5) as again:
        assert again


def test_a_live_holder_keeps_the_lock_past_its_timeout():
    name = _name()
    key = f"relay:lock:{name}"
    with periodic_lock(name, timeout=2) as acquired:
        assert acquired
        token = cache.get(key)
        # three renewals' worth: without the keeper the key would have lapsed after 2 s
        time.sleep(3)
        assert cache.get(key) == token
        with periodic_lock(name, timeout=2) as second:
            assert not second
    assert cache.get(key) is None


def test_a_dead_holders_lock_lapses_after_its_timeout():
    """A holder that stopped renewing (its process was killed) is simulated by a bare key."""
    name = _name()
    cache.add(f"relay:lock:{name}", "dead-holder", 1)
    with periodic_lock(name, timeout=1) as acquired:
        assert not acquired

    def acquired_now() -> bool:
        with periodic_lock(name, timeout=1) as acquired:
            return acquired

    # progress is the dead holder's key: it must be gone (lapsed) when the lock is acquired
    until(acquired_now, progress=lambda: cache.get(f"relay:lock:{name}"), stall=10)


def test_a_failing_job_releases_the_lock():
    name = _name()
    try:
        with periodic_lock(name, timeout=5) as acquired:
            assert acquired
            raise RuntimeError("job failed")
    except RuntimeError:
        pass
    with periodic_lock(name, timeout=5) as again:
        assert again


def test_flags_are_set_once_in_redis_and_always_kick_without_it(settings, monkeypatch):
    """core.flags: with Redis a flag is set once until cleared (one kick for many requests);
    without it (embedded defaults, web and worker in separate memories) every call kicks."""
    import core.flags as flags

    monkeypatch.setattr(flags, "_client", None)
    name = _name()
    if settings.REDIS_URL:
        assert flags.flag_add(name, 5)
        assert not flags.flag_add(name, 5)
        flags.flag_clear(name)
        assert flags.flag_add(name, 5)
        flags.flag_clear(name)
    settings.REDIS_URL = ""
    monkeypatch.setattr(flags, "_client", None)
    assert flags.flag_add(name, 5)
    assert flags.flag_add(name, 5)  # nothing shared to hold it back
    flags.flag_clear(name)
