"""One validated distribution spec: what create checks, recurrence, resume and the estimate
check the same way (each test here once failed on a copy of a rule that had drifted)."""

from datetime import UTC, date, datetime, time, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

import pytest

from distributions.charging import credits_estimate
from distributions.models import Distribution
from distributions.series import series_create
from distributions.services import distribution_create, distribution_start
from projects.models import Project
from projects.services import project_change_stage
from tests.factories.credits import grant, set_default_rate
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory

pytestmark = pytest.mark.django_db
Stage = Project.Stage

EMAIL_BODY = '<p>Hi, <a href="${link}">the survey</a>. <a href="${opt_out_link}">Stop</a></p>'


def test_a_series_from_an_alphanumeric_sender_needs_an_opt_out_link(tenancy):
    """Its runs would all be refused by distribution_create: the series is refused now."""
    lifecycle = ProjectFactory(brand=tenancy.brand_a, kind=Project.Kind.LIFECYCLE)
    base = {
        "project": lifecycle,
        "frequency": "daily",
        "time_of_day": time(9, 0),
        "starts_on": date(2030, 1, 1),
        "now": datetime(2030, 1, 1, tzinfo=UTC),
        "sender": "ACME",
    }
    with pytest.raises(ValidationError) as refused:
        series_create(message="How was your day? ${link}", **base)
    assert "alphanumeric sender" in refused.value.message_dict["message"][0]
    # With the link it is accepted, like a single distribution from that sender.
    series = series_create(message="How was your day? ${link} Stop: ${opt_out_link}", **base)
    assert series.sender == "ACME"


def test_resume_rebuilds_a_missed_email_distribution_with_its_email_fields(
    tenancy, django_capture_on_commit_callbacks
):
    project = tenancy.project_a
    later = timezone.now() + timedelta(minutes=5)
    missed = distribution_create(
        project=project,
        channel="email",
        message=EMAIL_BODY,
        subject="Your opinion",
        text_body="Hi, the survey: ${link} Stop: ${opt_out_link}",
        from_name="Alpha team",
        reply_to="help@example.com",
        send_at=later,
    )
    project_change_stage(project=project, stage=Stage.PAUSED)
    Distribution.objects.filter(pk=missed.pk).update(send_at=timezone.now())
    distribution_start(distribution_id=missed.pk)
    missed.refresh_from_db()
    assert missed.status == Distribution.Status.FAILED

    with django_capture_on_commit_callbacks():
        project_change_stage(project=project, stage=Stage.ACTIVE, resend_missed=True)

    resent = Distribution.objects.exclude(pk=missed.pk).get()
    assert resent.channel == "email" and resent.status == Distribution.Status.SCHEDULED
    assert (resent.subject, resent.text_body) == (missed.subject, missed.text_body)
    assert (resent.from_name, resent.from_address, resent.reply_to) == (
        "Alpha team",
        missed.from_address,
        "help@example.com",
    )
    assert resent.message == missed.message


@pytest.mark.parametrize(
    ("stored", "piped"),
    [
        ("TeamName", "teamname"),  # case: the send matched it, the estimate did not
        ("Team  name", "team name"),  # inner spaces: conditions matched it, the send did not
    ],
)
def test_the_estimate_and_the_send_read_a_metadata_field_the_same_way(
    tenancy, eager_tasks, django_capture_on_commit_callbacks, stored, piped
):
    set_default_rate("1")
    grant(tenancy.brand_a, 100)
    project = tenancy.project_a
    tenancy.participant_a.delete()
    person = PersonFactory(brand=tenancy.brand_a, first_name="Jo", phone="+14155550150")
    ParticipantFactory(project=project, person=person, metadata={stored: "x" * 200})
    message = "Team: ${" + piped + "}"
    only_team = [{"criterion": "metadata", "field": piped, "operator": "is", "value": "x" * 200}]

    estimate = credits_estimate(project=project, message=message, conditions=only_team)
    with django_capture_on_commit_callbacks(execute=True):
        distribution = distribution_create(project=project, message=message, conditions=only_team)
    sent = distribution.messages.get()

    assert sent.body == "Team: " + "x" * 200  # the field's value, whatever its spelling
    assert (estimate["recipients"], estimate["segments"]) == (1, sent.segments) == (1, 2)
