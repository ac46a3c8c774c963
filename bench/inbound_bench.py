#!/usr/bin/env python
"""Two-way SMS inbound benchmark: signed Twilio replies against gunicorn and PostgreSQL, applied
by a real Celery worker, with the framework's ceiling (the bare no-op view) in the same run.

    bash bench/run inbound
    .venv/bin/python bench/inbound_bench.py --seconds 20 --concurrency 16 --workers 4

What it does, on this machine (PostgreSQL at 127.0.0.1:5432, user postgres; Redis at
127.0.0.1:6379, the broker and cache, as in production):
1. recreates its own database (``relay_bench_inbound``), migrates, makes two brands (tenants
   sharing the webhook, the worker and the database), each with its Twilio account (its own
   number and auth token), an active project with a three-question survey, and a two-way
   invite already handed over to half of ``--numbers`` participants (number n is brand
   n % 2's: their replies interleave), then ``ANALYZE``;
2. starts gunicorn (``config.wsgi``, sync workers, DEBUG off, ``RELAY_BENCH_ENDPOINTS`` on)
   and a Celery worker (prefork, ``--apply-concurrency`` processes) on the ``control`` queue:
   it applies the stored replies (``conversations.replies``); nothing consumes the ``send``
   queue, where the next questions are handed to the engine (dropped at the end);
3. a load client in this process (aiohttp, ``--concurrency`` tasks) measures, the two phases
   taking turns for ``--rounds`` windows (see ``bench/links_bench.py``): the bare no-op view
   (``/api/v1/bench/noop/``) and the inbound webhook (``POST /webhooks/twilio/inbound/``)
   with Twilio's signature: each reply is checked and stored, and the webhook answers; the
   worker then matches it to its number's session (the first one opens it), validates it as
   an answer, saves it in the response and hands the next question to the send task. Numbers
   answer the three questions in turn, a block of 2,000 numbers at a time, so that two
   replies of one number are rarely in flight together (a phone answers after reading the
   question). After each webhook window the bench waits until every reply is applied before
   the next no-op window (the worker's backlog never runs in the ceiling's window).
4. then the flood (``--flood``, after the rounds, measured apart from them): the applier
   is stopped, brand A's replies pile up (a keyword on TV during a deploy), and while a new
   applier drains them brand B's replies come at 20 a second: how long B's wait while A's
   backlog drains (fairness between tenants: without it, B's wait behind all of A's).
Reported: the webhook's requests/s and HTTP p99, and end to end: replies of the window fully
applied per second (the window's replies over the time from its start until the last of them
was applied, at least the window) and the p99 of applied_at - received_at, overall and for
each brand (with its share of the replies applied: half each when neither holds the other
back); and each phase's
CPU per call, side by side: gunicorn, PostgreSQL (every backend of the database, the worker's
too), the worker, and this load client (all on the same cores); the flood's drain time and
B's apply latency meanwhile.
Targets (issue 20): replies (end to end) at least 40 % of the ceiling, p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import celery_worker, recreate_database  # noqa: E402
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


@dataclass(frozen=True)
class Tenant:
    """A bench brand: its Twilio account (made up) and the number its replies are texted to."""

    name: str
    slug: str
    sender: str
    account_sid: str
    auth_token: str


# Two brands share the webhook, the worker and the database (number n is brand n % 2's).
TENANTS = (
    Tenant("Bench A", "bench-a", "+15005550006", "AC" + "b3" * 16, "bench-auth-token-" + "0" * 15),
    Tenant("Bench B", "bench-b", "+15005550007", "AC" + "c4" * 16, "bench-auth-token-" + "1" * 15),
)
BLOCK = 2_000  # numbers answering together; a number's next reply comes a block later
ANSWERS = ("1", "7", "Friendly staff")
VALIDATORS = [RequestValidator(tenant.auth_token) for tenant in TENANTS]
TRICKLE_PER_SECOND = 20  # brand B's replies while brand A's flood drains


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
    parser.add_argument(
        "--apply-concurrency", type=int, default=1, help="worker processes applying replies"
    )
    parser.add_argument(
        "--flood",
        type=int,
        default=10_000,
        help="brand A's replies stored while the applier is down, then drained (0: none)",
    )
    return parser.parse_args()


def number(n: int) -> str:
    return f"+1415{n:07d}"


def prepare(env: dict[str, str], numbers: int) -> None:
    """Migrate, then for each brand its Twilio account, the survey and a sent two-way invite
    (number n is brand n % 2's)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(
        {
            k: env[k]
            for k in (
                "DATABASE_URL",
                "DJANGO_SETTINGS_MODULE",
                "RELAY_ENCRYPTION_KEYS",
                "REDIS_URL",
            )
        }
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

    CountryRate.objects.create(country="US", rate="0.0079", inbound_rate="0.0079")
    now = timezone.now()
    for index, tenant in enumerate(TENANTS):
        brand = Brand.objects.create(name=tenant.name, slug=tenant.slug)
        ProviderAccount.objects.create(
            brand=brand,
            provider="twilio",
            account_sid=tenant.account_sid,
            auth_token=tenant.auth_token,
            default_sender=tenant.sender,
        )
        project = Project.objects.create(brand=brand, name="Store visits", stage="active")
        question_create(
            project=project, kind="single", text="Which store?", choices=["Lyon", "Nice"]
        )
        question_create(project=project, kind="rating", text="How likely to recommend us?")
        question_create(project=project, kind="text", text="What should we improve?")
        people = Person.objects.bulk_create(
            [
                Person(brand=brand, first_name="Ana", phone=number(n))
                for n in range(index, numbers, len(TENANTS))
            ],
            batch_size=5000,
        )
        participants = Participant.objects.bulk_create(
            [Participant(project=project, person=person) for person in people], batch_size=5000
        )
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
        history(tenant, brand, project, participants, earlier=now - timedelta(days=30))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def history(tenant: Tenant, brand, project, participants, *, earlier) -> None:
    """An earlier two-way survey of the same numbers, answered and closed: each number's
    reply, session, complete response and turns. A live database has such a history; an
    empty table would have PostgreSQL plan the foreign-key checks of a worker's connection
    on it (sequential scans, kept for the connection's life: this machine runs without
    autovacuum, which would analyse the tables as they grow and have them planned again)."""
    from conversations.models import Session, Turn
    from distributions.models import Distribution
    from optouts.models import InboundMessage
    from projects.models import Response

    old = Distribution.objects.create(
        project=project, message="Hi", mode="two_way", send_at=earlier, status="sent"
    )
    replies = InboundMessage.objects.bulk_create(
        [
            InboundMessage(
                brand=brand,
                provider_sid=f"SMH{brand.pk}{n:030d}",
                account_sid=tenant.account_sid,
                from_number=p.person.phone,
                to_number=tenant.sender,
                body="Friendly staff",
                received_at=earlier,
                kind="OTHER",
                action="stored",
                apply_state="applied",
                applied_at=earlier,
                person=p.person,
            )
            for n, p in enumerate(participants)
        ],
        batch_size=5000,
    )
    responses = Response.objects.bulk_create(
        [
            Response(
                project=project,
                participant=p,
                distribution=old,
                channel="sms_two_way",
                answers={"1": "Lyon"},
                started_at=earlier,
                completed_at=earlier,
            )
            for p in participants
        ],
        batch_size=5000,
    )
    sessions = Session.objects.bulk_create(
        [
            Session(
                brand=brand,
                project=project,
                distribution=old,
                participant=p,
                address=p.person.phone,
                sender=tenant.sender,
                status="completed",
                position=3,
                response=response,
                opened_at=earlier,
                asked_at=earlier,
                expires_at=earlier,
                closed_at=earlier,
            )
            for p, response in zip(participants, responses, strict=True)
        ],
        batch_size=5000,
    )
    Turn.objects.bulk_create(
        [
            Turn(
                brand=brand,
                session=session,
                direction=direction,
                kind=kind,
                address=session.address,
                sender=tenant.sender,
                body=reply.body if direction == "in" else "Thank you!",
                status="received" if direction == "in" else "sent",
                inbound=reply if direction == "in" else None,
                created_at=earlier,
            )
            for session, reply in zip(sessions, replies, strict=True)
            for direction, kind in (("in", "answer"), ("out", "thank_you"))
        ],
        batch_size=5000,
    )


def replier(k: int) -> tuple[int, int]:
    """Who sends reply ``k`` (number ``who``, brand ``who % 2``'s), and which answer."""
    block, offset = divmod(k, BLOCK * len(ANSWERS))
    return block * BLOCK + offset % BLOCK, offset // BLOCK


def signed_reply(url: str, k: int) -> tuple[dict, dict]:
    """Reply ``k``: its form and Twilio's signature header (with its brand's auth token)."""

    who, answer = replier(k)
    brand = who % len(TENANTS)
    tenant = TENANTS[brand]
    form = {
        "From": number(who),
        "To": tenant.sender,
        "Body": ANSWERS[answer],
        "MessageSid": f"SM{k:032d}",
        "AccountSid": tenant.account_sid,
        "NumMedia": "0",
    }
    signature = VALIDATORS[brand].compute_signature(url, form)
    return form, {"X-Twilio-Signature": signature}


def signed_replies(url: str, first: int, count: int) -> list[tuple[bytes, dict]]:
    """Replies ``first`` .. ``first + count - 1`` as Twilio posts them (the url-encoded body
    and its headers), made before a window: signing is Twilio's work, not the server's, and
    the load client shares this machine's cores with the server."""
    return [posted_reply(url, k) for k in range(first, first + count)]


def posted_reply(url: str, k: int) -> tuple[bytes, dict]:
    """Reply ``k`` as Twilio posts it: the url-encoded body and its headers."""
    form, headers = signed_reply(url, k)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return urlencode(form).encode(), headers


class Applied:
    """The replies' application, read from the bench database (plain psycopg2: the load
    client runs in an event loop)."""

    def __init__(self, database: str):
        import psycopg2

        self.db = psycopg2.connect(f"postgres://postgres@127.0.0.1:5432/{database}")
        self.db.autocommit = True

    def pending(self, tenant: int | None = None) -> int:
        """Replies pending: all, or ``TENANTS[tenant]``'s brand's."""
        slug = None if tenant is None else TENANTS[tenant].slug
        with self.db.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM optouts_inboundmessage WHERE apply_state = 'pending' "
                "AND (%(slug)s IS NULL "
                "OR brand_id = (SELECT id FROM brands_brand WHERE slug = %(slug)s))",
                {"slug": slug},
            )
            return cursor.fetchone()[0]

    async def drained(self, timeout: float = 600.0) -> float:
        """Wait until no reply is pending; returns when (time.time())."""
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(self.pending):
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not apply the replies in time")
            await asyncio.sleep(0.05)
        return time.time()

    def window(self, start: float, end: float) -> tuple[int, float, dict[str, list[float]]]:
        """The replies received in [start, end) (epoch seconds): how many, when the last of
        them was applied (epoch), and each one's apply latency (seconds), by brand."""
        with self.db.cursor() as cursor:
            cursor.execute(
                "SELECT b.slug, extract(epoch FROM i.received_at), "
                "extract(epoch FROM i.applied_at) FROM optouts_inboundmessage i "
                "JOIN brands_brand b ON b.id = i.brand_id "
                "WHERE i.received_at >= to_timestamp(%s) "
                "AND i.received_at < to_timestamp(%s) AND i.apply_state = 'applied'",
                [start, end],
            )
            rows = [(slug, float(r), float(a)) for slug, r, a in cursor.fetchall()]
        last = max((a for _, _, a in rows), default=end)
        waits: dict[str, list[float]] = {tenant.slug: [] for tenant in TENANTS}
        for slug, received, applied in rows:
            waits[slug].append(applied - received)
        return len(rows), last, waits


