"""``manage.py send_distribution ID``: send an In progress distribution's due rows in the
foreground, in this process, as the pumps would (for an operator without workers at hand, or
to watch one distribution go). Waits for its sender's tokens in this process only."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max, Min

from distributions.models import Distribution, Message
from distributions.sending import send_chunk


class Command(BaseCommand):
    help = "Send an In progress distribution's due rows now, in this process."

    def add_arguments(self, parser):
        parser.add_argument("distribution", type=int, help="the distribution's id")

    def handle(self, *args, distribution: int, **options):
        found = Distribution.objects.filter(pk=distribution).first()
        if found is None:
            raise CommandError(f"distribution {distribution}: no such distribution")
        if found.status != Distribution.Status.IN_PROGRESS:
            raise CommandError(
                f"distribution {distribution} is {found.get_status_display()}: only one In "
                "progress can be sent (a Scheduled one starts when it is due)"
            )
        span = Message.objects.filter(distribution=found, status=Message.Status.PENDING).aggregate(
            first=Min("pk"), last=Max("pk")
        )
        if span["first"] is None:
            self.stdout.write("Nothing is waiting to be sent.")
            return
        stats = send_chunk(distribution_id=found.pk, first_id=span["first"], last_id=span["last"])
        found.refresh_from_db()
        self.stdout.write(
            f"Sent {stats.get('sent', 0)}, failed {stats.get('failed', 0)}, skipped (opt-out) "
            f"{stats.get('skipped_optout', 0)}, waiting {stats.get('deferred', 0)}; the "
            f"distribution is {found.get_status_display()}."
        )
