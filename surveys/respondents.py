"""Who is a respondent: a participant with a complete response in the project (a partial
response, kept when collection stopped mid-survey, does not count). The one definition that
the reminder audience, the history CSV's Respondent column and the survey summary use."""

from __future__ import annotations

from django.db.models import Exists, Q, QuerySet

from projects.models import Project, Response


def respondent_q() -> Q:
    """The responses that make their participant a respondent (a Q on Response)."""
    return Q(status=Response.Status.COMPLETE, participant__isnull=False)


def respondent_participant_ids(project_id: int) -> QuerySet:
    """Participants who completed the survey (a subquery of participant ids)."""
    return Response.objects.filter(respondent_q(), project_id=project_id).values("participant_id")


def is_respondent_subquery(*, project_ref, participant_ref) -> Exists:
    """``Exists`` for annotating rows with Respondent Yes/No (refs are OuterRef paths)."""
    return Exists(
        Response.objects.filter(
            respondent_q(), project_id=project_ref, participant_id=participant_ref
        )
    )


def respondent_counts(*, project: Project) -> dict:
    """Participants, how many responded (complete), and how many have not."""
    participants = project.participants.count()
    respondents = respondent_participant_ids(project.pk).distinct().count()
    return {
        "participants": participants,
        "respondents": respondents,
        "non_respondents": max(0, participants - respondents),
    }
