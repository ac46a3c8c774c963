#!/usr/bin/env python
"""Credits benchmark: the cost estimate of a 100,000-recipient distribution (target < 2 s).

    bash bench/run credits
    .venv/bin/python bench/credits_bench.py --recipients 100000 --repeat 5

Measures, in one run, on PostgreSQL (127.0.0.1:5432, user postgres; ``--sqlite`` for SQLite):
1. raw baseline: the obvious loop, one rendered text, ``count_segments`` and
   ``phone_country`` per recipient (participants fetched in one query with their person);
2. the SQL floor: one COUNT of the same participants grouped by number prefix;
3. ``credits_estimate`` (the schedule page's figure) for three texts: no personal field,
   ``${first_name}`` + ``${link}``, and first name + last name + a metadata field;
4. the reservation at start (``distribution_reserve``) over 100,000 materialised rows, and
   the cover of one 500-row chunk (``distribution_cover``, what each send task adds).
Recipients: 70 % US, 15 % GB, 10 % DE, 5 % FR numbers; first names of 2 to 14 characters,
some outside GSM-7 (Łukasz, Zoë, Ἀλέξανδρος), ~300 distinct.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402

FIRST = [
    "Ada",
    "Al",
    "Bob",
    "Chloé",
    "Dmitri",
    "Eve",
    "François",
    "Grace",
    "Hiroshi",
    "Ines",
    "Jo",
    "Kwame",
    "Łukasz",
    "Maximiliana",
    "Nadia",
    "Oscar",
    "Priya",
    "Quentin",
    "Rosalind",
    "Søren",
    "Tomasz",
    "Ulrike",
    "Valentina",
    "Wei",
    "Xavier",
    "Yusuf",
    "Zoë",
    "Bartholomew",
    "Ἀλέξανδρος",
    "Anne-Marie",
]
TEXTS = {
    "no personal field": "Your opinion matters: tell us about your visit in two minutes. ${link}",
    "first name + link": "Hi ${first_name}, how was your visit? It takes two minutes: ${link}",
    "names + metadata": (
        "Hello ${first_name} ${last_name}, your ${Team} team would love your feedback on this "
        "quarter. It takes two minutes and helps a lot: ${link}"
    ),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", default="relay_bench_credits")
    parser.add_argument("--sqlite", action="store_true", help="a temporary SQLite file instead")
    return parser.parse_args()


def phone(rng: random.Random, index: int) -> str:
    roll = rng.random()
    if roll < 0.70:
        return f"+1415{2000000 + index:07d}"
    if roll < 0.85:
        return f"+447400{index:06d}"
    if roll < 0.95:
        return f"+49151{10000000 + index:08d}"
    return f"+336{10000000 + index:08d}"


def populate(project, count: int) -> None:
    from participants.models import Participant, Person

    rng = random.Random(7)
    batch = 10_000
    for start in range(0, count, batch):
        people = Person.objects.bulk_create(
            [
                Person(
                    brand=project.brand,
                    person_id=f"B{i}",
                    first_name=rng.choice(FIRST) + ("" if i % 10 else "a" * (i % 7)),
                    last_name=rng.choice(FIRST)[::-1].capitalize(),
                    phone=phone(rng, i),
                    metadata={"Team": rng.choice(["Sales", "Support", "R&D", "Operations"])},
                )
                for i in range(start, min(count, start + batch))
            ]
        )
        Participant.objects.bulk_create(
            [Participant(project=project, person=person, role="Employee") for person in people]
        )


def timed(fn, repeat: int) -> tuple[float, float, object]:
    runs = []
    result = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs), min(runs), result


def main() -> None:
    args = parse_args()
    if args.sqlite:
        database_url = f"sqlite:///{ROOT / 'var' / 'bench-credits.sqlite3'}"
        Path(ROOT / "var" / "bench-credits.sqlite3").unlink(missing_ok=True)
    else:
        database_url = recreate_database(args.db)
    os.environ.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import Count
    from django.db.models.functions import Substr

    from credits.models import CountryRate, RateCard
    from credits.rates import phone_country
    from credits.segments import count_segments
    from credits.services import credits_grant
    from distributions.charging import credits_estimate, distribution_cover, distribution_reserve
    from distributions.models import Distribution, Message
    from distributions.services import distribution_materialise
    from participants.models import Participant
    from participants.rendering import recipient_values, render
    from tests.factories.brands import BrandFactory
    from tests.factories.projects import ProjectFactory

    call_command("migrate", verbosity=0)
    card = RateCard.current()
    card.default_rate = 3
    card.save()
    CountryRate.objects.bulk_create(
        [
            CountryRate(country="US", rate=1),
            CountryRate(country="GB", rate="1.5"),
            CountryRate(country="FR", rate=2, enabled=False),
        ]
    )
    brand = BrandFactory()
    project = ProjectFactory(brand=brand)
    began = time.perf_counter()
    populate(project, args.recipients)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(
        f"{connection.vendor}: {args.recipients:,} participants created in "
        f"{time.perf_counter() - began:.1f} s"
    )
    credits_grant(brand=brand, amount=1_000_000)
    text = TEXTS["first name + link"]

    # 1. the raw baseline: the obvious per-recipient loop
    def raw_loop():
        costs = {}
        link = "http://127.0.0.1:8000/s/0123456789"
        rows = Participant.objects.filter(project=project).select_related("person")
        for participant in rows.iterator(chunk_size=5000):
            values, metadata = recipient_values(
                person=participant.person, participant=participant, link=link
            )
            country = phone_country(participant.person.phone)
            segments = count_segments(render(text, values, metadata))
            costs[country] = costs.get(country, 0) + segments
        return costs

    phone_country.cache_clear()
    raw_median, raw_best, raw_costs = timed(raw_loop, max(1, args.repeat // 2))

    # 2. the SQL floor
    def sql_floor():
        return list(
            Participant.objects.filter(project=project)
            .annotate(prefix=Substr("person__phone", 1, 8))
            .values("prefix")
            .annotate(n=Count("pk"))
            .order_by()
        )

    floor_median, floor_best, _ = timed(sql_floor, args.repeat)

    print(f"\nCost estimate of {args.recipients:,} recipients (median / best of {args.repeat}):")
    print(f"  raw baseline (per-recipient loop)      {raw_median:7.3f} s / {raw_best:.3f} s")
    print(f"  SQL floor (one grouped COUNT)          {floor_median:7.3f} s / {floor_best:.3f} s")
    results = {}
    for label, template in TEXTS.items():
        phone_country.cache_clear()
        median, best, estimate = timed(
            lambda template=template: credits_estimate(
                project=project, message=template, conditions=[]
            ),
            args.repeat,
        )
        results[label] = (median, best, estimate)
        verdict = "OK" if median < 2 else "TOO SLOW"
        print(
            f"  credits_estimate: {label:<20} {median:7.3f} s / {best:.3f} s  {verdict}  "
            f"({estimate['recipients']:,} sendable, {estimate['skipped']:,} skipped, "
            f"{estimate['segments']:,} segments, {estimate['credits']:,} credits)"
        )
    estimate = results["first name + link"][2]
    raw_segments = sum(v for k, v in raw_costs.items() if k != "FR")
    print(
        f"  same figures as the raw loop: {raw_segments == estimate['segments']} "
        f"(segments {raw_segments:,} vs {estimate['segments']:,}); "
        f"speed-up x{raw_median / results['first name + link'][0]:.1f}"
    )

    # 4. the reservation at start and the cover of one chunk
    distribution = Distribution.objects.create(
        project=project,
        message=text,
        send_at=django.utils.timezone.now(),
        status=Distribution.Status.IN_PROGRESS,
    )
    with transaction.atomic():
        began = time.perf_counter()
        distribution_materialise(distribution=distribution)
        materialised = time.perf_counter() - began
        began = time.perf_counter()
        distribution_reserve(distribution=distribution)
        reserved = time.perf_counter() - began
    rows = list(
        Message.objects.filter(distribution=distribution, status=Message.Status.PENDING)
        .select_related("person", "participant")
        .order_by("pk")[:500]
    )
    began = time.perf_counter()
    covered = distribution_cover(distribution=distribution, messages=rows)
    cover = time.perf_counter() - began
    print(
        f"\nAt start: materialise {materialised:.3f} s, reserve (estimate + ledger) "
        f"{reserved:.3f} s; cover of one 500-row chunk {cover * 1000:.1f} ms "
        f"({len(covered)} covered, {len(covered.skipped)} in a disabled country)"
    )


if __name__ == "__main__":
    main()