def start_worker(env: dict[str, str], concurrency: int) -> subprocess.Popen:
    """A Celery worker on the control queue (the applier's); prefork, like production."""
    return celery_worker(
        env={**env, "LOG_LEVEL": "WARNING"},
        concurrency=concurrency,
        name="bench-apply@%h",
        queues="control",
    )


def worker_pids(pid: int) -> list[int]:
    """The worker's process and its pool's."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid] + ([int(p) for p in children.read_text().split()] if children.exists() else [])


def worker_cpu(pid: int) -> float:
    """CPU seconds of the worker and its pool processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in worker_pids(pid):
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class CpuShares(ServerCpu):
    """The server's CPU (gunicorn, every PostgreSQL backend of the database: the worker's
    too), and beside it the applier's (the Celery worker and its pool) and this load
    client's, which share the machine's cores with it: what each call costs, side by side."""

    def __init__(self, master_pid: int, database: str, worker_pid: int):
        super().__init__(master_pid, database)
        self.worker_pid = worker_pid

    def pids(self) -> list[tuple[str, int]]:
        return [
            *super().pids(),
            *(("worker", pid) for pid in worker_pids(self.worker_pid)),
            ("client", os.getpid()),
        ]


async def run(args, port: int, cpu: ServerCpu, applied: Applied) -> dict:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    inbound_url = f"{base}/webhooks/twilio/inbound/"
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        sent = 0  # replies sent so far: each number answers its questions in turn
        replies: Iterator[tuple[bytes, dict]] = iter(())

        def sign_next(count: int) -> None:
            """The next ``count`` replies, signed before the window that sends them (those
            it leaves are signed again for the next one)."""
            nonlocal replies
            replies = iter(signed_replies(inbound_url, sent, count))

        async def one_reply():
            nonlocal sent
            body, headers = next(replies)
            sent += 1
            async with session.post(inbound_url, data=body, headers=headers) as answer:
                await answer.read()
                return answer.status < 300

        sign_next(args.workers * 8)

        # Warm-up: each worker's first requests import and compile the views.
        for _ in range(2):
            await asyncio.gather(
                *(session.get(f"{base}/api/v1/bench/noop/") for _ in range(args.workers * 4)),
                *(one_reply() for _ in range(args.workers * 4)),
            )
        await applied.drained()
        windows = {"noop": [], "inbound": []}
        ends: list[tuple[float, float, float]] = []  # each webhook window: start, end, drained
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
            # More replies than the window can send: twice the no-op view's rate (the ceiling;
            # twice in case the machine was slower during the no-op window than now).
            window = args.seconds / args.rounds + warmup + 1
            sign_next(int(2 * windows["noop"][-1].rate * window) + 1000)
            began = time.time() + warmup
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
            ends.append((began, began + args.seconds / args.rounds, await applied.drained()))
    figures = {name: summary(phase) for name, phase in windows.items()}
    figures["sent"] = sent
    figures["shares"] = {
        name: {
            side: 1000
            * sum(w.shares.get(side, 0.0) for w in phase)
            / max(1, sum(len(w.latencies) for w in phase))
            for side in ("app", "db", "worker", "client")
        }
        for name, phase in windows.items()
    }
    latencies: list[float] = []
    by_brand: dict[str, list[float]] = {tenant.slug: [] for tenant in TENANTS}
    rates = []
    for start, end, _drained in ends:
        count, last, waits = applied.window(start, end)
        rates.append(count / (max(end, last) - start))
        for slug, brand_waits in waits.items():
            latencies += brand_waits
            by_brand[slug] += brand_waits
    figures["brands"] = {
        slug: (len(waits) / max(1, len(latencies)), *percentiles(waits))
        for slug, waits in by_brand.items()
    }
    figures["applied"] = (sum(rates) / len(rates), *percentiles(latencies))
    figures["applied_rounds"] = [
        rate / ceiling.rate for rate, ceiling in zip(rates, windows["noop"], strict=True)
    ]
    figures["rounds"] = [
        one.rate / ceiling.rate
        for one, ceiling in zip(windows["inbound"], windows["noop"], strict=True)
    ]
    return figures


