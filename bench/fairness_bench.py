#!/usr/bin/env python
"""Fairness benchmark: tenants sharing one send worker.

    bash bench/run fairness                      # every scenario below
    .venv/bin/python bench/fairness_bench.py --scenarios c --slow-brands 50

PostgreSQL, Redis and real Celery workers as the issue set them up (a send worker with 2
slots and RELAY_SEND_PUMPS=2, a control worker; ``--slots 3`` as `make run` starts them), the
real twilio SDK against the Twilio-compatible fake in its own process (callbacks off).
Hand-over times are the fake's own acceptance times (``created_ts``).

(a) brand A sends 100,000 recipients on a 5 messages/s sender; brand B, on its own sender,
    starts a 10-recipient distribution every 10 s for 2 minutes: p50/p99 of B's time to hand
    over all of its messages (from the create call, and from its start); A's rate, and whether
    A's sender ever went above it.
(b) the same with A on an unlimited sender: B's p50/p99, and A's rate beside B against A alone
    in the same run (target: at least 90 %).
(c) 200 brands, each with its own 1 message/s sender (a US long code) and 300 recipients, all
    at once: each sender's rate against its limit (target: 95 % or more) and whether any went
    above it.
For each, the pumps' slot time: sending, picking, waiting for a throttle (a batch's record
waiting for a window picked ahead while work was ready: at most the pick-ahead at the end of a
slice), or idle (nothing to pick; its batches in flight wait for their moments and answers). The baseline, as in the SMS benchmark: the bare SDK's async client with 64 requests
in flight, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import celery_worker, recreate_database  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="a,b,c")
    parser.add_argument("--big", type=int, default=100_000, help="A's recipients")
    parser.add_argument("--small", type=int, default=10, help="B's recipients per round")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between B's rounds")
    parser.add_argument("--duration", type=float, default=120.0, help="B's schedule, seconds")
    parser.add_argument("--slow-rate", type=int, default=5, help="A's sender in (a), msg/s")
    parser.add_argument("--slow-brands", type=int, default=200)
    parser.add_argument("--slow-recipients", type=int, default=300)
    parser.add_argument("--baseline", type=int, default=20_000)
    parser.add_argument("--slots", type=int, default=2, help="send worker slots and pumps")
    parser.add_argument("--db", default="relay_bench_fair")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument(
        "--from-db",
        help="start from a copy of this database (one a run of --scenarios a,b left), not "
        "an empty one: (c) on the tables (a) and (b) filled, without their 15 minutes",
    )
    return parser.parse_args()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def over_the_bucket(times: list[float], rate: float, burst: float) -> tuple[int, float]:
    """The most sends above the token bucket's bound (rate * t + burst over any interval of
    t seconds) and where: 0 means the sender never went above its rate."""
    times = sorted(times)
    worst, at, span = 0.0, 0.0, (0, 0)
    # Over every interval from one send to a later one: the sends within it, against its bound.
    for i, first in enumerate(times):
        for k in range(i, len(times)):
            excess = (k - i + 1) - (rate * (times[k] - first) + burst)
            if excess > worst:
                worst, at, span = excess, first, (i, k)
    if worst > 0 and os.environ.get("RELAY_BENCH_DEBUG"):
        i, k = span
        gaps = [
            round(times[j + 1] - times[j], 3)
            for j in range(max(0, i - 3), min(k + 3, len(times) - 1))
        ]
        print(f"   worst interval: sends {i}..{k} over {times[k] - times[i]:.3f} s; gaps {gaps}")
    return int(worst + 0.999999), at


@dataclass
class Run:
    fake: object
    workers: list
    connection: object
    accepted_before: int = 0


def start_workers(env: dict, slots: int) -> list[subprocess.Popen]:
    """A send worker with ``slots`` slots (the issue's setup: 2; `make run`: 3), a control
    worker."""
    workers = []
    for queue, concurrency in (("send", slots), ("control", 2)):
        workers.append(
            celery_worker(env=env, concurrency=concurrency, name=f"bench-{queue}@%h", queues=queue)
        )
    return workers


def populate(connection, brand_id: int, project_id: int, count: int, prefix: str, area: str):
    """``count`` people and participants; phones +1 ``area`` then digits (10 in all)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO participants_person (brand_id, person_id, first_name, last_name, email,
                username, phone, metadata, created_at, updated_at)
            SELECT %s, %s || g, 'Name' || g, 'Bench', '', '',
                '+1' || %s || lpad(g::text, %s, '0'), '{}'::jsonb, now(), now()
            FROM generate_series(1, %s) g
            """,
            [brand_id, prefix, area, 10 - len(area), count],
        )
        cursor.execute(
            """
            INSERT INTO participants_participant (project_id, person_id, role, metadata,
                created_at, updated_at)
            SELECT %s, id, '', '{}'::jsonb, now(), now() FROM participants_person
            WHERE brand_id = %s AND person_id LIKE %s
            """,
            [project_id, brand_id, prefix + "%"],
        )


def make_brand(fake, connection, name: str, rate: int, recipients: int, sender: str, area: str):
    from brands.services import brand_create
    from distributions.models import ProviderAccount
    from projects.services import project_change_stage, project_create

    brand = brand_create(name=name, slug=name.lower())
    sid, token = fake.add_account(friendly_name=name)
    ProviderAccount.objects.create(
        brand=brand,
        provider="twilio",
        account_sid=sid,
        auth_token=token,
        default_sender=sender,
        messages_per_second=rate,
    )
    project = project_create(brand=brand, name=f"{name} project")
    project_change_stage(project=project, stage="active")
    populate(connection, brand.pk, project.pk, recipients, name + "-", area)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE participants_person, participants_participant")
    return brand, project, sid


def pump_seconds() -> dict[str, float]:
    from distributions import metrics

    return {
        labels["phase"]: value
        for labels, value in metrics.counter_values("relay_pump_seconds_total")
    }


def report_pumps(before: dict, elapsed: float, slots: int) -> None:
    after = pump_seconds()
    sending = after.get("sending", 0) - before.get("sending", 0)
    picking = after.get("picking", 0) - before.get("picking", 0)
    ahead = after.get("ahead", 0) - before.get("ahead", 0)
    idle = after.get("idle", 0) - before.get("idle", 0)
    busy = sending + picking + ahead
    print(
        f"   pump slot time: busy {busy:.1f} s of {elapsed * slots:.1f} s of {slots} slots "
        f"({100 * busy / max(1e-9, elapsed * slots):.0f} %): sending {sending:.1f} s, "
        f"picking {picking:.1f} s; waiting for a throttle: {ahead:.1f} s "
        f"({100 * ahead / max(1e-9, elapsed * slots):.1f} % of slot time: a record waiting for "
        f"a window picked ahead while work was ready); idle {idle:.1f} s (nothing to pick: "
        f"batches in flight wait for their moments and answers, as a pump with nothing "
        f"ready would in the broker)"
    )


def wait_started(distribution, deadline: float = 600) -> None:
    from distributions.models import Distribution

    started = time.monotonic()
    while Distribution.objects.get(pk=distribution.pk).started_at is None:
        if time.monotonic() - started > deadline:
            raise SystemExit(f"{distribution} never started")
        time.sleep(0.05)


def b_rounds(fake, project_b, sid_b: str, args, while_running=None) -> list[dict]:
    """B starts a distribution every ``every`` seconds for ``duration`` seconds; each round's
    time to hand over all of its messages, from its create call and from its start."""
    from distributions.models import Distribution
    from distributions.services import distribution_create

    rounds = []
    began = time.monotonic()
    number = 0
    while time.monotonic() - began < args.duration:
        due = began + number * args.every
        time.sleep(max(0.0, due - time.monotonic()))
        overlapping = while_running() if while_running else True
        called = time.time()
        distribution = distribution_create(
            project=project_b, message=f"Round {number} " + "${first_name}"
        )
        rounds.append(
            {"number": number, "called": called, "pk": distribution.pk, "overlap": overlapping}
        )
        number += 1
    # Collect: each round's messages at the fake (its body names the round).
    deadline = time.monotonic() + 300
    while True:
        messages = fake.messages_where(account_sid=sid_b)
        by_round: dict[int, list[float]] = {}
        for message in messages:
            head = message["body"].split(" ", 2)
            if head[0] == "Round":
                by_round.setdefault(int(head[1]), []).append(message["created_ts"])
        if all(len(by_round.get(r["number"], [])) >= args.small for r in rounds):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"B's rounds did not all go out: {by_round}")
        time.sleep(0.5)
    for item in rounds:
        started = Distribution.objects.get(pk=item["pk"]).started_at.timestamp()
        last = max(by_round[item["number"]])
        item["from_call"] = last - item["called"]
        item["from_start"] = last - started
    return rounds


def report_b(rounds: list[dict], label: str) -> dict:
    overlapping = [r for r in rounds if r["overlap"]]
    figures = {}
    for name, chosen in (("while A sent", overlapping), ("all rounds", rounds)):
        if not chosen:
            continue
        calls = [r["from_call"] for r in chosen]
        starts = [r["from_start"] for r in chosen]
        figures[name] = (percentile(calls, 0.5), percentile(calls, 0.99))
        print(
            f"   B ({label}, {name}: {len(chosen)} rounds): all {len(chosen[0:1]) and 10} "
            f"messages handed over p50 {percentile(calls, 0.5):.2f} s / p99 "
            f"{percentile(calls, 0.99):.2f} s from the create call; p50 "
            f"{percentile(starts, 0.5):.2f} s / p99 {percentile(starts, 0.99):.2f} s from its "
            f"start (target p99 < 5 s)"
        )
    return figures


def a_times(fake, sid: str, since: float = 0.0) -> list[float]:
    return sorted(
        m["created_ts"] for m in fake.messages_where(account_sid=sid) if m["created_ts"] >= since
    )


def scenario_a(run: Run, args, slots: int) -> None:
    from distributions.services import distribution_cancel, distribution_create

    print(
        f"== (a) A: {args.big:,} recipients on a {args.slow_rate} messages/s sender; B: "
        f"{args.small} recipients every {args.every:g} s for {args.duration:g} s"
    )
    fake = run.fake
    _, project_a, sid_a = make_brand(
        fake, run.connection, "SlowA", args.slow_rate, args.big, "+15005550100", "415"
    )
    _, project_b, sid_b = make_brand(
        fake, run.connection, "SmallB", 100, args.small, "+15005550200", "416"
    )
    before = pump_seconds()
    began = time.monotonic()
    big = distribution_create(project=project_a, message="Hello ${first_name}")
    wait_started(big)
    rounds = b_rounds(fake, project_b, sid_b, args)
    elapsed = time.monotonic() - began
    distribution_cancel(distribution=big)
    times = a_times(fake, sid_a)
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    excess, _ = over_the_bucket(times, args.slow_rate, args.slow_rate)
    if os.environ.get("RELAY_BENCH_DEBUG"):
        from distributions.models import Message

        sids = {m["sid"]: m["created_ts"] for m in fake.messages_where(account_sid=sid_a)}
        rows = Message.objects.filter(distribution=big).exclude(provider_id="")
        for row in sorted(rows, key=lambda r: sids.get(r.provider_id, 0))[:12]:
            print(
                f"   row {row.pk} lease {row.lease[:6]} leased {row.leased_at:%S.%f} "
                f"attempts {row.attempts} fake {sids.get(row.provider_id, 0) % 60:.3f}"
            )
    report_b(rounds, "A throttled")
    print(
        f"   A: {len(times):,} messages handed over at {rate:.2f} messages/s "
        f"({100 * rate / args.slow_rate:.0f} % of its {args.slow_rate}/s); above its rate: "
        f"{'never' if excess <= 0 else f'{excess} messages over the bound'}"
    )
    report_pumps(before, elapsed, slots)


def scenario_b(run: Run, args, slots: int) -> None:
    from distributions.models import Distribution
    from distributions.services import distribution_create

    print(
        f"== (b) A: {args.big:,} recipients on an unlimited sender, alone, then beside B "
        f"({args.small} recipients every {args.every:g} s for {args.duration:g} s)"
    )
    fake = run.fake
    _, project_a, sid_a = make_brand(
        fake, run.connection, "FastA", 0, args.big, "+15005550300", "417"
    )
    _, project_b, sid_b = make_brand(
        fake, run.connection, "FastB", 100, args.small, "+15005550400", "418"
    )

    def send_a(label: str) -> Distribution:
        distribution = distribution_create(project=project_a, message=f"{label} " + "${first_name}")
        wait_started(distribution)
        return distribution

    def rate_of(label: str) -> float:
        times = sorted(
            m["created_ts"]
            for m in fake.messages_where(account_sid=sid_a)
            if m["body"].startswith(label + " ")
        )
        return (len(times) - 1) / (times[-1] - times[0])

    def finished(distribution) -> bool:
        return Distribution.objects.get(pk=distribution.pk).status != "in_progress"

    alone = send_a("Alone")
    while not finished(alone):
        time.sleep(0.25)
    rate_alone = rate_of("Alone")

    before = pump_seconds()
    began = time.monotonic()
    beside = [send_a("Beside0")]
    # A sends again whenever it finishes, so that it is always sending while B runs.

    def a_running() -> bool:
        if finished(beside[-1]):
            beside.append(send_a(f"Beside{len(beside)}"))
        return True

    rounds_done = b_rounds(fake, project_b, sid_b, args, while_running=a_running)
    while not finished(beside[-1]):
        time.sleep(0.25)
    elapsed = time.monotonic() - began
    rates = [rate_of(f"Beside{i}") for i in range(len(beside))]
    report_b(rounds_done, "A unlimited")
    rate_beside = statistics.mean(rates)
    print(
        f"   A alone: {rate_alone:,.0f} messages/s; beside B: {rate_beside:,.0f} messages/s "
        f"(mean of {len(rates)} runs of {args.big:,}) = {100 * rate_beside / rate_alone:.0f} % "
        f"of alone (target at least 90 %)"
    )
    report_pumps(before, elapsed, slots)


def scenario_c(run: Run, args, slots: int) -> None:
    from distributions.services import distribution_create

    print(
        f"== (c) {args.slow_brands} brands, each with its own 1 message/s sender and "
        f"{args.slow_recipients} recipients, all at once"
    )
    fake = run.fake
    projects = []
    for i in range(args.slow_brands):
        _, project, sid = make_brand(
            fake,
            run.connection,
            f"Long{i:03d}",
            1,
            args.slow_recipients,
            f"+1500556{i:04d}",
            f"5{i:03d}",
        )
        projects.append((project, sid))
    before = pump_seconds()
    began, began_at = time.monotonic(), time.time()
    for project, _sid in projects:
        distribution_create(project=project, message="Hello ${first_name}")
    total = args.slow_brands * args.slow_recipients
    while fake.counters()["accepted"] < run.accepted_before + total:
        if time.monotonic() - began > 3 * args.slow_recipients + 600:
            raise SystemExit("(c) did not finish")
        time.sleep(1)
    elapsed = time.monotonic() - began
    shares, worst, first_waits = [], 0, []
    for _project, sid in projects:
        times = a_times(fake, sid)
        shares.append((len(times) - 1) / (times[-1] - times[0]))
        excess, _ = over_the_bucket(times, 1, 1)
        worst = max(worst, excess)
        first_waits.append(times[0] - began_at)
    gaps = []
    for _project, sid in projects:
        times = a_times(fake, sid)
        gaps += [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    shares.sort()
    print(
        f"   gaps between a sender's messages: p10 {percentile(gaps, 0.1):.3f} s, p50 "
        f"{percentile(gaps, 0.5):.3f} s, p90 {percentile(gaps, 0.9):.3f} s, p99 "
        f"{percentile(gaps, 0.99):.3f} s, max {max(gaps):.3f} s"
    )
    print(
        f"   {total:,} messages in {elapsed:.0f} s; each sender's rate: min "
        f"{100 * shares[0]:.1f} %, p50 {100 * percentile(shares, 0.5):.1f} %, max "
        f"{100 * shares[-1]:.1f} % of 1/s (target at least 95 %); senders at 95 % or more: "
        f"{sum(1 for s in shares if s >= 0.95)} of {len(shares)}; above the rate: "
        f"{'never' if worst <= 0 else f'{worst} messages over the bound'}"
    )
    print(
        f"   first message of each brand after the start: p50 "
        f"{percentile(first_waits, 0.5):.2f} s, max {max(first_waits):.2f} s"
    )
    report_pumps(before, elapsed, slots)


async def bare_sdk_rate(fake, count: int, in_flight: int = 64) -> float:
    from tests.fake_twilio import twilio_client_for

    client = twilio_client_for(fake, async_=True, timeout=30)
    semaphore = asyncio.Semaphore(in_flight)

    async def one(i: int):
        async with semaphore:
            await client.messages.create_async(
                to=f"+1415{3000000 + i:07d}", from_="+15005550006", body=f"Baseline {i}"
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    await client.http_client.close()
    return count / elapsed


def main() -> None:
    args = parse_args()
    print("load average at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    database_url = recreate_database(args.db, args.from_db)
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    slots = args.slots
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis,
        DEBUG="false",
        SECRET_KEY="bench-" + os.urandom(16).hex(),
        RELAY_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
        RELAY_SEND_PUMPS=str(slots),
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from tests.fake_twilio import RemoteFakeTwilio

    fake = RemoteFakeTwilio.spawn("--no-callbacks")
    os.environ["TWILIO_API_BASE_URL"] = fake.base_url
    settings.TWILIO_API_BASE_URL = fake.base_url
    workers = []
    try:
        print(f"== baseline: bare async SDK loop, {args.baseline:,} messages, 64 in flight")
        baseline = asyncio.run(bare_sdk_rate(fake, args.baseline))
        print(f"   {baseline:,.0f} messages/s")
        fake.reset()
        workers = start_workers({**os.environ}, slots)
        from config.celery import ping

        ping.delay().get(timeout=120)
        run = Run(fake=fake, workers=workers, connection=connection)
        for name in args.scenarios.split(","):
            run.accepted_before = fake.counters()["accepted"]
            {"a": scenario_a, "b": scenario_b, "c": scenario_c}[name.strip()](run, args, slots)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        fake.stop()


if __name__ == "__main__":
    main()
