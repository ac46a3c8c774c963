"""Reads for projects: the respondent page's link, responses, the distribution summary, CSVs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    JSONField,
    OuterRef,
    Q,
    Subquery,
    When,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from projects.models import Project, Question, Response, SurveyLink
from surveys.answers import family_answered_q

CSV_BATCH = 2000  # rows fetched per round trip when streaming a CSV
SUMMARY_DAYS = 30  # days shown on the responses-over-time chart


def survey_link_for_page(token: str) -> SurveyLink | None:
    """The link behind ``/s/<token>`` with its project, whether its participant already
    answered this invite through another of its links, and the answers saved to finish later
    (``saved_answers``, None when there are none): one query."""
    family = Response.objects.filter(
        family_answered_q(participant_ref=OuterRef("participant_id"), root_ref=OuterRef("root")),
        project_id=OuterRef("project_id"),
    )
    saved = Response.objects.filter(link_id=OuterRef("pk"), status=Response.Status.PARTIAL)
    return (
        SurveyLink.objects.select_related("project")
        .annotate(root=Coalesce(F("distribution__parent_id"), F("distribution_id")))
        .annotate(family_answered=Exists(family))  # NULL participant or root: never true
        .annotate(saved_answers=Subquery(saved.values("answers")[:1], output_field=JSONField()))
        .filter(token=token)
        .first()
    )


def question_list(*, project: Project) -> list[Question]:
    return list(project.questions.all())


def response_still_counts(*, project: Project, response_id: int) -> bool:
    """Does this response of the project still stand (not reset by an admin)? What a
    browser's one-answer cookie names is checked with it."""
    return (
        Response.objects.filter(project=project, pk=response_id)
        .exclude(status=Response.Status.SUPERSEDED)
        .exists()
    )


def response_list(
    *,
    project: Project,
    status: str | None = None,
    channel: str | None = None,
    since: datetime | None = None,
):
    queryset = Response.objects.filter(project=project).select_related("participant__person")
    if status:
        queryset = queryset.filter(status=status)
    if channel:
        queryset = queryset.filter(channel=channel)
    if since:
        queryset = queryset.filter(completed_at__gte=since)
    return queryset


def response_channel():
    """The channel a response is counted and exported under: for an answer through a
    transactional link, its distribution's channel label (``push``, ``kiosk``…; ``api`` by
    default); otherwise the channel recorded with the response."""
    return Case(
        When(
            channel=Response.Channel.API,
            distribution__label__gt="",
            then=F("distribution__label"),
        ),
        default=F("channel"),
        output_field=CharField(),
    )


