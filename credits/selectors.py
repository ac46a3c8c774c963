"""Reads of credits: balances, the ledger, what a distribution consumed, the usage report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Protocol

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from brands.models import Brand
from credits.models import ZERO, CreditAccount, CreditEntry
from credits.rates import country_name

Kind = CreditEntry.Kind
MAX_REPORT_DAYS = 366
CSV_HEADER = ["Date", "Project", "Country", "Messages", "Segments", "Credits"]
CSV_BATCH = 2000


@dataclass(frozen=True)
class Balance:
    balance: Decimal  # what the brand owns: grants and purchases minus debits
    reserved: Decimal  # held by distributions that are sending
    self_service: bool

    @property
    def available(self) -> Decimal:
        return self.balance - self.reserved

    def as_dict(self) -> dict:
        return {
            "balance": self.balance,
            "reserved": self.reserved,
            "available": self.available,
            "self_service": self.self_service,
        }


class ChargedDistribution(Protocol):
    """A ``distributions.models.Distribution`` (a layer above), as credits reads it."""

    pk: int
    channel: str


def credits_balance(*, brand: Brand) -> Balance:
    """The brand's balance, reserved and available credits, summed from the ledger.

    Reads the account's cached prefix sum and adds the entries after it; no lock is taken.
    """
    account = CreditAccount.objects.filter(brand=brand).first()
    upto, amount, held = (
        (account.summed_upto_id, account.summed_amount, account.summed_held)
        if account
        else (0, ZERO, ZERO)
    )
    tail = CreditEntry.objects.filter(brand=brand, pk__gt=upto).aggregate(
        amount=Sum("amount"), held=Sum("held")
    )
    return Balance(
        balance=amount + (tail["amount"] or ZERO),
        reserved=held + (tail["held"] or ZERO),
        self_service=brand.is_self_service,
    )


def credits_verify(*, brand: Brand) -> dict:
    """Recompute the brand's figures from every ledger row and compare with the cached sums."""
    full = CreditEntry.objects.filter(brand=brand).aggregate(amount=Sum("amount"), held=Sum("held"))
    cached = credits_balance(brand=brand)
    balance, reserved = full["amount"] or ZERO, full["held"] or ZERO
    return {
        "balance": balance,
        "reserved": reserved,
        "consistent": balance == cached.balance and reserved == cached.reserved,
    }


def distribution_consumed(*, distribution: ChargedDistribution) -> Decimal:
    """Credits debited for a distribution (0 for a self-service brand)."""
    total = CreditEntry.objects.filter(distribution=distribution, kind=Kind.DEBIT).aggregate(
        s=Sum("amount")
    )["s"]
    return -(total or ZERO) + ZERO  # + ZERO turns -0 into 0


def ledger_list(
    *,
    brand: Brand,
    kinds: list[str] | None = None,
    distribution_id: int | None = None,
    start: date | None = None,
    end: date | None = None,
) -> QuerySet:
    """The brand's ledger, newest first (filters are optional)."""
    queryset = CreditEntry.objects.for_brand(brand).select_related(
        "distribution", "project", "actor"
    )
    if kinds:
        queryset = queryset.filter(kind__in=kinds)
    if distribution_id:
        queryset = queryset.filter(distribution_id=distribution_id)
    zone = brand.zone
    if start:
        queryset = queryset.filter(created_at__gte=datetime.combine(start, time.min, tzinfo=zone))
    if end:
        queryset = queryset.filter(
            created_at__lt=datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone)
        )
    return queryset.order_by("-created_at", "-pk")


# --- the licence usage report ---------------------------------------------------------------
def _period_bounds(brand: Brand, start: date, end: date) -> tuple[datetime, datetime]:
    zone = brand.zone
    return (
        datetime.combine(start, time.min, tzinfo=zone),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone),
    )


def _usage_rows(brand: Brand, start: date, end: date) -> QuerySet:
    since, until = _period_bounds(brand, start, end)
    return CreditEntry.objects.filter(
        brand=brand,
        kind__in=CreditEntry.PER_MESSAGE,
        created_at__gte=since,
        created_at__lt=until,
    )


def _figures(row: dict) -> dict:
    return {
        "messages": row.get("messages") or 0,
        "segments": row.get("segments") or 0,
        "credits": -(row.get("amount") or ZERO) + ZERO,
    }


SUMS = {"messages": Count("pk"), "segments": Sum("segments"), "amount": Sum("amount")}


