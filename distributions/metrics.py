"""What the send engine tells operators: Prometheus metrics (served by ``config/metrics.py``,
described with alert rules in docs/operations.md).

- Counters are counted by the workers into Redis hashes (one ``HINCRBYFLOAT`` per label set,
  pipelined: one round trip per batch), so that whichever web process is scraped reports
  every worker's counts. Without Redis (one machine, the development default) counters are
  not kept; the gauges still are.
- Gauges are read when scraped: rows, lanes, senders and pumps from the database, queue
  depths from the broker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from celery import current_app

from distributions.models import Distribution, Message, Sender, SendLane, SendPump
from distributions.providers.base import Outcome
from distributions.stalls import stalled_now

logger = logging.getLogger(__name__)

PREFIX = "relay:metrics:"
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "relay_messages_handed_over_total": (
        "Messages the engine handed to a provider, by brand, provider and what the provider "
        "answered (accepted, failed, bounced, blocked, refused, deferred, unknown).",
        ("brand", "provider", "outcome"),
    ),
    "relay_provider_errors_total": (
        "Provider refusals and errors, by provider and error code.",
        ("provider", "code"),
    ),
    "relay_pump_seconds_total": (
        "Seconds pumps held a worker slot, by what they did: sending (a batch from its pick to "
        "its last record) or picking (finding the next batch, deciding to sleep). A pump never "
        "holds a slot while it waits for a throttle.",
        ("phase",),
    ),
    "relay_pump_batches_total": ("Batches pumps took from the fair queue.", ()),
}
QUEUES = ("send", "control")
F_BRAND = "distribution__project__brand__slug"

_client = None


def _redis():
    global _client
    if _client is None and settings.REDIS_URL:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


def outcome_counts(*, brand: str, provider: str, results) -> list[tuple[str, dict, float]]:
    """The counter increments of one window's provider results."""

    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for result in results:
        if result.outcome == Outcome.REJECTED:
            outcome = "blocked" if result.blocked else "bounced" if result.bounced else "failed"
        else:
            outcome = {
                Outcome.ACCEPTED: "accepted",
                Outcome.RETRY: "deferred",
                Outcome.UNKNOWN: "unknown",
                Outcome.FATAL: "refused",
            }[result.outcome]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if result.outcome != Outcome.ACCEPTED:
            code = result.error_code or "none"
            errors[code] = errors.get(code, 0) + 1
    return [
        *(
            (
                "relay_messages_handed_over_total",
                {"brand": brand, "provider": provider, "outcome": outcome},
                n,
            )
            for outcome, n in outcomes.items()
        ),
        *(
            ("relay_provider_errors_total", {"provider": provider, "code": code}, n)
            for code, n in errors.items()
        ),
    ]


def count(items: Iterable[tuple[str, dict, float]]) -> None:
    """Add to counters: (name, labels, amount) each, in one round trip. Never raises: a
    metric lost is better than a send that fails for it."""
    client = _redis()
    if client is None:
        return
    try:
        pipeline = client.pipeline(transaction=False)
        queued = False
        for name, labels, amount in items:
            if amount:
                field = json.dumps(labels, sort_keys=True, separators=(",", ":"))
                pipeline.hincrbyfloat(PREFIX + name, field, amount)
                queued = True
        if queued:
            pipeline.execute()
    except Exception:  # noqa: BLE001 - see the docstring
        logger.warning("could not count metrics", exc_info=True)


def counter_values(name: str) -> Iterator[tuple[dict, float]]:
    """Every label set of a counter with its value."""
    client = _redis()
    if client is None:
        return
    for field, value in client.hgetall(PREFIX + name).items():
        yield json.loads(field), float(value)


def reset_counters() -> None:
    """Forget every counter (tests and benchmarks)."""
    client = _redis()
    if client is not None:
        client.delete(*(PREFIX + name for name in COUNTERS))


# --- gauges, read when scraped -------------------------------------------------------------
def brand_rows(now=None) -> list[dict]:
    """Per brand with a distribution In progress: its due and deferred Pending rows, the age
    of its oldest due row and when its next deferred row comes due."""
    now = now or timezone.now()
    due, deferred = Q(due_at__lte=now), Q(due_at__gt=now)
    rows = (
        Message.objects.filter(status=Message.Status.PENDING, distribution__status="in_progress")
        .values(brand=F(F_BRAND))
        .annotate(
            due=Count("pk", filter=due),
            deferred=Count("pk", filter=deferred),
            oldest_due=Min("due_at", filter=due),
            next_deferred=Min("due_at", filter=deferred),
        )
        .order_by()
    )
    return list(rows)


def engine_gauges(now=None) -> dict:
    """Lanes, senders, pumps and distributions, as counts (see ``collect``)."""
    now = now or timezone.now()
    lanes = SendLane.objects.aggregate(
        ready=Count("pk", filter=Q(ready_at__lte=now, sender__ready_at__lte=now)),
        waiting_sender=Count("pk", filter=Q(ready_at__lte=now, sender__ready_at__gt=now)),
        deferred=Count("pk", filter=Q(ready_at__gt=now)),
        idle=Count("pk", filter=Q(ready_at__isnull=True)),
    )
    pumps = dict(SendPump.objects.values_list("state").annotate(n=Count("pk")).order_by())
    in_progress = dict(
        Distribution.objects.filter(status="in_progress")
        .values_list("project__brand__slug")
        .annotate(n=Count("pk"))
        .order_by()
    )
    paused = Sender.objects.filter(ready_at__gt=now).exclude(paused_reason="").count()
    return {"lanes": lanes, "pumps": pumps, "in_progress": in_progress, "paused": paused}


