#!/usr/bin/env python
"""Transactional links benchmark: the one call and the bulk call against gunicorn and
PostgreSQL, with the framework's ceiling measured in the same run.

    bash bench/run links
    .venv/bin/python bench/links_bench.py --seconds 20 --concurrency 16 --workers 4

What it does, on this machine (PostgreSQL at 127.0.0.1:5432, user postgres; Redis at
127.0.0.1:6379 for the API throttle, as in production; ``--redis ''`` runs without it):
1. recreates its own database (``relay_bench_links``), migrates, makes a brand, an active
   project, 5,000 directory people (a call's contact is one of them, or new), 20,000 earlier
   transactional links of the project (see ``prepare``) and an API key, then ``ANALYZE``;
2. starts gunicorn (``config.wsgi``, sync workers, DEBUG off, ``RELAY_BENCH_ENDPOINTS`` on);
3. a load client in this process (aiohttp, ``--concurrency`` tasks; gunicorn's sync workers
   close each connection after its answer) measures, each for ``--seconds`` in ``--rounds``
   windows (the four take turns, so a drift of the shared VM's speed slows them alike; each
   round also gives its own ratio), after a warm-up: the bare no-op view
   (``/api/v1/bench/noop/``: the framework's ceiling, nothing but middleware and DRF), the
   no-op with API-key auth and throttle, the one call's own request (body, key) to a view
   that parses it and answers a link-sized body (``/api/v1/bench/post-auth/``: what the
   framework costs for this call), and the one call (``POST /projects/{id}/links/``, a new
   transaction each time); calls per second and p50/p99 latency of each;
4. bulk: ``--bulk-calls`` calls of 1,000 new items, ``--bulk-concurrency`` at a time: links
   per second, and the latency of one call.
Targets (issue 9): the one call at least 40 % of the ceiling with p99 < 100 ms; bulk at least
5,000 links/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402

PEOPLE = 5_000
HISTORY = 20_000  # transactional links the project made before the run
HISTORY_FROM = 500_000_000
SETTLE = 0.5  # seconds of load before a phase's later windows are measured


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="before each phase's first window"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="windows per phase, the phases taking turns"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--bulk-calls", type=int, default=12)
    parser.add_argument("--bulk-concurrency", type=int, default=2)
    parser.add_argument("--db", default="relay_bench_links")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    return parser.parse_args()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(database_url: str, redis_url: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="false",
        SECRET_KEY="bench-" + os.urandom(16).hex(),
        RELAY_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        API_KEY_RATE="100000000/min",
        RELAY_BENCH_ENDPOINTS="true",
        CONN_MAX_AGE="600",
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def prepare(env: dict[str, str]) -> tuple[int, str]:
    """Migrate, then a brand, an active project, directory people and an API key."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")})
    import django

    django.setup()
    from brands.models import Brand
    from brands.roles import Role
    from brands.services import api_key_create
    from participants.models import Person
    from projects.models import Project

    brand = Brand.objects.create(name="Bench", slug="bench")
    project = Project.objects.create(brand=brand, name="Venue scans", stage="active")
    Person.objects.bulk_create(
        [
            Person(brand=brand, person_id=f"C-{i}", email=f"c{i}@example.com", first_name="Ana")
            for i in range(PEOPLE)
        ]
    )
    issued = api_key_create(brand=brand, name="bench", role=Role.PROJECT_ADMIN)
    from django.db import connection

    from transactional.services import LinkRequest, transactional_links_create

    # A project that has been making links for a while: without rows in the links,
    # transactions and participants tables, ANALYZE records them as empty (and autovacuum,
    # off on this machine, never corrects it), so every foreign-key check of the run scans
    # them whole with a plan cached by each connection: a cost production does not pay.
    for batch in range(HISTORY // 1000):
        requests = [
            LinkRequest(
                contact=item["contact"],
                transaction_id=f"old-{batch}-{n}",
                channel_label="push",
                body={**item, "transaction": {"id": f"old-{batch}-{n}"}},
            )
            # numbers no phase of the run uses: the run's new contacts stay new
            for n, item in (
                (n, one_item(n))
                for n in range(HISTORY_FROM + batch * 1000, HISTORY_FROM + batch * 1000 + 1000)
            )
        ]
        transactional_links_create(project=project, requests=requests)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would have, after the bulk insert
    return project.pk, issued.key


def start_gunicorn(env: dict[str, str], port: int, workers: int) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--keep-alive",
        "30",
        "--timeout",
        "120",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("gunicorn did not start")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


class ServerCpu:
    """CPU seconds used by the server side: gunicorn's workers and the bench database's
    PostgreSQL backends (from /proc). Divided by the calls of a phase, it is the cost of one
    call whatever else the shared machine is doing, unlike calls per second."""

    def __init__(self, master_pid: int, database: str):
        import psycopg2

        self.master_pid = master_pid
        self.database = database
        self.admin = psycopg2.connect("postgres://postgres@127.0.0.1:5432/postgres")
        self.admin.autocommit = True

    def pids(self) -> list[tuple[str, int]]:
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        workers = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        with self.admin.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.database])
            backends = [row[0] for row in cursor.fetchall()]
        return [("app", pid) for pid in workers] + [("db", pid) for pid in backends]

    def sample(self) -> dict[tuple[str, int], float]:
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for side, pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[side, pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        return used

    @staticmethod
    def spent(before: dict, after: dict, side: str = "") -> float:
        """CPU seconds between two samples: the server's ("app" and "db"), or one side's
        (those two, or another a subclass samples, such as a worker's)."""
        return sum(
            seconds - before.get(key, 0.0)
            for key, seconds in after.items()
            if key[0] == side or (not side and key[0] in ("app", "db"))
        )

    @staticmethod
    def sides(sample: dict) -> set[str]:
        return {side for side, _pid in sample}


def one_item(number: int) -> dict:
    """A venue scan: half of the contacts are in the directory already, half are new."""
    contact = (
        {"person_id": f"C-{number % PEOPLE}", "email": f"c{number % PEOPLE}@example.com"}
        if number % 2
        else {"email": f"new{number}@example.com", "first_name": "Bo"}
    )
    return {
        "contact": contact,
        "transaction": {
            "id": f"scan-{number}",
            "occurred_at": "2026-11-23T19:02:11Z",
            "data": {"venue": "Arena", "gate": number % 12, "vip": number % 7 == 0},
        },
        "channel": "push",
    }


@dataclass
class Window:
    """What one measured window of a phase gave: latencies, errors, seconds, server CPU."""

    latencies: list[float]
    errors: int
    seconds: float
    cpu_seconds: float
    db_seconds: float
    # CPU seconds of every side sampled ("app", "db", and what a subclass of ServerCpu adds).
    shares: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


def summary(windows: list[Window]) -> tuple[float, float, float, int, float, float]:
    """(calls/s, p50 ms, p99 ms, errors, server CPU ms per call, of which PostgreSQL) over
    ``windows`` together."""
    latencies = sorted(x for w in windows for x in w.latencies)
    calls = max(1, len(latencies))
    rate = len(latencies) / sum(w.seconds for w in windows)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    cpu_ms = sum(w.cpu_seconds for w in windows) * 1000 / calls
    db_ms = sum(w.db_seconds for w in windows) * 1000 / calls
    return rate, p50, p99, sum(w.errors for w in windows), cpu_ms, db_ms


async def load(
    session,
    *,
    method="GET",
    url="",
    body_for=None,
    numbers=None,
    headers=None,
    concurrency,
    seconds,
    warmup,
    cpu,
    send=None,
) -> Window:
    """``concurrency`` tasks send requests back to back (the body of each from the next of
    ``numbers``; or each ``await send()``, which answers whether the call succeeded); the
    calls that start and end within ``seconds`` after ``warmup`` are measured."""
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds

    async def worker():
        nonlocal errors
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            began = time.perf_counter()
            if send is not None:
                ok = await send()
            else:
                body = body_for(next(numbers)) if body_for else None
                async with session.request(method, url, json=body, headers=headers) as answer:
                    await answer.read()
                    ok = answer.status < 300
            ended = time.perf_counter()
            if began >= measure_from and ended <= stop_at:
                latencies.append(ended - began)
                errors += 0 if ok else 1

    samples = []

    async def sampler():
        for moment in (measure_from, stop_at):
            await asyncio.sleep(max(0.0, moment - time.perf_counter()))
            samples.append(cpu.sample())

    await asyncio.gather(sampler(), *(worker() for _ in range(concurrency)))
    return Window(
        latencies,
        errors,
        seconds,
        ServerCpu.spent(*samples),
        ServerCpu.spent(*samples, "db"),
        {side: ServerCpu.spent(*samples, side) for side in ServerCpu.sides(samples[1])},
    )


async def bulk(session, *, url, headers, calls, concurrency, cpu: ServerCpu):
    numbers = iter(range(10_000_000, 10**9, 1000))
    durations: list[float] = []
    made = 0
    failures = 0

    async def worker(count):
        nonlocal made, failures
        for _ in range(count):
            start = next(numbers)
            items = [one_item(n) for n in range(start, start + 1000)]
            payload = json.dumps(items)
            began = time.perf_counter()
            async with session.post(
                url, data=payload, headers={**headers, "Content-Type": "application/json"}
            ) as answer:
                data = await answer.json()
            durations.append(time.perf_counter() - began)
            made += data.get("created", 0)
            failures += data.get("failed", 0) if answer.status == 200 else 1000

    # One call first (a warm-up: each worker's first call loads code), not counted.
    await worker(1)
    made, failures, durations = 0, 0, []
    began = time.perf_counter()
    before = cpu.sample()
    share = [
        calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)
    ]
    await asyncio.gather(*(worker(n) for n in share))
    elapsed = time.perf_counter() - began
    cpu_ms = ServerCpu.spent(before, cpu.sample()) * 1000 / max(1, made)
    return made / elapsed, statistics.median(durations), max(durations), failures, made, cpu_ms