def usage_report(*, brand: Brand, start: date, end: date) -> dict:
    """Credits consumed from ``start`` to ``end`` (days of the brand's time zone, inclusive):
    totals, by day (every day of the period, zeros included), by project and by country;
    and what remains now."""
    if end < start:
        raise ValueError("the period ends before it starts")
    if (end - start).days >= MAX_REPORT_DAYS:
        raise ValueError(f"the period is longer than {MAX_REPORT_DAYS} days")
    rows = _usage_rows(brand, start, end)
    zone = brand.zone
    totals = _figures(rows.aggregate(**SUMS))
    daily = {
        row["day"]: _figures(row)
        for row in rows.annotate(day=TruncDate("created_at", tzinfo=zone))
        .values("day")
        .annotate(**SUMS)
        .order_by("day")
    }
    by_day = []
    day = start
    while day <= end:
        by_day.append({"date": day, **daily.get(day, _figures({}))})
        day += timedelta(days=1)
    by_project = [
        {
            "project_id": row["project_id"],
            "project": row["project__name"] or "(deleted project)",
            **_figures(row),
        }
        for row in rows.values("project_id", "project__name")
        .annotate(**SUMS)
        .order_by("-amount", "-segments", "project__name")
    ]
    by_country = [
        {"country": row["country"], "name": country_name(row["country"]), **_figures(row)}
        for row in rows.values("country")
        .annotate(**SUMS)
        .order_by("amount", "-segments", "country")
    ]
    since, until = _period_bounds(brand, start, end)
    added = CreditEntry.objects.filter(
        brand=brand, created_at__gte=since, created_at__lt=until
    ).aggregate(
        granted=Sum("amount", filter=Q(kind__in=CreditEntry.CREDITING)),
        adjusted=Sum("amount", filter=Q(kind=Kind.ADJUST)),
    )
    balance = credits_balance(brand=brand)
    return {
        "start": start,
        "end": end,
        "self_service": balance.self_service,
        "consumed": totals["credits"],
        "messages": totals["messages"],
        "segments": totals["segments"],
        "granted": added["granted"] or ZERO,
        "adjusted": added["adjusted"] or ZERO,
        "balance": balance.balance,
        "reserved": balance.reserved,
        "remaining": balance.available,
        "by_day": by_day,
        "by_project": by_project,
        "by_country": by_country,
    }


def usage_csv_rows(*, brand: Brand, start: date, end: date) -> Iterator[list]:
    """One row per day, project and country of the period (for the CSV export)."""
    zone = brand.zone
    rows = (
        _usage_rows(brand, start, end)
        .annotate(day=TruncDate("created_at", tzinfo=zone))
        .values("day", "project__name", "country")
        .annotate(**SUMS)
        .order_by("day", "project__name", "country")
    )
    for row in rows.iterator(chunk_size=CSV_BATCH):
        figures = _figures(row)
        yield [
            row["day"].isoformat(),
            row["project__name"] or "(deleted project)",
            row["country"] or "Unknown",
            figures["messages"],
            figures["segments"],
            figures["credits"],
        ]


def usage_period(*, brand: Brand, start: str | None, end: str | None) -> tuple[date, date]:
    """The report's period from ``YYYY-MM-DD`` strings (brand's days, inclusive).

    Defaults: from the first day of the current month to today. Raises ValidationError for a
    date that cannot be read, an end before the start or a period longer than a year.
    """
    from django.core.exceptions import ValidationError
    from django.utils import timezone

    today = timezone.now().astimezone(brand.zone).date()
    errors = {}

    def read(name: str, raw: str | None, default: date) -> date:
        text = (raw or "").strip()
        if not text:
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            errors[name] = f"'{text[:20]}' is not a date (YYYY-MM-DD)."
            return default

    first = read("start", start, today.replace(day=1))
    last = read("end", end, today)
    if not errors and last < first:
        errors["end"] = "The period ends before it starts."
    if not errors and (last - first).days >= MAX_REPORT_DAYS:
        errors["end"] = f"Choose a period of at most {MAX_REPORT_DAYS} days."
    if errors:
        raise ValidationError(errors)
    return first, last


def credits_consumed(*, distribution: ChargedDistribution) -> Decimal | None:
    """Credits debited for this distribution (None: not tracked, e.g. an email distribution).

    A self-service brand is never debited: 0 (its usage is reported in segments)."""

    if distribution.channel != "sms":
        return None
    return distribution_consumed(distribution=distribution)


def credits_available(*, brand: Brand | None) -> Decimal | None:
    """The brand's balance available for new distributions (None: a self-service brand,
    whose provider bills it directly)."""
    if brand is None or brand.is_self_service:
        return None
    # A read writes nothing: reservations of finished distributions are settled when they
    # finish or are cancelled, when the brand's next distribution starts, and by
    # distributions.tasks.credits_settle_task every minute.
    return credits_balance(brand=brand).available
