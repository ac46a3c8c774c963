"""Recurring messages of Lifecycle projects (docs/survey.md, "Recurring messages"): a
``DistributionSeries`` repeats daily, weekly on chosen days or monthly, at a time of the brand's
day.

What callers can rely on:
- each occurrence becomes at most one run: ``series_run`` locks the series row and moves
  ``next_run_at`` past ``now`` in the same transaction that creates the run;
- a run is a normal ``Distribution`` made by ``distribution_create`` (so every rule of a send
  applies) and linked to its series; its participants are selected when it is sent;
- occurrences missed while the beat was down or the project was not collecting are skipped,
  never sent late in a burst (``last_outcome`` says what happened);
- the clock is a parameter: pass ``now`` (tests do).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distributions.models import Distribution, DistributionSeries
from distributions.services import distribution_create_from_spec
from distributions.spec import DistributionSpec, spec_clean, spec_errors
from projects.models import Project

Frequency = DistributionSeries.Frequency
SStatus = DistributionSeries.Status
# How far ahead to look for the next occurrence: a monthly series on the 31st is at most
# 62 days away; a year covers every valid rule.
LOOKAHEAD_DAYS = 370
DUE_BATCH = 200  # series started per beat; the rest wait for the next beat


def _occurs_on(series: DistributionSeries, day: date) -> bool:
    if series.frequency == Frequency.DAILY:
        return True
    if series.frequency == Frequency.WEEKLY:
        return day.weekday() in (series.weekdays or [])
    last = calendar.monthrange(day.year, day.month)[1]
    return day.day == min(series.day_of_month or 1, last)


def next_occurrence(series: DistributionSeries, *, after: datetime) -> datetime | None:
    """The first occurrence strictly after ``after``, or None once the series has ended."""
    zone = series.project.brand.zone
    day = max(series.starts_on, after.astimezone(zone).date())
    for _ in range(LOOKAHEAD_DAYS):
        if series.ends_on and day > series.ends_on:
            return None
        if _occurs_on(series, day):
            at = datetime.combine(day, series.time_of_day, tzinfo=zone)
            if at > after:
                return at
        day += timedelta(days=1)
    return None


def _schedule_errors(
    *,
    project: Project,
    frequency: str,
    weekdays,
    day_of_month,
    starts_on: date | None,
    ends_on: date | None,
    time_of_day: time | None,
) -> tuple[dict[str, str], dict]:
    """The recurrence's own rules; returns the errors and its cleaned fields."""
    errors: dict[str, str] = {}
    if project.kind != Project.Kind.LIFECYCLE:
        errors["project"] = "Recurring messages are for Lifecycle projects."
    cleaned_days: list[int] = []
    if frequency not in Frequency.values:
        errors["frequency"] = f"Choose one of: {', '.join(Frequency.values)}."
    elif frequency == Frequency.WEEKLY:
        days = weekdays or []
        if (
            not isinstance(days, list | tuple)
            or not days
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in days)
        ):
            errors["weekdays"] = "Choose at least one day of the week (0 = Monday … 6 = Sunday)."
        else:
            cleaned_days = sorted(set(days))
    elif frequency == Frequency.MONTHLY and not (
        isinstance(day_of_month, int) and 1 <= day_of_month <= 31
    ):
        errors["day_of_month"] = "Choose a day of the month from 1 to 31."
    if starts_on is None:
        errors["starts_on"] = "Choose the first day."
    if time_of_day is None:
        errors["time_of_day"] = "Choose the time of day."
    if starts_on and ends_on and ends_on < starts_on:
        errors["ends_on"] = "Must be on or after the first day."
    return errors, {
        "weekdays": cleaned_days,
        "day_of_month": day_of_month if frequency == Frequency.MONTHLY else None,
    }


def series_create(
    *,
    project: Project,
    message: str,
    frequency: str,
    time_of_day: time,
    starts_on: date,
    weekdays: list[int] | None = None,
    day_of_month: int | None = None,
    ends_on: date | None = None,
    channel: str = Distribution.Channel.SMS,
    sender: str = "",
    conditions: list | None = None,
    name: str = "",
    actor=None,
    now: datetime | None = None,
    subject: str = "",
    text_body: str = "",
    from_name: str = "",
    from_address: str = "",
    reply_to: str = "",
) -> DistributionSeries:
    """Start a recurring message; its first run is the first occurrence after ``now``. An
    email series (``channel="email"``) has the email fields of ``distribution_create``; each
    run is an email invite checked by the same rules."""
    now = now or timezone.now()
    # Each run is an invite made from this spec: the same rules, checked now.
    spec = spec_clean(
        DistributionSpec(
            channel=channel,
            kind=Distribution.Kind.INVITE,
            message=message,
            sender=sender,
            conditions=conditions,
            subject=subject,
            text_body=text_body,
            from_name=from_name,
            from_address=from_address,
            reply_to=reply_to,
        ),
        brand=project.brand,
    )
    errors, cleaned = _schedule_errors(
        project=project,
        frequency=frequency,
        weekdays=weekdays,
        day_of_month=day_of_month,
        starts_on=starts_on,
        ends_on=ends_on,
        time_of_day=time_of_day,
    )
    errors.update(spec_errors(spec, project=project, recurring=True))
    if errors:
        raise ValidationError(errors)
    series = DistributionSeries(
        project=project,
        name=(name or "").strip()[:200],
        frequency=frequency,
        time_of_day=time_of_day,
        starts_on=starts_on,
        ends_on=ends_on,
        created_by=actor if getattr(actor, "pk", None) else None,
        **cleaned,
        **spec.stored_fields(with_window=False),
    )
    series.next_run_at = next_occurrence(series, after=now)
    if series.next_run_at is None:
        raise ValidationError({"ends_on": "The series would never run: it ends before it starts."})
    series.save()
    return series


