#!/usr/bin/env python
"""Two-way SMS inbound benchmark: signed Twilio replies against gunicorn and PostgreSQL, with
the framework's ceiling (the bare no-op view) measured in the same run.

    bash bench/run inbound
    .venv/bin/python bench/inbound_bench.py --seconds 20 --concurrency 16 --workers 4

What it does, on this machine (PostgreSQL at 127.0.0.1:5432, user postgres; Redis at
127.0.0.1:6379, the broker the next question's send is queued on, as in production):
1. recreates its own database (``relay_bench_inbound``), migrates, makes a brand with a Twilio
   account (its number and auth token), an active project with a three-question survey, and a
   two-way invite already handed over to ``--numbers`` participants, then ``ANALYZE``;
2. starts gunicorn (``config.wsgi``, sync workers, DEBUG off, ``RELAY_BENCH_ENDPOINTS`` on);
3. a load client in this process (aiohttp, ``--concurrency`` tasks) measures, the two phases
   taking turns for ``--rounds`` windows (see ``bench/links_bench.py``): the bare no-op view
   (``/api/v1/bench/noop/``) and the inbound webhook (``POST /webhooks/twilio/inbound/``)
   with Twilio's signature: each reply is checked, stored, matched to its number's session
   (the first one opens it), validated as an answer, saved in the response, debited, and the
   next question is recorded and its send queued on the broker. Numbers answer the three
   questions in turn, a block of 2,000 numbers at a time, so that two replies of one number
   are never in flight together (a phone answers after reading the question).
Targets (issue 20): replies at least 40 % of the ceiling, p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402
from bench.links_bench import (  # noqa: E402
    SETTLE,
    ServerCpu,
    free_port,
    load,
    server_environment,
    start_gunicorn,
    stop,
    summary,
    uptime,
)

SENDER = "+15005550006"
ACCOUNT_SID = "AC" + "b3" * 16
AUTH_TOKEN = "bench-auth-token-" + "0" * 15  # noqa: S105 - a made-up token of the bench brand
BLOCK = 2_000  # numbers answering together; a number's next reply comes a block later
ANSWERS = ("1", "7", "Friendly staff")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--numbers", type=int, default=40_000)
    parser.add_argument("--db", default="relay_bench_inbound")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/6")
    return parser.parse_args()


def number(n: int) -> str:
    return f"+1415{n:07d}"


def prepare(env: dict[str, str], numbers: int) -> None:
    """Migrate, then the brand, its Twilio account, the survey and a sent two-way invite."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(
        {k: env[k] for k in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "RELAY_ENCRYPTION_KEYS")}
    )
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from brands.models import Brand
    from credits.models import CountryRate
    from distributions.models import Distribution, Message, ProviderAccount
    from participants.models import Participant, Person
    from projects.models import Project
    from surveys.services import question_create

    brand = Brand.objects.create(name="Bench", slug="bench")
    ProviderAccount.objects.create(
        brand=brand,
        provider="twilio",
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        default_sender=SENDER,
    )
    CountryRate.objects.create(country="US", rate="0.0079", inbound_rate="0.0079")
    project = Project.objects.create(brand=brand, name="Store visits", stage="active")
    question_create(project=project, kind="single", text="Which store?", choices=["Lyon", "Nice"])
    question_create(project=project, kind="rating", text="How likely to recommend us?")
    question_create(project=project, kind="text", text="What should we improve?")
    people = Person.objects.bulk_create(
        [Person(brand=brand, first_name="Ana", phone=number(n)) for n in range(numbers)],
        batch_size=5000,
    )
    participants = Participant.objects.bulk_create(
        [Participant(project=project, person=person) for person in people], batch_size=5000
    )
    now = timezone.now()
    invite = Distribution.objects.create(
        project=project,
        message="Hi ${first_name}",
        mode="two_way",
        send_at=now,
        status="sent",
    )
    Message.objects.bulk_create(
        [
            Message(
                distribution=invite,
                participant=participant,
                person=participant.person,
                address=participant.person.phone,
                status="sent",
                status_changed_at=now,
                sent_at=now,
                body="Hi Ana\n\n(1/3) Which store?",
                segments=1,
            )
            for participant in participants
        ],
        batch_size=5000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def signed_reply(url: str, k: int) -> tuple[dict, dict]:
    """Reply ``k``: its form and Twilio's signature header."""
    from twilio.request_validator import RequestValidator

    block, offset = divmod(k, BLOCK * len(ANSWERS))
    who = block * BLOCK + offset % BLOCK
    form = {
        "From": number(who),
        "To": SENDER,
        "Body": ANSWERS[offset // BLOCK],
        "MessageSid": f"SM{k:032d}",
        "AccountSid": ACCOUNT_SID,
        "NumMedia": "0",
    }
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
    return form, {"X-Twilio-Signature": signature}


async def run(args, port: int, cpu: ServerCpu) -> dict:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    inbound_url = f"{base}/webhooks/twilio/inbound/"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        counter = itertools.count()

        async def one_reply():
            k = next(counter)
            form, headers = signed_reply(inbound_url, k)
            async with session.post(inbound_url, data=form, headers=headers) as answer:
                await answer.read()
                return answer.status < 300

        # Warm-up: each worker's first requests import and compile the views.
        for _ in range(2):
            await asyncio.gather(
                *(session.get(f"{base}/api/v1/bench/noop/") for _ in range(args.workers * 4)),
                *(one_reply() for _ in range(args.workers * 4)),
            )
        windows = {"noop": [], "inbound": []}
        for round_ in range(args.rounds):
            warmup = args.warmup if round_ == 0 else SETTLE
            windows["noop"].append(
                await load(
                    session,
                    method="GET",
                    url=f"{base}/api/v1/bench/noop/",
                    body_for=None,
                    numbers=iter(()),
                    headers={},
                    concurrency=args.concurrency,
                    seconds=args.seconds / args.rounds,
                    warmup=warmup,
                    cpu=cpu,
                )
            )
            windows["inbound"].append(
                await load(
                    None,
                    send=one_reply,
                    concurrency=args.concurrency,
                    seconds=args.seconds / args.rounds,
                    warmup=warmup,
                    cpu=cpu,
                )
            )
    figures = {name: summary(phase) for name, phase in windows.items()}
    figures["rounds"] = [
        one.rate / ceiling.rate
        for one, ceiling in zip(windows["inbound"], windows["noop"], strict=True)
    ]
    return figures


def report(figures: dict, args) -> None:
    print(f"load: {uptime()}")
    for name in ("noop", "inbound"):
        rate, p50, p99, errors, cpu_ms, db_ms = figures[name]
        print(
            f"{name:8s} {rate:8.1f}/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  errors {errors}  "
            f"server CPU {cpu_ms:5.2f} ms/call (PostgreSQL {db_ms:5.2f})"
        )
    ratio = figures["inbound"][0] / figures["noop"][0]
    rounds = ", ".join(f"{r:.0%}" for r in figures["rounds"])
    print(f"inbound / noop: {ratio:.0%} (rounds: {rounds}); target >= 40 %, p99 < 100 ms")


def counts() -> dict:
    from conversations.models import Session, Turn
    from credits.models import CreditEntry
    from projects.models import Response

    return {
        "sessions": Session.objects.count(),
        "turns_out": Turn.objects.filter(direction="out").count(),
        "responses_complete": Response.objects.filter(status="complete").count(),
        "inbound_debits": CreditEntry.objects.filter(
            idempotency_key__startswith="sms-inbound:"
        ).count(),
    }


def main() -> None:
    args = parse_args()
    database_url = recreate_database(args.db)
    env = server_environment(database_url, args.redis)
    prepare(env, args.numbers)
    port = free_port()
    env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"  # what Twilio signs
    server = start_gunicorn(env, port, args.workers)
    try:
        cpu = ServerCpu(server.pid, args.db)
        figures = asyncio.run(run(args, port, cpu))
    finally:
        stop(server)
    report(figures, args)
    print("written:", counts())
    import redis

    # No worker runs in this benchmark: drop the sends it queued (the "send" queue's list).
    print("queued sends dropped:", redis.Redis.from_url(args.redis).delete("send"))


if __name__ == "__main__":
    main()