def queue_depths() -> dict[str, int]:
    """Messages waiting in each Celery queue (any kombu transport: Redis, AMQP, files)."""
    app = current_app  # config.celery's app (config/__init__.py makes it the current one)
    depths: dict[str, int] = {}
    try:
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            for queue in QUEUES:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except Exception:  # noqa: BLE001 - a queue nobody declared yet holds nothing
                    depths[queue] = 0
    except Exception:  # noqa: BLE001 - the broker is down: say nothing rather than fail
        logger.warning("could not read queue depths", exc_info=True)
    return depths


def collect(now=None) -> Iterator:
    """Every metric as a prometheus_client metric family."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    now = now or timezone.now()
    for name, (help_text, labels) in COUNTERS.items():
        family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)
        for label_values, value in counter_values(name):
            family.add_metric([str(label_values.get(label, "")) for label in labels], value)
        yield family

    depth = GaugeMetricFamily(
        "relay_queue_messages", "Messages waiting in a Celery queue.", labels=["queue"]
    )
    for queue, messages in queue_depths().items():
        depth.add_metric([queue], messages)
    yield depth

    pending = GaugeMetricFamily(
        "relay_rows_pending",
        "Pending rows of distributions In progress, by brand: due now or deferred to later.",
        labels=["brand", "state"],
    )
    oldest = GaugeMetricFamily(
        "relay_oldest_due_row_age_seconds",
        "Age of each brand's oldest due Pending row (how long its next message has waited).",
        labels=["brand"],
    )
    next_due = GaugeMetricFamily(
        "relay_next_deferred_row_due_timestamp_seconds",
        "When each brand's next deferred row comes due (Unix time).",
        labels=["brand"],
    )
    for row in brand_rows(now):
        pending.add_metric([row["brand"], "due"], row["due"])
        pending.add_metric([row["brand"], "deferred"], row["deferred"])
        if row["oldest_due"] is not None:
            oldest.add_metric([row["brand"]], (now - row["oldest_due"]).total_seconds())
        if row["next_deferred"] is not None:
            next_due.add_metric([row["brand"]], row["next_deferred"].timestamp())
    yield pending
    yield oldest
    yield next_due

    gauges = engine_gauges(now)
    lanes = GaugeMetricFamily(
        "relay_lanes",
        "Distributions in the fair queue: ready, waiting for their sender's tokens, deferred "
        "(next row due later), idle.",
        labels=["state"],
    )
    for state, n in gauges["lanes"].items():
        lanes.add_metric([state], n)
    yield lanes
    pumps = GaugeMetricFamily("relay_pumps", "Pump slots by state.", labels=["state"])
    for state in SendPump.State.values:
        pumps.add_metric([state], gauges["pumps"].get(state, 0))
    yield pumps
    running = GaugeMetricFamily(
        "relay_distributions_in_progress", "Distributions In progress, by brand.", labels=["brand"]
    )
    for brand, n in gauges["in_progress"].items():
        running.add_metric([brand], n)
    yield running
    yield from stall_families(now)
    yield GaugeMetricFamily(
        "relay_senders_paused",
        "Senders the provider asked to wait (HTTP 429, Retry-After).",
        value=gauges["paused"],
    )


def stall_families(now) -> Iterator:
    """Stalled distributions (``distributions.stalls``): how many per brand and first cause,
    and each one's seconds since its last hand-over (few by nature: a label per distribution
    is affordable, and it names what to open)."""
    from prometheus_client.core import GaugeMetricFamily

    stalled = GaugeMetricFamily(
        "relay_distributions_stalled",
        "Distributions In progress with nothing handed over for an hour or In progress for "
        "more than 7 days, by brand and what holds them first (insufficient_credits, "
        "provider_errors, sender_paused, sender_throttled, waiting_rows, in_flight, "
        "not_queued, no_worker, nothing_open).",
        labels=["brand", "holding"],
    )
    since = GaugeMetricFamily(
        "relay_distribution_stalled_seconds",
        "Seconds since a stalled distribution last handed a message over (since it started "
        "when it never did), with what holds it first.",
        labels=["brand", "distribution", "holding"],
    )
    counts: dict[tuple[str, str], int] = {}
    for distribution, stall in stalled_now(now=now):
        brand = distribution.project.brand.slug
        key = (brand, str(stall.primary))
        counts[key] = counts.get(key, 0) + 1
        since.add_metric(
            [brand, str(distribution.pk), str(stall.primary)],
            (now - stall.since).total_seconds(),
        )
    for (brand, holding), n in sorted(counts.items()):
        stalled.add_metric([brand, holding], n)
    yield stalled
    yield since
