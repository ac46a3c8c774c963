"""Makes "an opt-out wins over every message not yet handed over" exact, not nearly so.

A sender checks opt-outs and then calls the provider: without a lock, an opt-out committed
between the two (a few milliseconds) would let one message through. So the check and the
hand-over of one window happen under a *shared* per-brand lock (``handover_guard``), and
recording an opt-out takes the same lock *exclusively* inside its transaction
(``optout_write_lock``): an opt-out waits for the windows already checked to be handed over
(they went before it, so they are not "after the opt-out"), and the windows checked after it
see it. Windows of one brand never wait for each other (shared locks).

- PostgreSQL: advisory locks keyed by (``LOCK_CLASS``, brand id). The exclusive lock is
  transaction-scoped, so it lasts until the opt-out is committed, whatever transaction it is
  nested in; the shared lock is session-scoped and released in ``finally`` (or when a dead
  worker's connection closes).
- SQLite (one machine): every write transaction begins IMMEDIATE and SQLite allows one writer
  at a time, so running the guarded window as a write transaction excludes opt-out writes.

Never take ``optout_write_lock`` while holding ``handover_guard`` in another connection's
name (two workers would wait for each other): record results *after* the guarded block.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from django.db import DatabaseError, OperationalError, connection, transaction

logger = logging.getLogger(__name__)

LOCK_CLASS = 0x0F70  # first key of our advisory locks ("opt-out"); the second is the brand id
# How long an opt-out waits for the windows in flight before it is recorded anyway (a stuck
# provider call must not lose an opt-out). A window is one provider round trip.
WRITE_LOCK_TIMEOUT = "10s"


@contextlib.contextmanager
def handover_guard(*, brand_id: int) -> Iterator[None]:
    """Hold while checking opt-outs and handing one window of messages to the provider."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock_shared(%s, %s)", [LOCK_CLASS, brand_id])
        try:
            yield
        finally:
            _unlock_shared(brand_id)
    elif connection.vendor == "sqlite":
        with transaction.atomic():
            yield
    else:  # pragma: no cover - other databases: the check alone (milliseconds of exposure)
        yield


def _unlock_shared(brand_id: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_shared(%s, %s)", [LOCK_CLASS, brand_id])
    except DatabaseError:
        # An aborted transaction refuses the unlock; a closed connection releases the lock.
        logger.exception("could not release the opt-out guard of brand %s", brand_id)
        if not connection.in_atomic_block:
            connection.close()


def optout_write_lock(*, brand_id: int) -> None:
    """Call first inside the transaction that records an opt-out (see the module docstring)."""
    if connection.vendor != "postgresql":
        return  # SQLite: the IMMEDIATE write transaction already excludes guarded windows
    if not connection.in_atomic_block:
        raise RuntimeError("optout_write_lock must be called inside a transaction")
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a savepoint: see below
            cursor.execute("SELECT current_setting('lock_timeout')")
            previous = cursor.fetchone()[0]
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [WRITE_LOCK_TIMEOUT])
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_CLASS, brand_id])
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
    except OperationalError:
        # The savepoint rolled back (and with it the lock_timeout); the opt-out itself must
        # still be recorded: a window stuck at the provider only loses the exactness.
        logger.warning("opt-out for brand %s recorded without waiting for windows", brand_id)
