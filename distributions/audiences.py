"""Who a reminder targets (the SMS seed): the recipients of its invite who have not responded,
or, without an invite, every participant of the project who has not responded."""

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
    """Participants who completed the survey (a completed personal link)."""
    from projects.models import SurveyLink

    return SurveyLink.objects.filter(
        project_id=project_id, completed_at__isnull=False, participant_id__isnull=False
    ).values("participant_id")
