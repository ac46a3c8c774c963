"""Recurring messages of Lifecycle projects, with a controlled clock (``now`` is passed)."""

from datetime import UTC, date, datetime, time

from django.core.exceptions import ValidationError
from django.urls import reverse

import pytest

from distributions.models import Distribution, DistributionSeries
from distributions.series import (
    next_occurrence,
    series_create,
    series_end,
    series_pause,
    series_resume,
    series_run_due,
)
from distributions.services import distribution_materialise
from distributions.tasks import distribution_series_run_due_task
from projects.models import Project
from projects.services import project_change_stage
from tests.factories.participants import ParticipantFactory
from tests.factories.projects import ProjectFactory

pytestmark = pytest.mark.django_db


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def lifecycle(tenancy):
    tenancy.brand_a.time_zone = "Europe/Paris"
    tenancy.brand_a.save()
    return ProjectFactory(brand=tenancy.brand_a, kind=Project.Kind.LIFECYCLE)


def weekly(project, now, **extra):
    """Mondays and Wednesdays at 09:00 Paris time (08:00 UTC in winter), from 1 Jan 2030."""
    return series_create(
        project=project,
        message="How was your week? ${link}",
        frequency="weekly",
        weekdays=[2, 0],
        time_of_day=time(9, 0),
        starts_on=date(2030, 1, 1),
        now=now,
        **extra,
    )


def test_each_occurrence_makes_one_run_that_selects_participants_when_sent(lifecycle):
    series = weekly(lifecycle, utc(2030, 1, 1, 8))  # a Tuesday
    assert series.weekdays == [0, 2]
    assert series.next_run_at == utc(2030, 1, 2, 8)  # Wednesday 09:00 in Paris
    first = ParticipantFactory(project=lifecycle)

    assert series_run_due(now=utc(2030, 1, 2, 7, 59)) == {"runs": 0, "skipped": 0}
    assert series_run_due(now=utc(2030, 1, 2, 8)) == {"runs": 1, "skipped": 0}
    assert series_run_due(now=utc(2030, 1, 2, 8)) == {"runs": 0, "skipped": 0}  # once only
    run = Distribution.objects.get(series=series)
    assert (run.kind, run.channel, run.message) == ("invite", "sms", series.message)
    assert run.send_at == utc(2030, 1, 2, 8) and "2030-01-02" in run.name
    distribution_materialise(distribution=run)
    assert list(run.messages.values_list("participant_id", flat=True)) == [first.pk]

    series.refresh_from_db()
    assert series.next_run_at == utc(2030, 1, 7, 8)  # the next Monday
    assert series.last_outcome.startswith(f"Run {run.pk}")
    newcomer = ParticipantFactory(project=lifecycle)
    series_run_due(now=utc(2030, 1, 7, 8, 0, 30))
    second = Distribution.objects.filter(series=series).exclude(pk=run.pk).get()
    distribution_materialise(distribution=second)
    assert sorted(second.messages.values_list("participant_id", flat=True)) == sorted(
        [first.pk, newcomer.pk]
    )
    assert list(series.runs.order_by("send_at")) == [run, second]


def test_occurrences_follow_the_brands_clock_and_the_calendar(lifecycle):
    daily = DistributionSeries(
        project=lifecycle,
        frequency="daily",
        time_of_day=time(9, 0),
        starts_on=date(2030, 3, 29),
    )
    # Paris moves to summer time on 31 March 2030: 09:00 there is 07:00 UTC from then on.
    assert next_occurrence(daily, after=utc(2030, 3, 30, 8)) == utc(2030, 3, 31, 7)
    monthly = DistributionSeries(
        project=lifecycle,
        frequency="monthly",
        day_of_month=31,
        time_of_day=time(18, 30),
        starts_on=date(2030, 1, 1),
        ends_on=date(2030, 4, 29),
    )
    assert next_occurrence(monthly, after=utc(2030, 1, 31, 18)) == utc(2030, 2, 28, 17, 30)
    assert next_occurrence(monthly, after=utc(2030, 3, 31, 17)) is None  # ends before 30 April