async def run(args, port: int, project_pk: int, key: str, cpu: ServerCpu) -> dict:
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    links_url = f"{base}/api/v1/projects/{project_pk}/links/"
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm-up: every worker's first requests import and compile the views (seconds each).
        for _ in range(2):
            await asyncio.gather(
                *(
                    session.get(f"{base}/api/v1/bench/noop-auth/", headers=auth)
                    for _ in range(args.workers * 4)
                ),
                *(
                    session.post(links_url, json=one_item(n), headers=auth)
                    for n in range(-args.workers * 4, 0)
                ),
            )
        phases = {  # name: method, URL, body per call, headers
            "noop": ("GET", f"{base}/api/v1/bench/noop/", None, {}),
            "noop_auth": ("GET", f"{base}/api/v1/bench/noop-auth/", None, auth),
            "post_auth": ("POST", f"{base}/api/v1/bench/post-auth/", one_item, auth),
            "one": ("POST", links_url, one_item, auth),
        }
        # The phases take turns, ``--rounds`` windows each: a VM whose speed drifts (other
        # tenants) slows all of them alike, and each round gives its own ratio.
        numbers = {name: itertools.count() for name in phases}  # every call a new transaction
        windows: dict[str, list[Window]] = {name: [] for name in phases}
        for round_ in range(args.rounds):
            for name, (method, url, body_for, headers) in phases.items():
                windows[name].append(
                    await load(
                        session,
                        method=method,
                        url=url,
                        body_for=body_for,
                        numbers=numbers[name],
                        headers=headers,
                        concurrency=args.concurrency,
                        seconds=args.seconds / args.rounds,
                        warmup=args.warmup if round_ == 0 else SETTLE,
                        cpu=cpu,
                    )
                )
        figures = {name: summary(phase_windows) for name, phase_windows in windows.items()}
        figures["rounds"] = [
            one.rate / ceiling.rate
            for one, ceiling in zip(windows["one"], windows["noop"], strict=True)
        ]
        figures["bulk"] = await bulk(
            session,
            url=links_url,
            headers=auth,
            calls=args.bulk_calls,
            concurrency=args.bulk_concurrency,
            cpu=cpu,
        )
    return figures


