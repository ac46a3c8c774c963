"""Reminders (the SMS seed): after an invite, its recipients who have not responded; from the
project, every participant who has not responded. Related distributions both ways."""

from django.urls import reverse

import pytest

from distributions.audiences import recipients_queryset
from distributions.models import Distribution, Message
from distributions.services import distribution_create
from projects.models import Response
from surveys.respondents import respondent_participant_ids
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory, ResponseFactory

pytestmark = pytest.mark.django_db
S = Message.Status


def add(project, first, phone):
    person = PersonFactory(brand=project.brand, first_name=first, phone=phone)
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def sent_invite(tenancy, eager_tasks, django_capture_on_commit_callbacks):
    """An invite delivered through the outbox to Ada, Bob and Cy (Nemo has no phone)."""
    project = tenancy.project_a
    tenancy.participant_a.delete()
    people = {
        "ada": add(project, "Ada", "+14155550101"),
        "bob": add(project, "Bob", "+14155550102"),
        "cy": add(project, "Cy", "+14155550103"),
        "nemo": add(project, "Nemo", ""),
    }
    with django_capture_on_commit_callbacks(execute=True):
        invite = distribution_create(project=project, message="Hi ${first_name}: ${link}")
    invite.refresh_from_db()
    assert invite.status == Distribution.Status.SENT
    return invite, people


def names(queryset):
    return sorted(queryset.values_list("person__first_name", flat=True))


def test_respondents_are_participants_with_a_complete_response(tenancy, sent_invite):
    invite, people = sent_invite
    project = invite.project
    ResponseFactory(project=project, participant=people["ada"])
    ResponseFactory(project=project, participant=people["bob"], status=Response.Status.PARTIAL)
    ResponseFactory(project=project, participant=None, channel="anonymous")
    ResponseFactory(project=tenancy.project_b, participant=tenancy.participant_b)
    assert [row["participant_id"] for row in respondent_participant_ids(project.pk)] == [
        people["ada"].pk
    ]


def test_invite_reminder_targets_its_recipients_who_have_not_responded(tenancy, sent_invite):
    invite, people = sent_invite
    project = invite.project
    ResponseFactory(project=project, participant=people["ada"], distribution=invite)
    late = add(project, "Late", "+14155550104")  # joined after the invite
    invite_reminder = DistributionFactory(project=project, kind="reminder", parent=invite)
    project_reminder = DistributionFactory(project=project, kind="reminder")
    assert names(recipients_queryset(invite_reminder)) == ["Bob", "Cy"]
    # Nemo was never reached by the invite (no phone), yet has not responded either.
    assert names(recipients_queryset(project_reminder)) == ["Bob", "Cy", "Late", "Nemo"]
    assert late.person.first_name == "Late"


def test_reminder_sent_through_the_api_reaches_exactly_the_non_respondents(
    tenancy, sent_invite, api_a, django_capture_on_commit_callbacks
):
    invite, people = sent_invite
    project = invite.project
    ResponseFactory(project=project, participant=people["bob"], distribution=invite)
    url = reverse("api:reminder-list", args=[project.pk])
    with django_capture_on_commit_callbacks(execute=True):
        created = api_a.post(
            url, {"invite": invite.pk, "message": "Reminder: ${link}"}, format="json"
        )
    assert created.status_code == 201, created.json()
    reminder = Distribution.objects.get(pk=created.json()["id"])
    assert (reminder.kind, reminder.parent, reminder.channel) == ("reminder", invite, "sms")
    reached = reminder.messages.filter(status__in=Message.HANDED_OVER)
    assert sorted(m.person.first_name for m in reached) == ["Ada", "Cy"]

    detail = api_a.get(reverse("api:distribution-detail", args=[invite.pk])).json()
    assert [r["id"] for r in detail["related"]] == [reminder.pk]
    detail = api_a.get(reverse("api:distribution-detail", args=[reminder.pk])).json()
    assert [r["id"] for r in detail["related"]] == [invite.pk]
    listed = api_a.get(url).json()["results"]
    assert [(r["id"], r["parent"]) for r in listed] == [(reminder.pk, invite.pk)]


def test_project_reminder_through_the_api_targets_every_non_respondent(
    tenancy, sent_invite, api_a, django_capture_on_commit_callbacks
):
    invite, people = sent_invite
    project = invite.project
    ResponseFactory(project=project, participant=people["ada"], distribution=invite)
    add(project, "Dee", "+14155550105")
    with django_capture_on_commit_callbacks(execute=True):
        created = api_a.post(
            reverse("api:reminder-list", args=[project.pk]),
            {"message": "Last call ${link}"},
            format="json",
        )
    assert created.status_code == 201
    reminder = Distribution.objects.get(pk=created.json()["id"])
    assert reminder.parent is None
    rows = {m.person.first_name: m.status for m in reminder.messages.select_related("person")}
    assert rows == {"Bob": S.DELIVERED, "Cy": S.DELIVERED, "Dee": S.DELIVERED, "Nemo": S.SKIPPED}


def test_a_reminder_on_another_projects_or_brands_invite_is_refused(tenancy, sent_invite, api_a):
    invite, _ = sent_invite
    other_project = ProjectFactory(brand=tenancy.brand_a)
    url = reverse("api:reminder-list", args=[other_project.pk])
    refused = api_a.post(url, {"invite": invite.pk, "message": "Hi"}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["parent"] == "The invite belongs to another project."

    foreign = DistributionFactory(project=tenancy.project_b)
    url = reverse("api:reminder-list", args=[invite.project.pk])
    hidden = api_a.post(url, {"invite": foreign.pk, "message": "Hi"}, format="json")
    assert hidden.status_code == 404
    missing = api_a.post(url, {"invite": 999999, "message": "Hi"}, format="json")
    assert missing.status_code == 404 and missing.json() == hidden.json()
    not_an_invite = DistributionFactory(project=invite.project, kind="reminder", parent=invite)
    refused = api_a.post(url, {"invite": not_an_invite.pk, "message": "Hi"}, format="json")
    assert refused.json()["error"]["fields"]["parent"] == "A reminder follows an invite."
    foreign_project = reverse("api:reminder-list", args=[tenancy.project_b.pk])
    assert api_a.post(foreign_project, {"message": "Hi"}, format="json").status_code == 404
    assert Distribution.objects.filter(kind="reminder").count() == 1  # only not_an_invite