async def flood(args, port: int, applied: Applied, first: int, restart) -> dict:
    """Brand A's replies pile up while the applier is down (``--flood`` of them: a keyword
    on TV during a deploy); then, while a new applier drains them, brand B's replies arrive
    at ``TRICKLE_PER_SECOND``: how long B's waited (their apply latency) while A's backlog
    drained, and how long that took. Replies after the rounds' ones, from the same numbers'
    sequence from reply ``first`` (A's and B's interleave in it: A's are posted first, B's
    kept for the trickle). ``restart()`` starts the applier; the trickle begins with its
    first batch.
    """
    import aiohttp

    inbound_url = f"http://127.0.0.1:{port}/webhooks/twilio/inbound/"
    backlog: list[tuple[bytes, dict]] = []
    trickle: list[tuple[bytes, dict]] = []
    k = first
    while len(backlog) < args.flood:
        brand = replier(k)[0] % len(TENANTS)
        (trickle if brand else backlog).append(posted_reply(inbound_url, k))
        k += 1
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(reply) -> None:
            body, headers = reply
            async with session.post(inbound_url, data=body, headers=headers) as answer:
                await answer.read()
                if answer.status >= 300:
                    raise SystemExit(f"the webhook answered {answer.status}")

        queue = iter(backlog)

        async def poster() -> None:
            for reply in queue:
                await post(reply)

        await asyncio.gather(*(poster() for _ in range(args.concurrency)))
        stored = await asyncio.to_thread(applied.pending, 0)
        restart()
        while await asyncio.to_thread(applied.pending, 0) == stored:
            await asyncio.sleep(0.01)  # the new applier's first batch
        # B's trickle while A's backlog drains (and a second after).
        began = time.time()
        drained_at = None
        posts: list[asyncio.Task] = []
        while True:
            now = time.time()
            if drained_at is None and not await asyncio.to_thread(applied.pending, 0):
                drained_at = now
            if drained_at is not None and now > drained_at + 1:
                break
            due = int((now - began) * TRICKLE_PER_SECOND) + 1
            while len(posts) < min(due, len(trickle)):
                posts.append(asyncio.create_task(post(trickle[len(posts)])))
            await asyncio.sleep(0.01)
        await asyncio.gather(*posts)
        await applied.drained()
    waits = applied.window(began, time.time())[2]
    return {
        "stored": stored,
        "drain_seconds": drained_at - began,
        "b_replies": len(waits[TENANTS[1].slug]),
        "b": percentiles(waits[TENANTS[1].slug]),
    }