def main() -> None:
    args = parse_args()
    database_url = recreate_database(args.db)
    env = server_environment(database_url, args.redis)
    project_pk, key = prepare(env)
    port = args.port or free_port()
    print(f"uptime before: {uptime()}")
    server = start_gunicorn(env, port, args.workers)
    try:
        cpu = ServerCpu(server.pid, args.db)
        figures = asyncio.run(run(args, port, project_pk, key, cpu))
    finally:
        stop(server)
    print(f"uptime after:  {uptime()}")
    print(
        f"gunicorn {args.workers} sync workers, PostgreSQL, "
        f"Redis throttle {'on' if args.redis else 'off'}; client: aiohttp, "
        f"{args.concurrency} concurrent, {args.seconds:.0f} s per figure in {args.rounds} "
        "windows, the phases taking turns"
    )
    print(
        f"{'endpoint':<34} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
        f"{'server CPU ms/call':>19} {'of which PostgreSQL':>20}"
    )
    names = {
        "noop": "bare no-op view (ceiling)",
        "noop_auth": "no-op + API key auth + throttle",
        "post_auth": "the call's POST, parsed, no work",
        "one": "one call: POST /links/ (new link)",
    }
    for name, label in names.items():
        rate, p50, p99, errors, cpu_ms, db_ms = figures[name]
        print(
            f"{label:<34} {rate:>8.0f} {p50:>7.1f} {p99:>7.1f} {errors:>6} {cpu_ms:>19.2f} "
            f"{db_ms:>20.2f}"
        )
    ceiling, one = figures["noop"], figures["one"]
    framework = figures["post_auth"]
    print(
        f"one call / ceiling: {one[0] / ceiling[0]:.1%} of the calls/s (target >= 40 %), "
        f"{ceiling[4] / one[4]:.0%} by server CPU per call; "
        f"one call / authenticated no-op: {one[0] / figures['noop_auth'][0]:.0%}; "
        f"p99 {one[2]:.1f} ms (target < 100 ms)"
    )
    rounds = figures["rounds"]
    print(
        f"one call / ceiling, round by round: {', '.join(f'{r:.1%}' for r in rounds)} "
        f"(median {statistics.median(rounds):.1%})"
    )
    print(
        f"the framework's part: the same POST without the call's work runs at "
        f"{framework[0] / ceiling[0]:.0%} of the ceiling; the call's own work (validation, "
        f"write, database) adds {one[4] - framework[4]:.2f} ms of server CPU per call "
        f"(PostgreSQL {one[5] - framework[5]:.2f})"
    )
    rate, median, worst, failures, made, cpu_ms = figures["bulk"]
    print(
        f"bulk: {args.bulk_calls} calls of 1,000 new items, {args.bulk_concurrency} at a time: "
        f"{rate:,.0f} links/s (target >= 5,000); one call {median:.2f} s median, "
        f"{worst:.2f} s slowest; {made} made, {failures} failed; server CPU "
        f"{cpu_ms:.3f} ms per link ({2000 / cpu_ms:,.0f} links/s if two idle cores did "
        "nothing else)"
    )


if __name__ == "__main__":
    main()
