"""Receivers of the lower apps' hooks (registered in ``DistributionsConfig.ready``)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from distributions.links_services import message_mark_opened
from distributions.services import distributions_resend_missed
from distributions.tasks import distribution_on_completion_task
from projects.models import Project, Response, SurveyLink


def on_project_resumed(
    *, project: Project, paused_since: datetime, resend_missed: bool, actor
) -> None:
    """A paused project is active again: resend, when asked, what failed meanwhile."""
    if resend_missed:
        distributions_resend_missed(project=project, since=paused_since, actor=actor)


def on_link_opened(*, link: SurveyLink, at: datetime) -> None:
    """A personal link was opened: the recipient row that carried it is Opened."""
    if link.message_id:
        message_mark_opened(message_id=link.message_id, at=at)


def on_response_completed(*, responses: list[Response]) -> None:
    """Responses are complete: thank-you emails triggered by completion, after commit, one
    task for them all (a recipient's: an anonymous response has nobody to thank)."""
    response_ids = [response.pk for response in responses if response.participant_id]
    if response_ids:
        transaction.on_commit(lambda: distribution_on_completion_task.delay(response_ids))