def percentiles(waits: list[float]) -> tuple[float, float]:
    """p50 and p99 of apply latencies (seconds), in milliseconds."""
    if not waits:
        return 0.0, 0.0
    ordered = sorted(waits)
    return 1000 * statistics.median(ordered), 1000 * ordered[int(len(ordered) * 0.99)]


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
    print(f"webhook / noop: {ratio:.0%} (rounds: {rounds})")
    rate, p50, p99 = figures["applied"]
    print(
        f"applied  {rate:8.1f}/s  apply latency p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  "
        f"worker CPU {figures['worker_ms']:5.2f} ms/reply"
    )
    for name, shares in figures["shares"].items():
        print(
            f"{name:8s} CPU per call: gunicorn {shares['app']:5.2f} ms, PostgreSQL "
            f"{shares['db']:5.2f}, worker {shares['worker']:5.2f}, load client "
            f"{shares['client']:5.2f}: {sum(shares.values()):5.2f} ms in all"
        )
    for slug, (share, p50, p99) in figures["brands"].items():
        print(
            f"  {slug}: {share:.0%} of the replies applied, apply latency p50 {p50:6.1f} ms  "
            f"p99 {p99:6.1f} ms"
        )
    if "flood" in figures:
        flood_ = figures["flood"]
        print(
            f"flood: brand A's {flood_['stored']} replies stored while the applier was down "
            f"drained in {flood_['drain_seconds']:.1f} s; meanwhile brand B's "
            f"{flood_['b_replies']} replies ({TRICKLE_PER_SECOND}/s): apply latency p50 "
            f"{flood_['b'][0]:6.1f} ms  p99 {flood_['b'][1]:6.1f} ms"
        )
    ratio = rate / figures["noop"][0]
    rounds = ", ".join(f"{r:.0%}" for r in figures["applied_rounds"])
    print(
        f"applied / noop: {ratio:.0%} (rounds: {rounds}); target >= 40 %, "
        f"p99 < 100 ms (HTTP {figures['inbound'][2]:.1f} ms)"
    )


