"""Load the rate card from a CSV: ``manage.py load_rate_card rates.csv [--replace] [--dry-run]``.

The whole file is validated first; it is written in one transaction, or not at all.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from credits.rates import rate_card_load


class Command(BaseCommand):
    help = "Load credits per SMS segment by country from a CSV (country,credits_per_segment)."

    def add_arguments(self, parser):
        parser.add_argument("path", help="CSV file; '-' reads standard input")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="countries absent from the file lose their own rate (they cost the default)",
        )
        parser.add_argument("--dry-run", action="store_true", help="check the file only")

    def handle(self, *args, path: str, replace: bool, dry_run: bool, **options):
        try:
            text = self.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        try:
            load = rate_card_load(text=text, replace=replace, dry_run=dry_run)
        except ValidationError as exc:
            raise CommandError(
                "Nothing was written:\n" + "\n".join(f"  {m}" for m in exc.messages)
            ) from exc
        verb = "would be" if dry_run else "were"
        self.stdout.write(
            self.style.SUCCESS(
                f"{load.created} countries {verb} added, {load.updated} updated, "
                f"{load.deleted} removed."
                + (f" Default rate: {load.default_rate}." if load.default_rate is not None else "")
            )
        )

    @property
    def stdin(self):
        import sys

        return sys.stdin
