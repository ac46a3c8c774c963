"""Who a reminder targets (the SMS seed): the recipients of its invite who have not responded,
or, without an invite, every participant of the project who has not responded.

A *respondent* is a participant with a complete ``projects.Response`` in the project (partial
responses, kept when collection stopped mid-survey, do not count). The history CSV's
Respondent column (``selectors.history_queryset``) uses the same definition.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef

from distributions.models import Message


def reminder_audience(distribution, queryset):
    if distribution.parent_id:
        reached = Message.objects.filter(
            distribution_id=distribution.parent_id,
            participant_id=OuterRef("pk"),
            status__in=Message.HANDED_OVER,
        )
        queryset = queryset.filter(Exists(reached))
    return queryset.exclude(pk__in=respondent_participant_ids(distribution.project_id))


def respondent_participant_ids(project_id: int):
    """Participants who completed the survey (a subquery of participant ids)."""
    from projects.models import Response

    return Response.objects.filter(
        project_id=project_id, status=Response.Status.COMPLETE, participant_id__isnull=False
    ).values("participant_id")


def is_respondent_subquery(*, project_ref, participant_ref) -> Exists:
    """``Exists`` for annotating rows with Respondent Yes/No (refs are OuterRef paths)."""
    from projects.models import Response

    return Exists(
        Response.objects.filter(
            project_id=project_ref,
            participant_id=participant_ref,
            status=Response.Status.COMPLETE,
        )
    )
