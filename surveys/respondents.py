"""Who is a respondent: a participant with a complete response in the project (a partial
response, saved to finish later or kept when collection stopped mid-survey, does not count,
nor does a response an admin reset: it is superseded). The one definition that the reminder
audience, the history CSV's Respondent column and the survey summary use.

Who *started*: a participant with a partial response (answers saved to finish later through
their personal link, or kept when collection stopped). With "not a respondent", it is the
reminder audience "started but not finished"."""

from __future__ import annotations

from django.db.models import Exists, Q, QuerySet

from projects.models import Project, Response


def respondent_q() -> Q:
    """The responses that make their participant a respondent (a Q on Response)."""
    return Q(status=Response.Status.COMPLETE, participant__isnull=False)


def respondent_participant_ids(project_id: int) -> QuerySet:
    """Participants who completed the survey (a subquery of participant ids)."""
    return Response.objects.filter(respondent_q(), project_id=project_id).values("participant_id")


def started_q() -> Q:
    """The responses that show their participant started the survey (a Q on Response)."""
    return Q(status=Response.Status.PARTIAL, participant__isnull=False)


def started_participant_ids(project_id: int) -> QuerySet:
    """Participants who started the survey (saved or partial answers): a subquery of ids.
    Leave out respondents for "started but not finished"."""
    return Response.objects.filter(started_q(), project_id=project_id).values("participant_id")


def is_respondent_subquery(*, project_ref, participant_ref) -> Exists:
    """``Exists`` for annotating rows with Respondent Yes/No (refs are OuterRef paths)."""
    return Exists(
        Response.objects.filter(
            respondent_q(), project_id=project_ref, participant_id=participant_ref
        )
    )


def respondent_counts(*, project: Project) -> dict:
    """Participants, how many responded (complete), how many have not, and how many of those
    started (saved or partial answers)."""
    participants = project.participants.count()
    respondents = respondent_participant_ids(project.pk).distinct().count()
    started = (
        started_participant_ids(project.pk)
        .exclude(participant_id__in=respondent_participant_ids(project.pk))
        .distinct()
        .count()
    )
    return {
        "participants": participants,
        "respondents": respondents,
        "non_respondents": max(0, participants - respondents),
        "started_not_finished": started,
    }