def responses_summary(*, project: Project, zone, now: datetime | None = None) -> dict:
    """The distribution summary (docs/survey.md): responses per channel per day for the chart,
    and per channel totals (complete, partial, last 24 hours, last 7 days) for the table."""
    now = now or timezone.now()
    channels = dict(Response.Channel.choices)
    start_day = (now.astimezone(zone) - timedelta(days=SUMMARY_DAYS - 1)).date()
    days = [start_day + timedelta(days=offset) for offset in range(SUMMARY_DAYS)]
    per_day = (
        Response.objects.filter(
            project=project,
            status=Response.Status.COMPLETE,
            completed_at__gte=now - timedelta(days=SUMMARY_DAYS + 1),
        )
        .annotate(day=TruncDate("completed_at", tzinfo=zone), counted_as=response_channel())
        .values("day", "counted_as")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts: dict[str, dict] = {}
    for row in per_day:
        counts.setdefault(row["counted_as"], {})[row["day"]] = row["n"]
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    complete = Q(status=Response.Status.COMPLETE)
    totals = (
        Response.objects.filter(project=project)
        .annotate(counted_as=response_channel())
        .values("counted_as")
        .annotate(
            complete=Count("pk", filter=complete),
            partial=Count("pk", filter=Q(status=Response.Status.PARTIAL)),
            last_day=Count("pk", filter=complete & Q(completed_at__gte=day_ago)),
            last_week=Count("pk", filter=complete & Q(completed_at__gte=week_ago)),
        )
        .order_by()
    )
    table = [
        {
            **{k: v for k, v in row.items() if k != "counted_as"},
            "channel": row["counted_as"],
            "label": channels.get(row["counted_as"], row["counted_as"]),
        }
        for row in sorted(totals, key=lambda r: (-r["complete"], r["counted_as"]))
    ]
    return {
        "labels": [day.isoformat() for day in days],
        "datasets": [
            {
                "channel": channel,
                "label": channels.get(channel, channel),
                "data": [by_day.get(day, 0) for day in days],
            }
            for channel, by_day in sorted(counts.items())
        ],
        "table": table,
        "total": sum(row["complete"] for row in table),
        "partial": sum(row["partial"] for row in table),
        "updated_at": now,
    }


# --- CSV exports ------------------------------------------------------------------------------
RESPONSE_FIXED_HEADER = [
    "Response ID",
    "Status",
    "Channel",
    "Started",
    "Completed",
    "PersonID",
    "First name",
    "Last name",
    "Distribution",
]


def responses_csv(*, project: Project, zone, status: str | None = None):
    """(header, rows): fixed columns, one per question (in survey order), then embedded data
    as JSON and the names of its untrusted fields."""
    questions = question_list(project=project)
    header = [
        *RESPONSE_FIXED_HEADER,
        *(f"Q{index}. {q.text}" for index, q in enumerate(questions, start=1)),
        "Embedded data",
        "Untrusted fields",
    ]
    return header, _response_rows(project, questions, zone, status)


def _iso(value, zone) -> str:
    return value.astimezone(zone).isoformat(timespec="seconds") if value else ""


def _answer_text(value) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _response_rows(project, questions, zone, status) -> Iterator[list]:
    queryset = response_list(project=project, status=status).order_by("completed_at", "pk")
    values = queryset.annotate(counted_as=response_channel()).values_list(
        "pk",
        "status",
        "counted_as",
        "started_at",
        "completed_at",
        "participant__person__person_id",
        "participant__person__first_name",
        "participant__person__last_name",
        "distribution_id",
        "answers",
        "embedded_data",
        "untrusted_keys",
    )
    for row in values.iterator(chunk_size=CSV_BATCH):
        (
            pk,
            status_,
            channel,
            started,
            completed,
            person_id,
            first,
            last,
            dist,
            answers,
            embedded,
            untrusted,
        ) = row
        yield [
            pk,
            status_,
            channel,
            _iso(started, zone),
            _iso(completed, zone),
            person_id or "",
            first or "",
            last or "",
            dist or "",
            *(_answer_text((answers or {}).get(str(q.pk))) for q in questions),
            json.dumps(embedded or {}, ensure_ascii=False, sort_keys=True),
            " ".join(untrusted or []),
        ]


LINKS_HEADER = [
    "PersonID",
    "First name",
    "Last name",
    "Email",
    "Phone number",
    "User name",
    "Link",
    "Expires",
    "Opened",
    "Completed",
]


def survey_links(*, project: Project, channel: str | None = None, distribution_id=None):
    queryset = SurveyLink.objects.filter(project=project).select_related("participant__person")
    if channel:
        queryset = queryset.filter(channel=channel)
    if distribution_id:
        queryset = queryset.filter(distribution_id=distribution_id)
    return queryset


def links_csv_rows(links, *, zone) -> Iterator[list]:
    for link in links:
        person = link.participant.person if link.participant else None
        yield [
            person.person_id if person else "",
            person.first_name if person else "",
            person.last_name if person else "",
            person.email if person else "",
            person.phone if person else "",
            person.username if person else "",
            link.url,
            _iso(link.expires_at, zone),
            _iso(link.opened_at, zone),
            _iso(link.completed_at, zone),
        ]