def _set_status(series: DistributionSeries, status: str, *, now: datetime) -> DistributionSeries:
    with transaction.atomic():
        locked = (
            DistributionSeries.objects.select_for_update()
            .select_related("project__brand")
            .get(pk=series.pk)
        )
        if locked.status == SStatus.ENDED:
            raise ValidationError({"status": "This series has ended."})
        if locked.status == status:
            label = locked.get_status_display().lower()
            raise ValidationError({"status": f"The series is already {label}."})
        locked.status = status
        if status == SStatus.ACTIVE:
            # Occurrences missed while paused are skipped: restart from now.
            locked.next_run_at = next_occurrence(locked, after=now)
            if locked.next_run_at is None:
                locked.status = SStatus.ENDED
        elif status == SStatus.ENDED:
            locked.next_run_at = None
        locked.save()
    return locked


def series_pause(*, series: DistributionSeries, actor=None, now=None) -> DistributionSeries:
    """Stop making runs until resumed (runs already made are not touched)."""
    return _set_status(series, SStatus.PAUSED, now=now or timezone.now())


def series_resume(*, series: DistributionSeries, actor=None, now=None) -> DistributionSeries:
    """Make runs again, from the next occurrence after ``now``."""
    return _set_status(series, SStatus.ACTIVE, now=now or timezone.now())


def series_end(*, series: DistributionSeries, actor=None, now=None) -> DistributionSeries:
    """End the series for good: no more runs."""
    return _set_status(series, SStatus.ENDED, now=now or timezone.now())


SERIES_ACTIONS = {"pause": series_pause, "resume": series_resume, "end": series_end}


def series_due(*, now: datetime) -> list[int]:
    return list(
        DistributionSeries.objects.filter(status=SStatus.ACTIVE, next_run_at__lte=now)
        .order_by("next_run_at", "pk")
        .values_list("pk", flat=True)[:DUE_BATCH]
    )


def series_run(*, series_id: int, now: datetime | None = None) -> Distribution | None:
    """Make the run of a due series (once per occurrence), or record why there is none."""

    now = now or timezone.now()
    with transaction.atomic():
        series = (
            DistributionSeries.objects.select_for_update(of=("self",))
            .select_related("project__brand")
            .filter(pk=series_id, status=SStatus.ACTIVE, next_run_at__lte=now)
            .first()
        )
        if series is None:
            return None  # not due (any more): another beat ran it
        occurrence = series.next_run_at
        series.next_run_at = next_occurrence(series, after=now)
        series.last_run_at = now
        if series.next_run_at is None:
            series.status = SStatus.ENDED
        run = None
        project = series.project
        if not project.is_collecting:
            series.last_outcome = (
                f"Skipped {occurrence:%Y-%m-%d %H:%M}: the project is "
                f"{project.get_stage_display().lower()}."
                if project.stage != Project.Stage.ACTIVE
                else f"Skipped {occurrence:%Y-%m-%d %H:%M}: outside the availability window."
            )
        else:
            try:
                with transaction.atomic():
                    run = distribution_create_from_spec(
                        project=project,
                        spec=DistributionSpec.of(series, kind=Distribution.Kind.INVITE),
                        send_at=now,
                        name=f"{series} · {occurrence.astimezone(project.brand.zone):%Y-%m-%d}",
                        actor=series.created_by,
                    )
                    Distribution.objects.filter(pk=run.pk).update(series=series)
                    run.series = series
                series.last_outcome = f"Run {run.pk} for {occurrence:%Y-%m-%d %H:%M}."
            except ValidationError as exc:
                series.last_outcome = ("Not sent: " + "; ".join(exc.messages))[:300]
        series.save()
    return run


def series_run_due(*, now: datetime | None = None) -> dict:
    """Make every due run (what the beat calls)."""
    now = now or timezone.now()
    runs = skipped = 0
    for series_id in series_due(now=now):
        if series_run(series_id=series_id, now=now):
            runs += 1
        else:
            skipped += 1
    return {"runs": runs, "skipped": skipped}
