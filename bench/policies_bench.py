#!/usr/bin/env python
"""Materialisation with and without send policies, in the same run, on PostgreSQL.

    bash bench/run policies        # the issue's size: 1,000,000 recipients, with the rules
    .venv/bin/python bench/policies_bench.py --recipients 100000   # a quicker look

One project of N participants with phones from nine countries (the US spread over area codes
from Hawaii to New York; GB, FR, DE, IN, JP, AU, BR, RU) and one in ten with its own time
zone. Each round materialises a fresh distribution twice, alternately: plain, then with
quiet hours (SMS, 21:00-08:00) and a send window (weekdays 09:00-17:00), both in each
recipient's time zone, so that at any hour some recipients are held back, and two contact
frequency rules (at most 3 SMS per 7 days; 24 hours between two for people whose role is
Manager). The earlier rounds' rows are the contacts the rules count. Prints every time,
the medians, their ratio (the target: at most 2) and how many rows were held.
Needs PostgreSQL (127.0.0.1:5432, user postgres). The issue's size takes 5-7 minutes on the
shared 2-vCPU VM (setup about a minute, then six materialisations of 20-40 s).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
from datetime import time as clock
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402

# (prefix, digits after it, share in percent)
PHONES = [
    ("+1212", 7, 12),
    ("+1415", 7, 10),
    ("+1312", 7, 8),
    ("+1808", 7, 3),
    ("+1907", 7, 2),
    ("+1303", 7, 5),
    ("+447", 9, 15),
    ("+336", 8, 10),
    ("+4915", 9, 8),
    ("+9198", 8, 8),
    ("+8190", 8, 7),
    ("+614", 8, 5),
    ("+5511", 9, 4),
    ("+7916", 7, 3),
]
OWN_ZONES = [
    "Europe/Berlin",
    "Asia/Singapore",
    "America/Denver",
    "Africa/Lagos",
    "Pacific/Auckland",
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rules",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the two frequency rules (see docs/benchmarks.md); --no-rules: quiet hours and "
        "the window only",
    )
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE the message table before each run"
    )
    parser.add_argument("--db", default="relay_bench_policies")
    return parser.parse_args()


def populate(connection, brand_id: int, project_id: int, count: int) -> None:
    """Set-based: people and participants with generate_series."""
    cases = []
    params: list = [brand_id]
    low = 0
    for prefix, digits, share in PHONES:
        high = low + share
        cases.append(
            f"WHEN g %% 100 >= {low} AND g %% 100 < {high} THEN %s || "
            f"lpad((g::bigint * 7919 %% {10**digits})::text, {digits}, '0')"
        )
        params.append(prefix)
        low = high
    zones = ", ".join("%s" for _ in OWN_ZONES)
    params.extend(OWN_ZONES)
    params.append(count)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO participants_person (brand_id, person_id, first_name, last_name, email,
                username, phone, time_zone, metadata, created_at, updated_at)
            SELECT %s, 'P' || g, 'Name' || g, 'Bench', '', '',
                CASE {" ".join(cases)} ELSE '+1212' || lpad(g::text, 7, '0') END,
                CASE WHEN g %% 10 = 3 THEN (ARRAY[{zones}])[1 + (g / 10) %% {len(OWN_ZONES)}]
                     ELSE '' END,
                '{{}}'::jsonb, now(), now()
            FROM generate_series(1, %s) g
            """,  # noqa: S608 - the bench's own constants
            params,
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


def main() -> None:
    args = parse_args()
    print("load average at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    os.environ.update(
        DATABASE_URL=recreate_database(args.db),
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
    from django.utils import timezone

    call_command("migrate", verbosity=0)

    from brands.services import brand_create
    from distributions.models import Distribution, FrequencyRule, Message
    from distributions.services import distribution_materialise
    from projects.services import project_change_stage, project_create

    brand = brand_create(name="Bench", slug="bench", time_zone="America/Chicago")
    project = project_create(brand=brand, name="Big")
    project_change_stage(project=project, stage="active")
    populate(connection, brand.pk, project.pk, args.recipients)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE participants_participant SET role = 'Manager' WHERE id % 5 = 0")
    rules = [
        FrequencyRule(
            brand=brand, name="Three a week", max_messages=3, period_days=7, channel="sms"
        ),
        FrequencyRule(
            brand=brand,
            name="Managers daily",
            min_gap_hours=24,
            conditions=[{"criterion": "role", "operator": "is", "value": "Manager"}],
        ),
    ]

    def materialise(with_policies: bool) -> tuple[float, int]:
        brand.quiet_hours_sms = with_policies
        brand.save(update_fields=["quiet_hours_sms"])
        for rule in rules:
            rule.active = with_policies and args.rules
            rule.save()
        if args.analyze:
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE distributions_message")
        window = {}
        if with_policies:
            window = {
                "window_start": clock(9),
                "window_end": clock(17),
                "window_days": [0, 1, 2, 3, 4],
            }
        distribution = Distribution.objects.create(
            project=project,
            message="Hi",
            send_at=timezone.now(),
            status="in_progress",
            **window,
        )
        distribution.project.brand.refresh_from_db()
        started = time.perf_counter()
        counts = distribution_materialise(distribution=distribution)
        seconds = time.perf_counter() - started
        held = Message.objects.filter(distribution=distribution, due_at__gt=timezone.now()).count()
        assert counts["total"] == args.recipients, counts
        return seconds, held, counts["by_status"].get("skipped_frequency", 0)

    plain, policies = [], []
    for round_ in range(1, args.rounds + 1):
        seconds, _, _ = materialise(False)
        plain.append(seconds)
        with_seconds, held, skipped = materialise(True)
        policies.append(with_seconds)
        print(
            f"   round {round_}: without policies {seconds:.2f} s, with quiet hours, a send "
            f"window and two frequency rules {with_seconds:.2f} s ({held:,} of "
            f"{args.recipients:,} rows held, {skipped:,} skipped by a rule)"
        )
    base, timed = statistics.median(plain), statistics.median(policies)
    print(
        f"== {args.recipients:,} rows, median of {args.rounds}: without {base:.2f} s "
        f"({args.recipients / base:,.0f} rows/s), with {timed:.2f} s "
        f"({args.recipients / timed:,.0f} rows/s): ratio {timed / base:.2f} (target at most 2)"
    )
    print("load average at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
