"""The webhook events of the survey: ``link.opened`` and ``response.completed`` (built here,
delivered by ``webhooks``; see docs/webhooks.md)."""

from __future__ import annotations

from datetime import datetime

from participants.selectors import person_ids_of
from projects.models import Question, Response, SurveyLink
from projects.transactions import Transaction
from webhooks.events import brands_subscribed, events_raise, iso
from webhooks.models import EventType


def _link_facts(link) -> dict:
    label = ""
    if link.distribution_id:  # a transactional distribution's label (push, ...), else ""
        label = (
            SurveyLink.objects.filter(pk=link.pk)
            .values_list("distribution__label", flat=True)
            .get()
        )
    transaction_id = (
        Transaction.objects.filter(link_id=link.pk).values_list("external_id", flat=True).first()
        if label
        else None
    )
    return {
        "link_id": link.pk,
        "project_id": link.project_id,
        "distribution_id": link.distribution_id,
        "participant_id": link.participant_id,
        "person_id": person_ids_of([link.participant_id]).get(link.participant_id),
        "channel": label or link.channel,
        "transaction_id": transaction_id,
    }


def link_opened_raised(*, link: SurveyLink, at: datetime) -> int:
    """A personal link was opened for the first time."""

    def build():
        yield f"link:{link.pk}", {**_link_facts(link), "opened_at": iso(at)}

    return events_raise(
        brand_id=link.project.brand_id, event_type=EventType.LINK_OPENED, build=build, at=at
    )


def response_completed_raised(*, response: Response) -> int:
    """A response was recorded as complete (personal link, anonymous link or API)."""
    project = response.project

    def build():
        questions = {
            str(pk): (text, kind)
            for pk, text, kind in Question.objects.filter(project_id=project.pk).values_list(
                "pk", "text", "kind"
            )
        }
        answers = [
            {
                "question_id": int(key),
                "question": questions.get(key, ("", ""))[0],
                "kind": questions.get(key, ("", ""))[1],
                "value": value,
            }
            for key, value in (response.answers or {}).items()
        ]
        facts = (
            _link_facts(response.link)
            if response.link_id
            else {
                "link_id": None,
                "project_id": project.pk,
                "distribution_id": response.distribution_id,
                "participant_id": response.participant_id,
                "person_id": person_ids_of([response.participant_id]).get(response.participant_id),
                "channel": response.channel,
                "transaction_id": None,
            }
        )
        key = f"link:{response.link_id}" if response.link_id else f"response:{response.pk}"
        yield (
            key,
            {
                "response_id": response.pk,
                **facts,
                "status": response.status,
                "started_at": iso(response.started_at),
                "completed_at": iso(response.completed_at),
                "answers": answers,
                "embedded_data": response.embedded_data or {},
                "untrusted_keys": response.untrusted_keys or [],
            },
        )

    return events_raise(
        brand_id=project.brand_id,
        event_type=EventType.RESPONSE_COMPLETED,
        build=build,
        at=response.completed_at,
    )


def responses_completed_raised(*, responses: list[Response]) -> int:
    """``response_completed_raised`` for each of ``responses`` (a batch of two-way SMS
    conversations completes many at once): the brands that want the event are read once
    for them all, so a brand without an endpoint costs one query, not one per response."""
    if len(responses) == 1:
        return response_completed_raised(response=responses[0])
    wanted = brands_subscribed(
        event_type=EventType.RESPONSE_COMPLETED,
        brand_ids={response.project.brand_id for response in responses},
    )
    return sum(
        response_completed_raised(response=response)
        for response in responses
        if response.project.brand_id in wanted
    )
