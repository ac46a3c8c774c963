"""Reads for transactional distributions: their invites (links) counted like the invites of
an SMS or email distribution, and their history: one row per transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count, Q
from django.utils import timezone

from distributions.models import Distribution
from projects.models import SurveyLink
from projects.transactions import Transaction

TRANSACTIONS_HEADER = [
    "Transaction ID",
    "Occurred at",
    "PersonID",
    "First name",
    "Last name",
    "Email",
    "Phone number",
    "User name",
    "Respondent",
    "Status",
    "Link",
    "Created",
    "Opened",
    "Completed",
    "Expires",
    "Data",
]
TRANSACTIONS_BATCH = 2000  # rows per round trip (a server-side cursor on PostgreSQL)


def transactional_invite_metrics(
    *, distribution: Distribution, now: datetime | None = None
) -> dict:
    """Invites created, opened, started (a response, even partial), completed and expired
    (past expiry, not completed) of a distribution's links: one query."""
    now = now or timezone.now()
    # ``response`` is one-to-one: the outer join never repeats a link.
    counts = SurveyLink.objects.filter(distribution=distribution).aggregate(
        created=Count("pk"),
        opened=Count("pk", filter=Q(opened_at__isnull=False)),
        started=Count("response"),
        completed=Count("pk", filter=Q(completed_at__isnull=False)),
        expired=Count("pk", filter=Q(completed_at__isnull=True, expires_at__lte=now)),
    )
    return {"distribution": distribution.pk, "label": distribution.label, **counts}


def _iso(value, zone) -> str:
    return value.astimezone(zone).isoformat(timespec="seconds") if value else ""


def _status(link, now) -> str:
    if link is None:
        return ""
    if link.completed_at:
        return "Completed"
    if link.expires_at and link.expires_at <= now:
        return "Expired"
    return "Opened" if link.opened_at else "Created"


def transaction_history_rows(*, distribution: Distribution, zone) -> Iterator[list]:
    """One row per transaction of a transactional distribution, oldest first, streamed."""
    now = timezone.now()
    records = (
        Transaction.objects.filter(link__distribution=distribution)
        .select_related("link", "participant__person")
        .order_by("pk")
    )
    for record in records.iterator(chunk_size=TRANSACTIONS_BATCH):
        link = record.link
        person = record.participant.person if record.participant else None
        yield [
            record.external_id,
            _iso(record.occurred_at, zone),
            person.person_id if person else "",
            person.first_name if person else "",
            person.last_name if person else "",
            person.email if person else "",
            person.phone if person else "",
            person.username if person else "",
            "Yes" if link and link.completed_at else "No",
            _status(link, now),
            link.url if link else "",
            _iso(record.created_at, zone),
            _iso(link.opened_at if link else None, zone),
            _iso(link.completed_at if link else None, zone),
            _iso(link.expires_at if link else None, zone),
            json.dumps(record.data, sort_keys=True, ensure_ascii=False),
        ]
