"""Expiring invite links (docs/policies.md): the project's default and the distribution's
own number of days; a reminder shares its invite's links; an expired link shows a clear page;
the links CSV's Expires column."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

import pytest

from distributions.models import Distribution, Message
from distributions.services import distribution_create
from projects.models import SurveyLink
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tenancy):
    project = tenancy.project_a
    project.stage = "active"
    project.link_expiry_days = 3
    project.save()
    tenancy.participant_a.delete()
    for index in range(2):
        person = PersonFactory(brand=project.brand, phone=f"+1415555020{index}")
        ParticipantFactory(project=project, person=person)
    return project


def send(project, django_capture_on_commit_callbacks, **kwargs) -> Distribution:
    with django_capture_on_commit_callbacks(execute=True):
        distribution = distribution_create(
            project=project, message="Hi ${first_name}: ${link}", **kwargs
        )
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT, distribution.status_reason
    return distribution


def test_invite_links_expire_after_the_projects_or_the_distributions_days(
    project, eager_tasks, django_capture_on_commit_callbacks
):
    invite = send(project, django_capture_on_commit_callbacks)
    expiries = set(
        SurveyLink.objects.filter(distribution=invite).values_list("expires_at", flat=True)
    )
    assert expiries == {invite.started_at + timedelta(days=3)}
    own = send(project, django_capture_on_commit_callbacks, link_expiry_days=10)
    expiries = set(SurveyLink.objects.filter(distribution=own).values_list("expires_at", flat=True))
    assert expiries == {own.started_at + timedelta(days=10)}


def test_a_reminder_shares_its_invites_links(
    project, eager_tasks, django_capture_on_commit_callbacks
):
    invite = send(project, django_capture_on_commit_callbacks)
    reminder = send(project, django_capture_on_commit_callbacks, kind="reminder", parent=invite)
    assert not SurveyLink.objects.filter(distribution=reminder).exists()
    by_participant = {
        link.participant_id: link.url for link in SurveyLink.objects.filter(distribution=invite)
    }
    bodies = Message.objects.filter(distribution=reminder, status__in=Message.HANDED_OVER)
    assert bodies.count() == 2
    for row in bodies:
        assert by_participant[row.participant_id] in row.body


def test_an_expired_link_shows_a_clear_page_and_the_csv_says_when(
    project, eager_tasks, django_capture_on_commit_callbacks, client, page_client_for, tenancy
):
    invite = send(project, django_capture_on_commit_callbacks)
    link = SurveyLink.objects.filter(distribution=invite).first()
    SurveyLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    page = client.get(reverse("survey:personal", args=[link.token]))
    assert b"expired" in page.content.lower()
    csv = page_client_for(tenancy.admin_a).get(reverse("projects:links-csv", args=[project.pk]))
    text = b"".join(csv.streaming_content).decode("utf-8-sig")
    import csv as csvlib

    header, *rows = list(csvlib.reader(text.lstrip("\ufeff").splitlines()))
    expires = header.index("Expires")
    assert all(row[expires] for row in rows)


def test_bad_expiry_is_refused_naming_the_field(tenancy, api_a, project):
    body = {"project": project.pk, "message": "Hi ${link}", "link_expiry_days": 0}
    answer = api_a.post("/api/v1/distributions/", body, format="json")
    assert answer.status_code == 400
    assert "link_expiry_days" in answer.json()["error"]["fields"]