def test_pausing_the_series_skips_what_falls_due_meanwhile(lifecycle):
    series = weekly(lifecycle, utc(2030, 1, 1, 8))
    series_pause(series=series, now=utc(2030, 1, 1, 9))
    assert series_run_due(now=utc(2030, 1, 2, 8)) == {"runs": 0, "skipped": 0}
    with pytest.raises(ValidationError):
        series_pause(series=series)
    resumed = series_resume(series=series, now=utc(2030, 1, 3, 12))
    assert resumed.status == "active" and resumed.next_run_at == utc(2030, 1, 7, 8)
    ended = series_end(series=series, now=utc(2030, 1, 4))
    assert ended.status == "ended" and ended.next_run_at is None
    with pytest.raises(ValidationError, match="has ended"):
        series_resume(series=series)
    assert series_run_due(now=utc(2030, 1, 7, 8)) == {"runs": 0, "skipped": 0}
    assert not Distribution.objects.exists()


def test_a_paused_project_skips_its_runs_and_the_series_carries_on(lifecycle):
    series = weekly(lifecycle, utc(2030, 1, 1, 8))
    project_change_stage(project=lifecycle, stage=Project.Stage.PAUSED)
    assert series_run_due(now=utc(2030, 1, 2, 8)) == {"runs": 0, "skipped": 1}
    series.refresh_from_db()
    assert "the project is paused" in series.last_outcome
    assert series.next_run_at == utc(2030, 1, 7, 8)
    project_change_stage(project=lifecycle, stage=Project.Stage.ACTIVE)
    assert series_run_due(now=utc(2030, 1, 7, 8)) == {"runs": 1, "skipped": 0}


def test_a_series_ends_after_its_last_day(lifecycle):
    series = weekly(lifecycle, utc(2030, 1, 1, 8), ends_on=date(2030, 1, 6))
    series_run_due(now=utc(2030, 1, 2, 8))
    series.refresh_from_db()
    assert series.status == "ended" and series.next_run_at is None
    assert series.runs.count() == 1


def test_series_input_is_validated(tenancy, lifecycle):
    base = {
        "message": "Hi",
        "frequency": "weekly",
        "weekdays": [1],
        "time_of_day": time(9),
        "starts_on": date(2030, 1, 1),
    }
    with pytest.raises(ValidationError) as excinfo:
        series_create(project=tenancy.project_a, **base)  # an Engagement project
    assert "Lifecycle" in excinfo.value.message_dict["project"][0]
    for bad, field in (
        ({"weekdays": []}, "weekdays"),
        ({"weekdays": [7]}, "weekdays"),
        ({"frequency": "monthly", "day_of_month": 32}, "day_of_month"),
        ({"frequency": "hourly"}, "frequency"),
        ({"message": " "}, "message"),
        ({"ends_on": date(2029, 12, 31)}, "ends_on"),
    ):
        with pytest.raises(ValidationError) as excinfo:
            series_create(project=lifecycle, **(base | bad))
        assert field in excinfo.value.message_dict, bad
    assert not DistributionSeries.objects.exists()


def test_the_beat_task_runs_due_series(lifecycle, eager_tasks):
    assert distribution_series_run_due_task.delay().get() == {"runs": 0, "skipped": 0}


def test_recurrences_through_the_api(tenancy, lifecycle, api_a):
    url = reverse("api:series-list", args=[lifecycle.pk])
    created = api_a.post(
        url,
        {
            "message": "Monthly pulse ${link}",
            "frequency": "monthly",
            "day_of_month": 15,
            "time_of_day": "10:00",
            "starts_on": "2030-01-01",
            "conditions": [{"criterion": "role", "value": "Employee"}],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["status"] == "active" and body["next_run_at"] is not None
    assert body["conditions"][0]["criterion"] == "role"
    detail = reverse("api:series-detail", args=[body["id"]])
    assert api_a.get(detail).json()["runs"] == []
    paused = api_a.post(reverse("api:series-action", args=[body["id"], "pause"]))
    assert paused.json()["status"] == "paused"
    again = api_a.post(reverse("api:series-action", args=[body["id"], "pause"]))
    assert again.status_code == 400
    assert api_a.post(reverse("api:series-action", args=[body["id"], "end"])).status_code == 200
    bad = api_a.post(
        url, {"message": "x", "frequency": "weekly", "time_of_day": "10:00"}, format="json"
    )
    assert bad.status_code == 400

    foreign = DistributionSeries.objects.create(
        project=ProjectFactory(brand=tenancy.brand_b, kind="lifecycle"),
        message="x",
        frequency="daily",
        time_of_day=time(9),
        starts_on=date(2030, 1, 1),
    )
    assert api_a.get(reverse("api:series-detail", args=[foreign.pk])).status_code == 404
    cross = reverse("api:series-action", args=[foreign.pk, "end"])
    assert api_a.post(cross).status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == "active"
    assert api_a.get(reverse("api:series-list", args=[foreign.project_id])).status_code == 404
