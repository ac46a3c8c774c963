"""Two submissions at the same instant (a double tap, a retried request): one is recorded, the
other refused. Real threads, real connections; meaningful on PostgreSQL (row locks), and on
SQLite the write lock serialises them the same way."""

import threading

from django.db import connection
from django.http import QueryDict
from django.utils import timezone

import pytest

from projects.models import Response
from surveys.answers import form_stamp
from surveys.services import (
    SubmitOutcome,
    anonymous_scope,
    link_scope,
    question_create,
    response_submit_anonymous,
    response_submit_link,
)
from tests.factories.projects import SurveyLinkFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def race(submit, count: int = 2) -> list[str]:
    barrier = threading.Barrier(count)
    outcomes: list[str] = []

    def run():
        try:
            barrier.wait()
            outcomes.append(submit().outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(outcomes)


def form(question, value) -> QueryDict:
    data = QueryDict(mutable=True)
    data[question.field_name] = value
    return data


def test_simultaneous_submits_of_one_personal_link(tenancy):
    project = tenancy.project_a
    score = question_create(project=project, kind="rating", text="Score?", required=True)
    link = SurveyLinkFactory(project=project, participant=tenancy.participant_a)
    stamp = form_stamp(link_scope(link.token), now=timezone.now())
    values = iter(["3", "8", "5"])
    outcomes = race(
        lambda: response_submit_link(token=link.token, data=form(score, next(values)), stamp=stamp),
        count=3,
    )
    assert outcomes == [SubmitOutcome.ANSWERED, SubmitOutcome.ANSWERED, SubmitOutcome.COMPLETE]
    response = Response.objects.get()
    link.refresh_from_db()
    assert link.completed_at == response.completed_at


def test_the_same_anonymous_form_posted_twice_at_once(tenancy):
    project = tenancy.project_a
    score = question_create(project=project, kind="rating", text="Score?")
    stamp = form_stamp(anonymous_scope(project), now=timezone.now())
    outcomes = race(
        lambda: response_submit_anonymous(project=project, data=form(score, "9"), stamp=stamp)
    )
    assert outcomes == [SubmitOutcome.ANSWERED, SubmitOutcome.COMPLETE]
    assert Response.objects.count() == 1
