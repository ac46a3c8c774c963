"""Makes "an opt-out wins over every message not yet handed over" exact, not nearly so.

A sender checks opt-outs and then calls the provider: without a lock, an opt-out committed
between the two (a few milliseconds) would let one message through. So the check and the
hand-over of one window happen under *shared* locks on the window's addresses
(``handover_guard``), and recording an opt-out takes its address's lock *exclusively* inside
its transaction (``optout_write_lock``): an opt-out waits for a window in flight that holds its
address (that message went before it, so it is not "after the opt-out"), and a window checked
after it sees it. Windows never wait for each other, and opt-outs of different addresses never
wait for each other: the cost of an opt-out is at most one provider round trip, and only when
its address is being handed over at that very moment.

- PostgreSQL: advisory locks keyed by (``LOCK_CLASS``, a 32-bit hash of brand, channel and
  address); a hash collision only makes someone wait for nothing. The exclusive lock is
  transaction-scoped, so it lasts until the opt-out is committed, whatever transaction it is
  nested in; the shared locks are session-scoped and released in ``finally`` (or when a dead
  worker's connection closes). A window takes its locks in sorted order.
- SQLite (one machine): every write transaction begins IMMEDIATE and SQLite allows one writer
  at a time, so running the guarded window as a write transaction excludes opt-out writes.

Never record an opt-out inside ``handover_guard`` from another connection that the window
waits for: record results *after* the guarded block (two workers could wait for each other).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator

from django.db import DatabaseError, OperationalError, connection, transaction

logger = logging.getLogger(__name__)

LOCK_CLASS = 0x0F70  # first key of our advisory locks ("opt-out"); the second is the address
# How long an opt-out waits for the window in flight before it is recorded anyway (a stuck
# provider call must not lose an opt-out). A window is one provider round trip.
WRITE_LOCK_TIMEOUT = "10s"


def address_key(*, brand_id: int, channel: str, address: str) -> int:
    """The advisory lock key of one address in one brand (a signed 32-bit integer)."""
    digest = hashlib.blake2b(f"{brand_id}:{channel}:{address}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def handover_guard(*, brand_id: int, channel: str, addresses: Iterable[str]) -> Iterator[None]:
    """Hold while checking opt-outs and handing one window of messages to the provider."""
    with handover_guard_many(keys=[(brand_id, channel, address) for address in addresses]):
        yield


@contextlib.contextmanager
def handover_guard_many(*, keys: Iterable[tuple[int, str, str]]) -> Iterator[None]:
    """``handover_guard`` for the windows of several brands and channels at once (a send
    batch): (brand id, channel, address) each, one statement to lock, one to unlock."""
    if connection.vendor == "postgresql":
        keys = sorted(
            {
                address_key(brand_id=brand_id, channel=channel, address=address)
                for brand_id, channel, address in keys
            }
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_lock_shared(%s, k) FROM unnest(%s::int[]) AS k",
                [LOCK_CLASS, keys],
            )
        try:
            yield
        finally:
            _unlock_shared(keys)
    elif connection.vendor == "sqlite":
        with transaction.atomic():
            yield
    else:  # pragma: no cover - other databases: the check alone (milliseconds of exposure)
        yield


def _unlock_shared(keys: list[int]) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock_shared(%s, k) FROM unnest(%s::int[]) AS k",
                [LOCK_CLASS, keys],
            )
    except DatabaseError:
        # An aborted transaction refuses the unlock; a closed connection releases the locks:
        # now, or (inside a transaction) when the request or task ends, where the connection
        # is closed once it is past ``close_at`` (``close_old_connections``; a worker keeps
        # its connections across tasks, config.celery).
        logger.exception("could not release the opt-out guard of %s addresses", len(keys))
        if not connection.in_atomic_block:
            connection.close()
        else:
            connection.close_at = time.monotonic()


def optout_write_lock(*, brand_id: int, channel: str, address: str) -> None:
    """Call first inside the transaction that records an opt-out (see the module docstring)."""
    if connection.vendor != "postgresql":
        return  # SQLite: the IMMEDIATE write transaction already excludes guarded windows
    if not connection.in_atomic_block:
        raise RuntimeError("optout_write_lock must be called inside a transaction")
    key = address_key(brand_id=brand_id, channel=channel, address=address)
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a savepoint: see below
            cursor.execute("SELECT current_setting('lock_timeout')")
            previous = cursor.fetchone()[0]
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [WRITE_LOCK_TIMEOUT])
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, key])
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
    except OperationalError:
        # The savepoint rolled back (and with it the lock_timeout); the opt-out itself must
        # still be recorded: a window stuck at the provider only loses the exactness.
        logger.warning("opt-out of brand %s recorded without waiting for its window", brand_id)