def counts() -> dict:
    """What the run wrote (the history ``prepare`` made, a month earlier, left out)."""
    from django.utils import timezone

    from conversations.models import Session, Turn
    from credits.models import CreditEntry
    from optouts.models import InboundMessage
    from projects.models import Response

    since = timezone.now() - timedelta(days=1)
    replies = InboundMessage.objects.filter(received_at__gte=since)
    return {
        "sessions": Session.objects.filter(opened_at__gte=since).count(),
        "turns_out": Turn.objects.filter(direction="out", created_at__gte=since).count(),
        "responses_complete": Response.objects.filter(
            status="complete", started_at__gte=since
        ).count(),
        "replies_applied": replies.filter(apply_state="applied").count(),
        "replies_not_applied": replies.exclude(apply_state="applied").count(),
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
    worker = start_worker(env, args.apply_concurrency)
    try:
        from config.celery import ping

        ping.delay().get(timeout=60)
        cpu = CpuShares(server.pid, args.db, worker.pid)
        applied = Applied(args.db)
        spent = worker_cpu(worker.pid)
        figures = asyncio.run(run(args, port, cpu, applied))
        spent = worker_cpu(worker.pid) - spent
        written = counts()  # the rounds' (the flood's replies come after)
        if args.flood:
            stop(worker)

            def restart() -> None:
                nonlocal worker
                worker = start_worker(env, args.apply_concurrency)

            figures["flood"] = asyncio.run(flood(args, port, applied, figures["sent"], restart))
    finally:
        stop(server)
        stop(worker)
    figures["worker_ms"] = 1000 * spent / max(1, written["replies_applied"])
    report(figures, args)
    print("written:", written)
    import redis

    # No worker sends in this benchmark: drop the sends queued (the "send" queue's list).
    print("queued sends dropped:", redis.Redis.from_url(args.redis).delete("send"))


if __name__ == "__main__":
    main()
