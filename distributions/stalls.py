"""Stalled sends: a distribution In progress that handed nothing to its provider for an hour,
or that has been In progress for more than seven days (the seed: "In progress for longer than
7 days means something is wrong"), and what is holding it.

What holds it is read from the state the engine keeps, never guessed: its rows (deferred to a
later ``due_at``, Failed for want of credits, refused by the provider, with a worker), its lane
in the fair queue and its sender (throttled, or paused by the provider's Retry-After). A
completion-triggered thank-you is In progress until stopped by design: it never stalls.

Cost: for any number of distributions (a page of the list, every one for the metrics), at most
two queries: one aggregate over the rows of the candidates (In progress for more than an hour;
younger ones cannot be stalled and cost nothing), one for their lanes with their senders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from distributions.models import Distribution, Message, SendLane

MStatus = Message.Status

NO_HANDOVER_FOR = timedelta(hours=1)  # no message handed to the provider for this long
IN_PROGRESS_AT_MOST = timedelta(days=7)  # the seed's "something is wrong"


class Holding(StrEnum):
    """What holds a stalled distribution, most actionable first."""

    CREDITS = "insufficient_credits"
    PROVIDER_ERRORS = "provider_errors"
    SENDER_PAUSED = "sender_paused"
    SENDER_THROTTLED = "sender_throttled"
    WAITING_ROWS = "waiting_rows"
    IN_FLIGHT = "in_flight"
    NOT_QUEUED = "not_queued"
    NO_WORKER = "no_worker"
    NOTHING_OPEN = "nothing_open"


class Why(StrEnum):
    NO_HANDOVER = "no_handover"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class Stall:
    distribution_id: int
    why: Why
    since: datetime  # the last hand-over (the start when nothing was handed over)
    holding: tuple[Holding, ...]
    details: tuple[str, ...]  # one sentence per holding, for the page

    @property
    def primary(self) -> Holding:
        return self.holding[0]

    @property
    def headline(self) -> str:
        if self.why == Why.TOO_LONG:
            return "In progress for more than 7 days."
        return "Nothing handed to the provider for more than an hour."

    @property
    def summary(self) -> str:
        return " ".join((self.headline, *self.details))


def _candidates(distributions: Iterable[Distribution], now: datetime) -> list[Distribution]:
    limit = now - NO_HANDOVER_FOR
    return [
        d
        for d in distributions
        if d.status == Distribution.Status.IN_PROGRESS
        and not d.trigger
        and (d.started_at or d.send_at) <= limit
    ]


def _row_figures(ids: list[int], now: datetime) -> dict[int, dict]:
    pending = Q(status=MStatus.PENDING)
    provider_error = (
        Q(status__in=(*Message.FAILED_STATUSES, MStatus.BOUNCED)) & ~Q(error_code="")
    ) | (pending & Q(attempts__gt=0))
    rows = (
        Message.objects.filter(distribution_id__in=ids)
        .values("distribution_id")
        .annotate(
            last_handover=Max("sent_at"),
            due=Count("pk", filter=pending & Q(due_at__lte=now)),
            deferred=Count("pk", filter=pending & Q(due_at__gt=now)),
            next_due=Min("due_at", filter=pending & Q(due_at__gt=now)),
            in_flight=Count("pk", filter=Q(status=MStatus.SENDING)),
            no_credits=Count(
                "pk", filter=Q(status=MStatus.FAILED, status_reason=Message.REASON_NO_CREDITS)
            ),
            provider_errors=Count("pk", filter=provider_error),
        )
        .order_by()
    )
    return {row["distribution_id"]: row for row in rows}


def _holding(row: dict, lane: SendLane | None, now: datetime) -> list[tuple[Holding, str]]:
    found: list[tuple[Holding, str]] = []
    if row["no_credits"]:
        found.append(
            (
                Holding.CREDITS,
                f"{row['no_credits']} message(s) were not sent: not enough credits.",
            )
        )
    if row["provider_errors"]:
        found.append(
            (
                Holding.PROVIDER_ERRORS,
                f"{row['provider_errors']} message(s) met provider errors (refused, or retried "
                "later): see their status in the recipient history.",
            )
        )
    sender = lane.sender if lane is not None else None
    if sender is not None and sender.ready_at > now:
        if sender.paused_reason:
            found.append(
                (
                    Holding.SENDER_PAUSED,
                    f"Its sender is paused until {sender.ready_at:%Y-%m-%d %H:%M} UTC: "
                    f"{sender.paused_reason}",
                )
            )
        else:
            found.append(
                (
                    Holding.SENDER_THROTTLED,
                    f"Its sender is throttled ({sender.rate} messages per second, shared with "
                    "the brand's other sends on it).",
                )
            )
    if row["deferred"]:
        found.append(
            (
                Holding.WAITING_ROWS,
                f"{row['deferred']} message(s) wait until {row['next_due']:%Y-%m-%d %H:%M} UTC "
                "or later (quiet hours, a send window, a contact frequency rule or a retry).",
            )
        )
    if row["in_flight"]:
        found.append(
            (
                Holding.IN_FLIGHT,
                f"{row['in_flight']} message(s) are with a worker with no outcome recorded "
                "yet; recovery checks them with the provider, never resends them blindly.",
            )
        )
    if row["due"] and not found:
        if lane is None or lane.ready_at is None:
            found.append(
                (
                    Holding.NOT_QUEUED,
                    f"{row['due']} message(s) are due but the distribution is not in the send "
                    "queue.",
                )
            )
        else:
            found.append(
                (
                    Holding.NO_WORKER,
                    f"{row['due']} message(s) are due and no worker is sending them: check the "
                    "workers and the send queue.",
                )
            )
    if not (row["due"] or row["deferred"] or row["in_flight"]):
        found.append(
            (
                Holding.NOTHING_OPEN,
                "No message is left to send: it ends after the next check of the engine.",
            )
        )
    return found


def distribution_stalls(
    *, distributions: Iterable[Distribution], now: datetime | None = None
) -> dict[int, Stall]:
    """The stalled ones among ``distributions`` (already loaded and brand-scoped), by id."""
    now = now or timezone.now()
    candidates = _candidates(distributions, now)
    if not candidates:
        return {}
    ids = [d.pk for d in candidates]
    figures = _row_figures(ids, now)
    lanes = {
        lane.distribution_id: lane
        for lane in SendLane.objects.filter(distribution_id__in=ids).select_related("sender")
    }
    empty = {
        "last_handover": None,
        "due": 0,
        "deferred": 0,
        "next_due": None,
        "in_flight": 0,
        "no_credits": 0,
        "provider_errors": 0,
    }
    stalls: dict[int, Stall] = {}
    for distribution in candidates:
        row = figures.get(distribution.pk, empty)
        started = distribution.started_at or distribution.send_at
        since = row["last_handover"] or started
        if started <= now - IN_PROGRESS_AT_MOST:
            why = Why.TOO_LONG
        elif since <= now - NO_HANDOVER_FOR:
            why = Why.NO_HANDOVER
        else:
            continue
        holding = _holding(row, lanes.get(distribution.pk), now)
        stalls[distribution.pk] = Stall(
            distribution_id=distribution.pk,
            why=why,
            since=since,
            holding=tuple(h for h, _ in holding),
            details=tuple(text for _, text in holding),
        )
    return stalls


def stalled_now(*, now: datetime | None = None) -> list[tuple[Distribution, Stall]]:
    """Every stalled distribution of every brand (the metrics endpoint): three queries."""
    now = now or timezone.now()
    running = (
        Distribution.objects.filter(
            status=Distribution.Status.IN_PROGRESS,
            trigger="",
            started_at__lte=now - NO_HANDOVER_FOR,
        )
        .select_related("project__brand")
        .order_by("pk")
    )
    running = list(running)
    stalls = distribution_stalls(distributions=running, now=now)
    return [(d, stalls[d.pk]) for d in running if d.pk in stalls]
