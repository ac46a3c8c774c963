"""Participant import benchmark: a generated 100,000-row CSV, end to end, on PostgreSQL.

    createdb -h 127.0.0.1 -U postgres relay_bench_import   # once (the script creates it too)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/relay_bench_import \\
        .venv/bin/python bench/import_bench.py [--rows 100000]

The file has mixed countries (E.164, spaced international and US national formats), 10 % of
rows update people already in the directory and project, 1 % are bad (invalid phone or email,
formula cell, duplicated PersonID, extra cells). The import runs through the real services
(``import_create`` -> ``import_validate``, ``import_confirm`` -> ``import_commit``: the code
the Celery tasks run) in a child process whose peak RSS is measured. In the same run, a second
child bulk-inserts the same valid rows into the same tables with COPY (no parsing, matching
or validation): the floor any importer could reach. The ratio between the two is printed.
Data is deleted afterwards; the database is kept for the next run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/relay_bench_import"
BRAND_SLUG = "bench-import"
BASELINE_SLUG = "bench-import-raw"
HEADER = [
    "PersonID",
    "First name",
    "Last name",
    "Email",
    "Phone number",
    "Role",
    "Department",
    "Location",
    "Cost center",
]
# (country, share of rows, pattern with {n} for random digits): valid mobile ranges.
COUNTRIES = [
    ("US", 0.40, "+1415555{n4}", "(415) 555-{n4}"),
    ("GB", 0.15, "+447911{n6}", None),
    ("FR", 0.10, "+336{n8}", None),
    ("DE", 0.10, "+49151{n8}", None),
    ("IN", 0.10, "+9198{n8}", None),
    ("BR", 0.05, "+55119{n8}", None),
    ("AU", 0.05, "+614{n8}", None),
    ("JP", 0.05, "+8190{n8}", None),
]
FIRST = ["Ada", "Alan", "Grace", "Marie", "Hedy", "Kofi", "Mei", "Ravi", "Zoë", "José", "Åsa"]
LAST = ["Lovelace", "Turing", "Hopper", "Curie", "Lamarr", "Annan", "Chen", "Patel", "Müller"]
DEPARTMENTS = ["Sales", "R&D", "Support", "Finance", "Operations", "People"]
LOCATIONS = ["Paris", "London", "New York", "São Paulo", "Bengaluru", "Sydney", "Tokyo"]


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()


def ensure_database(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    admin = psycopg2.connect(url.rsplit("/", 1)[0] + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def phone_for(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    international, national = COUNTRIES[-1][2:]
    for _country, share, pattern, national_pattern in COUNTRIES:
        total += share
        if roll <= total:
            international, national = pattern, national_pattern
            break
    digits = {
        "n4": f"{rng.randrange(100, 200):04d}",  # 555-01xx: the valid US fiction range
        "n6": f"{rng.randrange(10**6):06d}",
        "n8": f"{rng.randrange(10**8):08d}",
    }
    number = international.format(**digits)
    style = rng.random()
    if national and style < 0.3:
        return national.format(**digits)
    if style < 0.6:  # spaced international
        return f"{number[:3]} {number[3:6]} {number[6:9]} {number[9:]}"
    return number


def generate(path: Path, rows: int, existing: list[str], seed: int = 7) -> dict:
    """Write the CSV; return what it contains. Streams: memory does not grow with ``rows``."""
    import phonenumbers

    rng = random.Random(seed)
    updates = set(rng.sample(range(rows), k=min(len(existing), rows // 10)))
    bad = set(rng.sample(sorted(set(range(rows)) - updates), k=rows // 100))
    existing_iter = iter(existing)
    counts = {"rows": rows, "updates": len(updates), "bad": len(bad)}
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for index in range(rows):
            pid = next(existing_iter) if index in updates else f"N{index:07d}"
            first, last = rng.choice(FIRST), rng.choice(LAST)
            phone = phone_for(rng)
            while not phonenumbers.is_valid_number(phonenumbers.parse(phone, "US")):
                phone = phone_for(rng)
            row = [
                pid,
                first,
                last,
                f"{pid.lower()}@example.com",
                phone,
                rng.choice(["Employee", "Employee", "Manager"]),
                rng.choice(DEPARTMENTS),
                rng.choice(LOCATIONS),
                f"CC-{rng.randrange(100):03d}",
            ]
            if index in bad:
                kind = index % 5
                if kind == 0:
                    row[4] = "555-12"
                elif kind == 1:
                    row[3] = "not-an-email"
                elif kind == 2:
                    row[6] = '=HYPERLINK("http://x")'
                elif kind == 3:
                    row[0] = "N0000000" if index else "N0000001"  # duplicates another row
                else:
                    row.append("extra")
            writer.writerow(row)
    return counts


def cpu_seconds() -> float:
    """CPU time of this process (user + system): what the machine's load does not stretch."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_import(args) -> None:
    """Import ``args.file`` through the services; print timings and this process's peak RSS."""
    django_setup(args.url)
    from django.conf import settings
    from django.core.files import File

    from brands.models import Brand
    from participants.services import import_confirm, import_create
    from projects.models import Project

    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 1 << 40  # run here, not through a broker
    settings.RELAY_IMPORT_MAX_UPLOAD_BYTES = 1 << 40
    brand = Brand.objects.get(slug=BRAND_SLUG)
    project = Project.objects.get(brand=brand, name="Bench")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_started = cpu_seconds()
    started = time.perf_counter()
    with open(args.file, "rb") as handle:
        upload = File(handle, name="bench.csv")
        upload.size = os.path.getsize(args.file)
        job = import_create(brand=brand, project=project, upload=upload)
    validated = time.perf_counter()
    cpu_validated = cpu_seconds()
    job = import_confirm(job=job)
    finished = time.perf_counter()
    cpu_finished = cpu_seconds()
    print(
        json.dumps(
            {
                "status": job.status,
                "failure": job.failure,
                "rows": job.total_rows,
                "to_create": job.to_create,
                "to_update": job.to_update,
                "unchanged": job.unchanged,
                "error_rows": job.error_rows,
                "created": job.created_count,
                "updated": job.updated_count,
                "added": job.added_count,
                "validate_cpu_s": cpu_validated - cpu_started,
                "commit_cpu_s": cpu_finished - cpu_validated,
                "validate_s": validated - started,
                "commit_s": finished - validated,
                "total_s": finished - started,
                "rss_start_mb": rss_before / 1024,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def child_baseline(args) -> None:
    """COPY the same rows (as they are, valid ones only) into the same tables."""
    import io

    django_setup(args.url)
    from django.db import connection, transaction
    from django.utils import timezone

    from brands.models import Brand
    from projects.models import Project

    brand = Brand.objects.get(slug=BASELINE_SLUG)
    project = Project.objects.get(brand=brand, name="Bench")
    bad = set(json.loads(Path(args.bad).read_text()))
    now = timezone.now().isoformat()
    started = time.perf_counter()

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        people, roles = io.StringIO(), io.StringIO()
        with open(args.file, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            for number, row in enumerate(reader, start=2):
                if number in bad:
                    continue
                pid, first, last, email, phone, role, *meta = row
                metadata = json.dumps(dict(zip(HEADER[6:], meta, strict=False)))
                people.write(
                    "\t".join(
                        [
                            str(brand.pk),
                            pid,
                            first,
                            last,
                            email,
                            "",
                            phone,
                            escape(metadata),
                            now,
                            now,
                        ]
                    )
                    + "\n"
                )
                roles.write(f"{pid}\t{role}\n")
        people.seek(0)
        raw.copy_expert(
            "COPY participants_person (brand_id, person_id, first_name, last_name, email, "
            "username, phone, metadata, created_at, updated_at) FROM STDIN",
            people,
        )
        cursor.execute("CREATE TEMP TABLE bench_roles (person_id text, role text) ON COMMIT DROP")
        roles.seek(0)
        raw.copy_expert("COPY bench_roles FROM STDIN", roles)
        cursor.execute(
            "INSERT INTO participants_participant (project_id, person_id, role, metadata, "
            "created_at, updated_at) SELECT %s, p.id, r.role, '{}', now(), now() "
            "FROM bench_roles r JOIN participants_person p "
            "ON p.brand_id = %s AND p.person_id = r.person_id",
            [project.pk, brand.pk],
        )
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "total_s": elapsed,
                "people": Brand.objects.get(pk=brand.pk).people.count(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def reset(slug: str, existing: int) -> list[str]:
    """The bench brand and project, emptied; ``existing`` people already in both.

    Returns their PersonIDs. The brand and project stay from one run to the next.
    """
    from django.db import connection

    from brands.models import Brand
    from participants.models import Participant, Person
    from projects.models import Project

    brand, _ = Brand.objects.get_or_create(
        slug=slug, defaults={"name": slug, "default_country": "US"}
    )
    project, _ = Project.objects.get_or_create(
        brand=brand, name="Bench", defaults={"stage": Project.Stage.ACTIVE}
    )
    # Plain SQL: the ORM's cascade would visit every app's tables for nothing.
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM participants_participant WHERE project_id IN "
            "(SELECT id FROM projects_project WHERE brand_id = %s)",
            [brand.pk],
        )
        cursor.execute("DELETE FROM participants_person WHERE brand_id = %s", [brand.pk])
        cursor.execute("DELETE FROM participants_importjob WHERE brand_id = %s", [brand.pk])
    pids = [f"X{i:07d}" for i in range(existing)]
    people = Person.objects.bulk_create(
        [
            Person(
                brand=brand,
                person_id=pid,
                first_name="Old",
                last_name="Name",
                email=f"{pid.lower()}@example.com",
                phone="+14155550100",
                metadata={"Department": "Old", "Location": "Paris"},
            )
            for pid in pids
        ],
        batch_size=2000,
    )
    Participant.objects.bulk_create(
        [Participant(project=project, person=p, role="Employee") for p in people],
        batch_size=2000,
    )
    # A directory in steady state: autovacuum has cleaned and analysed it. (VACUUM cannot run
    # in a transaction: Django's autocommit connection is outside one here.)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE participants_person, participants_participant")
    return pids


def run_child(phase: str, args, **extra) -> dict:
    command = [sys.executable, __file__, "--phase", phase, "--url", args.url, "--file", args.file]
    for key, value in extra.items():
        command += [f"--{key}", str(value)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


def bad_row_numbers() -> list[int]:
    """Every row the import reported as bad (from its error CSV), so that the baseline inserts
    exactly the rows the import accepted."""
    from participants.models import ImportJob

    job = ImportJob.objects.filter(brand__slug=BRAND_SLUG).order_by("-pk").first()
    with job.errors_file.open("rb") as handle:
        lines = handle.read().decode("utf-8-sig").splitlines()
    return sorted({int(row[0]) for row in csv.reader(lines[1:]) if row})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--phase", default="main")
    parser.add_argument("--file")
    parser.add_argument("--bad")
    parser.add_argument("--keep", action="store_true", help="keep the imported data")
    args = parser.parse_args()
    if not args.url.startswith("postgres"):
        sys.exit("This benchmark runs on PostgreSQL: set DATABASE_URL=postgres://…")
    if args.phase == "import":
        return child_import(args)
    if args.phase == "baseline":
        return child_baseline(args)

    ensure_database(args.url)
    django_setup(args.url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)

    with tempfile.TemporaryDirectory(prefix="relay-import-bench-") as tmp:
        path = Path(tmp) / "participants.csv"
        existing = reset(BRAND_SLUG, args.rows // 10)
        started = time.perf_counter()
        content = generate(path, args.rows, existing)
        print(
            f"generated {content['rows']:,} rows ({path.stat().st_size / 1e6:.1f} MB; "
            f"{content['updates']:,} updates, {content['bad']:,} bad) in "
            f"{time.perf_counter() - started:.1f}s"
        )
        args.file = str(path)
        result = run_child("import", args)
        if result["status"] != "done":
            sys.exit(f"import did not finish: {result}")
        bad_path = Path(tmp) / "bad.json"
        bad_path.write_text(json.dumps(bad_row_numbers()))
        reset(BASELINE_SLUG, 0)
        baseline = run_child("baseline", args, bad=bad_path)
        if not args.keep:
            reset(BRAND_SLUG, 0)
            reset(BASELINE_SLUG, 0)

    rows = result["rows"]
    rate = rows / result["total_s"]
    raw_rate = rows / baseline["total_s"]
    print(
        f"import: {rows:,} rows -> {result['created']:,} created, {result['updated']:,} updated, "
        f"{result['unchanged']:,} unchanged, {result['error_rows']:,} bad rows reported"
    )
    print(
        f"  validate {result['validate_s']:.2f}s + write {result['commit_s']:.2f}s = "
        f"{result['total_s']:.2f}s -> {rate:,.0f} rows/s; peak RSS {result['peak_rss_mb']:.0f} MB "
        f"(process start {result['rss_start_mb']:.0f} MB)"
    )
    print(
        f"  Python CPU of the import process: validate {result['validate_cpu_s']:.2f}s, "
        f"write {result['commit_cpu_s']:.2f}s (the rest is PostgreSQL, and waiting for a core)"
    )
    print(
        f"raw COPY of the same valid rows: {baseline['total_s']:.2f}s -> {raw_rate:,.0f} rows/s; "
        f"peak RSS {baseline['peak_rss_mb']:.0f} MB"
    )
    print(f"ratio: the import takes {result['total_s'] / baseline['total_s']:.1f}x the raw insert")
    target_ok = rate >= 10_000 and result["peak_rss_mb"] < 300
    print(f"target (>= 10,000 rows/s, < 300 MB): {'met' if target_ok else 'NOT met'}")


if __name__ == "__main__":
    main()
