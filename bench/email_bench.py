#!/usr/bin/env python
"""Email fan-out benchmark on PostgreSQL, Redis and real Celery workers, against a real SMTP
server (aiosmtpd, ``tests/smtp_server.py``) in its own process.

    bash bench/run email                        # defaults below
    .venv/bin/python bench/email_bench.py --recipients 100000 --concurrency 2

Measures, in one run:
1. baseline: the bare work, smtplib sends of a two-part (text + HTML) message over one reused
   connection per process, with as many processes as the workers have (``--concurrency``);
2. end to end: a distribution of ``--recipients`` emails from due to finished (every row
   Sent), through real workers: materialisation, leases, personal links, rendering, Django's
   message building, VERP, opt-out checks, one reused SMTP connection per task, bookkeeping.
   Prints messages/s and the ratio to the baseline; the server's count proves no duplicates.
Needs PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import celery_worker, recreate_database  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=20_000, help="messages in the bare loop")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="pool size per worker")
    parser.add_argument("--db", default="relay_bench_email")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/3")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bare_loop(args: tuple[int, int, int]) -> None:
    """One process: ``count`` sends over one reused connection (what a worker process does)."""
    port, start, count = args
    html = "<p>Hello Name{n}</p><p><a href='https://relay.example/s/{n}'>Survey</a></p>"
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.ehlo()
        for n in range(start, start + count):
            message = EmailMessage()
            message["From"] = "surveys@relay.example"
            message["To"] = f"base{n}@example.com"
            message["Subject"] = f"Hi Name{n}"
            message.set_content(f"Hello Name{n}\nhttps://relay.example/s/{n}\n")
            message.add_alternative(html.format(n=n), subtype="html")
            smtp.sendmail(
                f"bounces+{n}@bounce.example", [f"base{n}@example.com"], message.as_bytes()
            )


def bare_rate(port: int, count: int, processes: int) -> float:
    per = count // processes
    started = time.perf_counter()
    with multiprocessing.Pool(processes) as pool:
        pool.map(bare_loop, [(port, i * per, per) for i in range(processes)])
    return per * processes / (time.perf_counter() - started)


def main() -> None:
    args = parse_args()
    database_url = recreate_database(args.db)
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    port = free_port()
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis,
        DEBUG="true",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(port),
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)

    server = subprocess.Popen(
        [sys.executable, "-m", "tests.smtp_server", str(port)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout.readline().strip() == "ready"
    workers: list[subprocess.Popen] = []
    try:
        print(
            f"== baseline: bare smtplib loop, {args.baseline:,} messages, "
            f"{args.concurrency} process(es), one reused connection each"
        )
        baseline = bare_rate(port, args.baseline, args.concurrency)
        print(f"   {baseline:,.0f} messages/s")

        from brands.services import brand_create
        from distributions.models import Distribution, EmailAccount, Message
        from distributions.services import distribution_create
        from projects.services import project_change_stage, project_create

        brand = brand_create(name="Bench", slug="bench")
        EmailAccount.objects.create(
            brand=brand, messages_per_second=1_000_000, weekly_limit=10_000_000
        )
        project = project_create(brand=brand, name="Bench")
        project_change_stage(project=project, stage="active")
        populate(connection, brand.pk, project.pk, args.recipients)

        # Pumps: one per send slot of the workers (docs/operations.md).
        pumps = str(args.workers * args.concurrency)
        env = {**os.environ, "LOG_LEVEL": "WARNING", "RELAY_SEND_PUMPS": pumps}
        for i in range(args.workers):
            workers.append(
                celery_worker(
                    env=env,
                    concurrency=args.concurrency,
                    name=f"emailbench{i}@%h",
                    queues="control,send",
                )
            )
        from config.celery import ping

        ping.delay().get(timeout=60)
        print(
            f"== end to end: {args.recipients:,} emails, {args.workers} worker(s) x "
            f"{args.concurrency} processes"
        )
        started = time.perf_counter()
        distribution = distribution_create(
            project=project,
            channel="email",
            subject="Your opinion, ${first_name}",
            message='<p>Hello ${first_name}</p><p><a href="${link}">Survey</a></p>'
            '<p><a href="${opt_out_link}">Unsubscribe</a></p>',
            from_name="Bench",
        )
        marks = {}
        while True:
            status = Distribution.objects.filter(pk=distribution.pk).values_list(
                "status", flat=True
            )[0]
            if status != "in_progress" and status != "scheduled":
                break
            sent = Message.objects.filter(distribution=distribution, status="sent").count()
            for mark in (0.25, 0.5, 0.75):
                if sent >= mark * args.recipients and mark not in marks:
                    marks[mark] = time.perf_counter() - started
            if time.perf_counter() - started > 3600:
                raise SystemExit("timed out")
            time.sleep(1.0)
        elapsed = time.perf_counter() - started
        distribution.refresh_from_db()
        sent = Message.objects.filter(distribution=distribution, status="sent").count()
        rate = sent / elapsed
        print(
            f"   {distribution.status}: {sent:,} sent in {elapsed:.1f} s = {rate:,.0f} messages/s "
            f"({100 * rate / baseline:.0f} % of the bare smtplib rate)"
        )
        print(
            "   progress: " + ", ".join(f"{int(m * 100)}% at {s:.1f} s" for m, s in marks.items())
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        server.stdin.close()
        received = int(server.stdout.readline().strip() or 0)
        server.wait(timeout=30)
    print(
        f"   received by the server: {received:,} (baseline {args.baseline:,} + "
        f"distribution {args.recipients:,}; duplicates: {received - args.baseline - sent})"
    )


def populate(connection, brand_id: int, project_id: int, count: int) -> None:
    """Set-based: people and participants with generate_series (the benchmark's setup)."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO participants_person (brand_id, person_id, first_name, last_name, email,
                username, phone, metadata, created_at, updated_at)
            SELECT %s, 'B' || g, 'Name' || g, 'Bench', 'b' || g || '@example.com', '', '',
                '{}'::jsonb, now(), now()
            FROM generate_series(1, %s) g
            """,
            [brand_id, count],
        )
        cursor.execute(
            """
            INSERT INTO participants_participant (project_id, person_id, role, metadata,
                created_at, updated_at)
            SELECT %s, id, '', '{}'::jsonb, now(), now() FROM participants_person
            WHERE brand_id = %s
            """,
            [project_id, brand_id],
        )
        cursor.execute("ANALYZE")
    print(f"   (setup: {count:,} participants in {time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
