"""A sender's token bucket, as arithmetic: the fair queue keeps its state on the ``Sender``
row and changes it in the same transaction that leases the rows it pays for.

A sender may send ``rate`` messages per second, with a burst of at most one second of its rate
(``capacity``): over any interval of ``t`` seconds it sends at most ``rate * t + capacity``
messages. ``rate`` 0 means no limit. Nothing here waits: a caller that finds fewer than one
token learns when the next one comes (``ready_at``) and does other work meanwhile.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

UNLIMITED = math.inf


def capacity(rate: float) -> float:
    """The most tokens a bucket holds: one second of its rate, at least one message."""
    return UNLIMITED if rate <= 0 else max(float(rate), 1.0)


def refill(*, rate: float, tokens: float, tokens_at: datetime, now: datetime) -> float:
    """The tokens a bucket holds at ``now``, having held ``tokens`` at ``tokens_at``."""
    if rate <= 0:
        return UNLIMITED
    elapsed = max(0.0, (now - tokens_at).total_seconds())
    return min(capacity(rate), tokens + elapsed * rate)


def batch(rate: float) -> float:
    """Tokens a sender waits for before it is served again: a quarter second of its rate
    (one message at least, one second of it at most). A fast sender is served in windows,
    not one message a pick; a slow one as soon as it may send one."""
    if rate <= 0:
        return 1.0
    return min(capacity(rate), max(1.0, rate * PACE_SECONDS))


PACE_SECONDS = 0.25


# Ready times are rounded up to this grid (of Unix time): senders that come due within one
# step come due together. It costs a sender at most one step per wait (half of it on
# average), so it is short: what gathers many slow senders' windows into one batch is the
# pick-ahead (``fairqueue.pick_ahead``: every sender due within it is picked together), not
# the grid (20 ms here cost 200 long codes 1 % of their rate).
GRID_SECONDS = 0.005


def ready_at(*, rate: float, tokens: float, now: datetime) -> datetime:
    """When a bucket holding ``tokens`` at ``now`` holds a ``batch`` of whole tokens (on the
    grid; ``now`` itself when it does already)."""
    wanted = batch(rate)
    if rate <= 0 or tokens >= wanted:
        return now
    # Rounded up: a bucket is never asked before its tokens are whole.
    due = now.timestamp() + (wanted - tokens) / rate
    step = math.ceil(due / GRID_SECONDS - 1e-9) * GRID_SECONDS
    return now + timedelta(microseconds=math.ceil((step - now.timestamp()) * 1_000_000))


def due(*, rate: float, tokens: float, tokens_at: datetime, now: datetime) -> datetime:
    """When a bucket that held ``tokens`` at ``tokens_at`` (which may be later than ``now``:
    a window picked ahead, a pause) holds a ``batch``; ``now`` at the earliest."""
    if rate <= 0:
        return now
    since = max(now, tokens_at)
    return ready_at(
        rate=rate,
        tokens=refill(rate=rate, tokens=tokens, tokens_at=tokens_at, now=since),
        now=since,
    )


def take(tokens: float, wanted: int) -> int:
    """How many of ``wanted`` messages the bucket pays for now (whole tokens only)."""
    if tokens == UNLIMITED:
        return wanted
    return max(0, min(wanted, int(math.floor(tokens + 1e-9))))
