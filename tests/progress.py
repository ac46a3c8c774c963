"""Waiting for workers without a wall-clock deadline: a test fails when nothing moves for a
long while (wrong behaviour), never because a busy machine is slow."""

from __future__ import annotations

import time
from collections.abc import Callable

# Longer than anything a live engine may legitimately sit still for: a lease lapsing (20 s by
# default) before recovery settles a dead worker's rows, a worker starting.
STALL_SECONDS = 90.0


def wait_for_progress(
    measure: Callable[[], object],
    done: Callable[[object], bool],
    *,
    stall: float = STALL_SECONDS,
    every: float = 0.2,
    describe: Callable[[], str] | None = None,
):
    """Poll ``measure()`` until ``done(value)``; fail when its value has not changed for
    ``stall`` seconds. Returns the last value."""
    last, moved = measure(), time.monotonic()
    while not done(last):
        time.sleep(every)
        value = measure()
        if value != last:
            last, moved = value, time.monotonic()
        elif time.monotonic() - moved > stall:
            detail = f"\n{describe()}" if describe else ""
            raise AssertionError(f"no progress for {stall:.0f} s (stuck at {last!r}){detail}")
    return last


def distribution_progress(distribution) -> tuple:
    """What moves while a distribution is sent: its status and its rows' statuses."""
    from django.db.models import Count

    from distributions.models import Distribution

    status = Distribution.objects.filter(pk=distribution.pk).values_list("status", flat=True)
    counts = distribution.messages.values("status").annotate(n=Count("pk")).order_by("status")
    return (status.first(), tuple((row["status"], row["n"]) for row in counts))


def wait_until_finished(distribution, **kwargs) -> None:
    """Wait, on progress, until the distribution is Sent, Failed, Interrupted or Cancelled."""
    from distributions.models import Distribution

    wait_for_progress(
        lambda: distribution_progress(distribution),
        lambda value: value[0] in Distribution.FINISHED,
        **kwargs,
    )
    distribution.refresh_from_db()


def until(
    predicate: Callable[[], bool],
    progress: Callable[[], object],
    *,
    stall: float = STALL_SECONDS,
    every: float = 0.2,
    describe: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate()`` until it holds; fail when ``progress()`` has not changed for
    ``stall`` seconds."""
    wait_for_progress(
        lambda: (bool(predicate()), progress()),
        lambda value: value[0],
        stall=stall,
        every=every,
        describe=describe,
    )


# What a worker's death may cost on top of sending (issue: recovery within 30 s).
RECOVERY_SECONDS = 30.0


class KillClock:
    """For kill-a-worker tests: the send rate before the kill, and the bound after it."""

    def __init__(self, measure: Callable[[], int]):
        self.measure = measure
        self.samples: list[tuple[float, int]] = []

    def mark(self) -> int:
        value = self.measure()
        self.samples.append((time.monotonic(), value))
        return value

    def rate(self) -> float:
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / max(0.1, t1 - t0)

    def assert_recovered(self, *, total: int, ready: float, finished: float) -> None:
        """The rest of the send, begun when the new worker was ready, took at most its
        sending time at the rate seen before the kill plus ``RECOVERY_SECONDS``."""
        remaining = total - self.samples[-1][1]
        sending = remaining / max(1.0, self.rate())
        took = finished - ready
        assert took <= sending + RECOVERY_SECONDS, (
            f"{took:.1f} s after the restart for {remaining} messages "
            f"({sending:.1f} s of sending at {self.rate():.0f}/s)"
        )
