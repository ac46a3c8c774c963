"""A lock for periodic jobs, so that two beats (or a beat and a worker's start) cannot run one
job twice at once.

Backed by the cache: Redis in production (``cache.add`` is SET NX), process memory in
development where there is one beat anyway. Correctness never rests on it alone: claims are
conditional UPDATEs; the lock only saves duplicate work.

The lock is kept alive while its holder runs (a thread renews it every third of ``timeout``)
and lapses ``timeout`` seconds after the holder stops renewing it. A worker killed mid-run
therefore blocks the job for at most ``timeout`` seconds, however long a healthy run may take
(a recovery of a dead worker's rows must not wait for a lock that the dead worker took).
"""

from __future__ import annotations

import contextlib
import threading
import uuid

from django.core.cache import cache


def _renew(key: str, token: str, timeout: int, stop: threading.Event) -> None:
    while not stop.wait(timeout / 3):
        # get-then-touch is not atomic: at worst another holder's lock lives one lapse longer
        if cache.get(key) != token or not cache.touch(key, timeout):
            return


@contextlib.contextmanager
def periodic_lock(name: str, *, timeout: int):
    """``with periodic_lock("name", timeout=10) as acquired:`` runs the job only if
    ``acquired``; ``timeout`` is how long the lock outlives a holder that died."""
    key = f"relay:lock:{name}"
    token = uuid.uuid4().hex
    acquired = cache.add(key, token, timeout)
    stop = threading.Event()
    keeper = None
    if acquired:
        keeper = threading.Thread(
            target=_renew, args=(key, token, timeout, stop), name=f"lock:{name}", daemon=True
        )
        keeper.start()
    try:
        yield acquired
    finally:
        stop.set()
        if keeper is not None:
            keeper.join()
        if acquired and cache.get(key) == token:
            cache.delete(key)
