#!/usr/bin/env python
"""SMS fan-out benchmark on PostgreSQL, Redis and real Celery workers.

    bash bench/run sms                       # defaults below
    .venv/bin/python bench/sms_bench.py --recipients 100000 --materialise 1000000

Measures, in one run, against the Twilio-compatible fake in its own process (callbacks off):
1. baseline: the bare work, the twilio SDK's async client with 64 requests in flight;
2. end to end: a 100,000-recipient distribution from due to every message accepted by the
   fake through the SDK, with real workers (messages/s and the ratio to the baseline) and the
   workers' resident memory at 25/50/75/100 % (flat is the target);
3. materialisation of 1,000,000 recipient rows (one INSERT ... SELECT).
Needs PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import celery_worker, recreate_database  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=20_000, help="messages in the bare loop")
    parser.add_argument("--materialise", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=3, help="pool size per worker (make run: 3)"
    )
    parser.add_argument("--db", default="relay_bench_sms")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    return parser.parse_args()


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (the Celery pool)."""
    total = 0
    for one in family(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def family(pid: int) -> list[int]:
    children = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    )
    return [pid, *(int(p) for p in children.stdout.split())]


def cpu_seconds(pids: list[int], children: bool = True) -> float:
    """User + system CPU time of these processes (and their live children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        for one in family(pid) if children else [pid]:
            try:
                fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


async def bare_sdk_rate(fake, count: int, in_flight: int = 64) -> float:
    """The fastest honest way to do the bare work: the SDK's async client, many in flight."""
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
    database_url = recreate_database(args.db)
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    # DEBUG off, as in production: with it on, Django keeps every query of a worker process.
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis,
        DEBUG="false",
        SECRET_KEY="bench-" + os.urandom(16).hex(),
        RELAY_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)

    from tests.fake_twilio import RemoteFakeTwilio

    fake = RemoteFakeTwilio.spawn("--no-callbacks")
    os.environ["TWILIO_API_BASE_URL"] = fake.base_url
    from django.conf import settings

    settings.TWILIO_API_BASE_URL = fake.base_url
    workers: list[subprocess.Popen] = []
    try:
        print(f"== baseline: bare async SDK loop, {args.baseline} messages, 64 in flight")
        fake_cpu, own_cpu = cpu_seconds([fake.process.pid]), time.process_time()
        baseline = asyncio.run(bare_sdk_rate(fake, args.baseline))
        fake_cpu = cpu_seconds([fake.process.pid]) - fake_cpu
        own_cpu = time.process_time() - own_cpu
        print(
            f"   {baseline:,.0f} messages/s; CPU per message: fake "
            f"{1000 * fake_cpu / args.baseline:.2f} ms (busy "
            f"{100 * fake_cpu * baseline / args.baseline:.0f} % of one core), SDK loop "
            f"{1000 * own_cpu / args.baseline:.2f} ms"
        )
        fake.reset()

        from brands.services import brand_create
        from distributions.models import Distribution, ProviderAccount
        from distributions.services import distribution_create, distribution_materialise
        from projects.services import project_change_stage, project_create

        brand = brand_create(name="Bench", slug="bench")
        ProviderAccount.objects.create(
            brand=brand,
            provider="twilio",
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            default_sender="+15005550006",
            messages_per_second=100_000,
        )
        project = project_create(brand=brand, name="Bench")
        project_change_stage(project=project, stage="active")
        populate(connection, brand.pk, project.pk, args.recipients, prefix="B")

        # Pumps: one per send slot of the workers (docs/operations.md).
        pumps = str(args.workers * args.concurrency)
        env = {**os.environ, "LOG_LEVEL": "WARNING", "RELAY_SEND_PUMPS": pumps}
        for i in range(args.workers):
            workers.append(
                celery_worker(
                    env=env,
                    concurrency=args.concurrency,
                    name=f"bench{i}@%h",
                    queues="control,send",
                )
            )
        from config.celery import ping

        ping.delay().get(timeout=60)

        print(
            f"== end to end: {args.recipients:,} recipients, {args.workers} worker(s) x "
            f"{args.concurrency} processes"
        )
        fake_cpu = cpu_seconds([fake.process.pid])
        worker_cpu = cpu_seconds([w.pid for w in workers])
        started = time.perf_counter()
        distribution = distribution_create(project=project, message="Hi ${first_name}, thanks!")
        marks = {}
        memory = []
        backends: dict[int, float] = {}  # the workers' PostgreSQL backends: last CPU seen
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
                for (pid,) in cursor.fetchall():
                    backends[pid] = max(backends.get(pid, 0.0), cpu_seconds([pid], children=False))
            accepted = fake.counters()["accepted"]  # constant time: stats() walks every message
            done = accepted / args.recipients
            for mark in (0.25, 0.5, 0.75):
                if done >= mark and mark not in marks:
                    marks[mark] = time.perf_counter() - started
                    memory.append((mark, sum(rss_kb(w.pid) for w in workers)))
            if accepted >= args.recipients:
                break
            if time.perf_counter() - started > 1800:
                raise SystemExit("timed out")
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
        fake_cpu = cpu_seconds([fake.process.pid]) - fake_cpu
        worker_cpu = cpu_seconds([w.pid for w in workers]) - worker_cpu
        memory.append((1.0, sum(rss_kb(w.pid) for w in workers)))
        database_cpu = sum(backends.values())
        rate = args.recipients / elapsed
        while Distribution.objects.get(pk=distribution.pk).status == "in_progress":
            time.sleep(0.25)
        finished = time.perf_counter() - started
        distribution.refresh_from_db()
        print(
            f"   accepted by the fake: {elapsed:.1f} s = {rate:,.0f} messages/s "
            f"({100 * rate / baseline:.0f} % of the bare SDK rate)"
        )
        print(
            f"   distribution {distribution.status} after {finished:.1f} s "
            f"(status bookkeeping included)"
        )
        print(
            f"   CPU per message: fake {1000 * fake_cpu / args.recipients:.2f} ms "
            f"(busy {100 * fake_cpu / elapsed:.0f} % of one core), "
            f"workers {1000 * worker_cpu / args.recipients:.2f} ms, "
            f"their PostgreSQL backends {1000 * database_cpu / args.recipients:.2f} ms"
        )
        print(
            "   worker RSS: " + ", ".join(f"{int(m * 100)}% {kb / 1024:.0f} MB" for m, kb in memory)
        )
        by_to = fake.stats()["by_to"]
        duplicates = sum(n - 1 for n in by_to.values() if n > 1)
        print(
            f"   numbers reached: {len(by_to):,}; duplicates at the provider: {duplicates}; "
            f"load average at the end: {os.getloadavg()[0]:.2f}"
        )

        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        workers.clear()

        if args.materialise:
            print(f"== materialisation of {args.materialise:,} recipient rows")
            big = project_create(brand=brand, name="Big")
            project_change_stage(project=big, stage="active")
            populate(connection, brand.pk, big.pk, args.materialise, prefix="M")
            distribution = Distribution.objects.create(
                project=big, message="Hi", send_at=distribution.send_at, status="in_progress"
            )
            started = time.perf_counter()
            counts = distribution_materialise(distribution=distribution)
            seconds = time.perf_counter() - started
            print(
                f"   {counts['total']:,} rows in {seconds:.1f} s "
                f"({counts['total'] / seconds:,.0f} rows/s)"
            )
    finally:
        for worker in workers:
            worker.kill()
        fake.stop()


def populate(connection, brand_id: int, project_id: int, count: int, prefix: str) -> None:
    """Set-based: people and participants with generate_series (the benchmark's setup)."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO participants_person (brand_id, person_id, first_name, last_name, email,
                username, phone, metadata, created_at, updated_at)
            SELECT %s, %s || g, 'Name' || g, 'Bench', '', '', '+1415' || (2000000 + g)::text,
                '{}'::jsonb, now(), now()
            FROM generate_series(1, %s) g
            """,
            [brand_id, prefix, count],
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
        cursor.execute("ANALYZE")
    print(f"   (setup: {count:,} participants in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
