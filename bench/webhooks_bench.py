#!/usr/bin/env python
"""Webhook delivery benchmark on PostgreSQL, Redis and real Celery workers.

    bash bench/run webhooks                     # defaults below
    .venv/bin/python bench/webhooks_bench.py --events 10000 --concurrency 4

Measures, in one run, against a local receiver (aiohttp, its own process, answers 200 at once):
1. baseline: the bare work, the same signed bodies POSTed by as many processes as the workers
   have (each a urllib3 pool, one request at a time, like a worker process);
2. end to end: N events raised in one batch (bulk insert, queued after commit), delivered by
   real workers through the whole path (claim, order check, signature, POST with timeout,
   attempt log, state): events/s and the ratio to the baseline;
3. the hot path when nobody listens: raising a 100-row status batch for a brand without an
   endpoint (one query), in microseconds.
Needs PostgreSQL (127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import celery_worker, recreate_database  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--baseline", type=int, default=5_000, help="bodies in the bare loop")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument("--db", default="relay_bench_webhooks")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/1")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the receiver's mode
    return parser.parse_args()


# --- the receiver (its own process) ----------------------------------------------------------
def serve(port: int) -> None:
    from aiohttp import web

    state = {"count": 0, "ids": set(), "duplicates": 0}

    async def hook(request):
        await request.read()
        event_id = request.headers.get("Relay-Event-Id", "")
        state["count"] += 1
        if event_id in state["ids"]:
            state["duplicates"] += 1
        state["ids"].add(event_id)
        return web.Response(text='{"ok":true}', content_type="application/json")

    async def stats(request):
        return web.json_response(
            {"count": state["count"], "unique": len(state["ids"]), "dup": state["duplicates"]}
        )

    async def reset(request):
        state.update(count=0, ids=set(), duplicates=0)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def receiver_stats(base: str) -> dict:
    with urllib.request.urlopen(base + "/stats", timeout=5) as answer:
        return json.loads(answer.read())


def receiver_reset(base: str) -> None:
    urllib.request.urlopen(urllib.request.Request(base + "/reset", method="POST"), timeout=5)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- baseline ----------------------------------------------------------------------------------
def _post_all(args) -> int:
    url, bodies, secret = args
    import urllib3

    from webhooks.signing import signature_header

    pool = urllib3.PoolManager(maxsize=1, retries=False)
    for event_id, body in bodies:
        pool.request(
            "POST",
            url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Relay-Signature": signature_header(secret, body),
                "Relay-Event-Id": event_id,
            },
            timeout=urllib3.Timeout(connect=3, read=5),
        )
    return len(bodies)


def bare_rate(url: str, count: int, processes: int, secret: str) -> float:
    import uuid

    bodies = [
        (
            str(uuid.uuid4()),
            json.dumps(
                {"id": str(i), "type": "recipient.status_changed", "data": sample_payload(i)}
            ).encode(),
        )
        for i in range(count)
    ]
    shares = [(url, bodies[i::processes], secret) for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        started = time.perf_counter()
        sent = sum(pool.map(_post_all, shares))
        elapsed = time.perf_counter() - started
    return sent / elapsed


def sample_payload(i: int) -> dict:
    return {
        "message_id": i,
        "distribution_id": 1,
        "project_id": 1,
        "channel": "sms",
        "kind": "invite",
        "participant_id": i,
        "person_id": f"P-{i}",
        "address": f"+1415{2000000 + i}",
        "status": "delivered",
        "changed_at": "2026-11-25T10:00:00+00:00",
        "error_code": "",
        "reason": "",
    }


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], cwd=ROOT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    database_url = recreate_database(args.db)
    import redis

    redis.Redis.from_url(args.redis).flushdb()
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=args.redis,
        DEBUG="true",
        LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
        RELAY_WEBHOOKS_ALLOW_HOSTS="127.0.0.1",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    worker = None
    try:
        for _ in range(100):
            try:
                receiver_stats(base)
                break
            except OSError:
                time.sleep(0.1)
        from brands.services import brand_create
        from distributions.events import recipient_statuses_raised
        from distributions.models import Distribution
        from projects.services import project_create
        from webhooks.events import events_raise
        from webhooks.models import WebhookDelivery
        from webhooks.services import endpoint_create

        brand = brand_create(name="Bench", slug="bench")
        issued = endpoint_create(
            brand=brand, url=base + "/hook", events=["recipient.status_changed"]
        )

        print(
            f"== baseline: {args.baseline:,} signed bodies POSTed by {args.concurrency} "
            "processes, one request at a time each (urllib3 pool)"
        )
        baseline = bare_rate(base + "/hook", args.baseline, args.concurrency, issued.secret)
        print(f"   {baseline:,.0f} events/s")
        receiver_reset(base)

        worker = celery_worker(env={**os.environ}, concurrency=args.concurrency, name="benchwh@%h")
        from config.celery import ping

        ping.delay().get(timeout=60)

        print(
            f"== end to end: {args.events:,} events raised in one batch, delivered by 1 worker "
            f"x {args.concurrency} processes"
        )
        started = time.perf_counter()
        with transaction.atomic():
            events_raise(
                brand_id=brand.pk,
                event_type="recipient.status_changed",
                build=lambda: ((f"message:{i}", sample_payload(i)) for i in range(args.events)),
            )
            raised = time.perf_counter() - started
        queued = time.perf_counter() - started
        while True:
            got = receiver_stats(base)
            if got["unique"] >= args.events:
                break
            if time.perf_counter() - started > 1800:
                raise SystemExit(f"timed out: {got}")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        rate = args.events / elapsed
        while WebhookDelivery.objects.filter(state__in=("pending", "sending")).exists():
            time.sleep(0.1)
        settled = time.perf_counter() - started
        got = receiver_stats(base)
        print(
            f"   raised (bulk insert) in {raised * 1000:.0f} ms, queued after commit in "
            f"{(queued - raised) * 1000:.0f} ms"
        )
        print(
            f"   received: {elapsed:.1f} s = {rate:,.0f} events/s "
            f"({100 * rate / baseline:.0f} % of the bare rate); all rows Delivered after "
            f"{settled:.1f} s"
        )
        sending = args.events / (elapsed - queued)
        print(
            f"   delivery alone (from queued to received): {sending:,.0f} events/s "
            f"({100 * sending / baseline:.0f} % of the bare rate)"
        )
        print(
            f"   requests {got['count']:,}, distinct events {got['unique']:,}, "
            f"duplicates {got['dup']}"
        )

        print("== hot path: a 100-row status batch, brand without an endpoint")
        other = brand_create(name="Quiet", slug="quiet")
        project = project_create(brand=other, name="Quiet")
        distribution = Distribution.objects.create(
            project=project, message="Hi", send_at=timezone.now()
        )
        changes = [(i, "sent") for i in range(100)]
        rounds = 2000
        started = time.perf_counter()
        for _ in range(rounds):
            recipient_statuses_raised(
                distribution_id=distribution.pk, changes=changes, at=timezone.now()
            )
        per = (time.perf_counter() - started) / rounds
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for _ in range(rounds):
                cursor.execute("SELECT 1")
                cursor.fetchone()
        floor = (time.perf_counter() - started) / rounds
        print(
            f"   {per * 1e6:,.0f} µs per batch of 100 rows (one query); "
            f"a bare SELECT 1 round trip: {floor * 1e6:,.0f} µs"
        )
        connection.close()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
