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


# What a worker's death may cost (issue: noticed and resumed within 30 s).
RECOVERY_SECONDS = 30.0


class KillClock:
    """For kill-a-worker tests: the rows the dead worker held, and how soon they are settled.

    ``killed()`` (right after the kill) notes the recipient rows in Sending under a lease.
    The bound is the issue's own: within ``RECOVERY_SECONDS`` of the new worker being ready,
    no row is still held by a dead lease and sending has resumed. It measures recovery itself, not a
    total that a busy machine stretches (the send's own speed is not part of it)."""

    def __init__(self, measure: Callable[[], int]):
        self.measure = measure
        self.held: dict[int, str] = {}
        self.at_kill = 0

    def killed(self, distribution) -> int:
        from distributions.models import Message

        self.at_kill = self.measure()
        rows = Message.objects.filter(distribution=distribution, status=Message.Status.SENDING)
        self.held = dict(rows.exclude(lease="").values_list("pk", "lease"))
        return self.at_kill

    def _still_held(self) -> int:
        from distributions.models import Message

        rows = Message.objects.filter(pk__in=self.held, status=Message.Status.SENDING)
        leases = dict(rows.values_list("pk", "lease"))
        return sum(1 for pk, lease in self.held.items() if leases.get(pk) == lease)

    def wait_recovered(self, *, ready: float, describe: Callable[[], str] | None = None) -> float:
        """Wait (on progress) until the dead worker's rows are settled and a message went out
        after the restart; fail if that took more than ``RECOVERY_SECONDS`` after ``ready``."""
        until(
            lambda: self._still_held() == 0 and self.measure() > self.at_kill,
            progress=lambda: (self._still_held(), self.measure()),
            describe=describe,
        )
        took = time.monotonic() - ready
        assert took <= RECOVERY_SECONDS, (
            f"{took:.1f} s after the restart before the {len(self.held)} rows the dead worker "
            f"held were settled and sending resumed\n{describe() if describe else ''}"
        )
        return took
