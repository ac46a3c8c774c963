"""The project pages of the survey loop: editor, links and QR code, summary, pause and resume,
recurring messages. Roles and the other brand are checked on each."""

import csv
import io
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

import pytest

from distributions.models import Distribution, DistributionSeries
from distributions.services import distribution_create, distribution_start
from projects.models import Project, Question, SurveyLink
from projects.services import project_change_stage
from surveys.services import question_create
from tests.factories.participants import ParticipantFactory
from tests.factories.projects import ProjectFactory, ResponseFactory

pytestmark = pytest.mark.django_db
Stage = Project.Stage


def url(name, project, *args):
    return reverse(f"projects:{name}", args=[project.pk, *args])


def read_csv(response) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


def test_survey_editor_adds_edits_moves_and_deletes(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    project = tenancy.project_a
    added = client.post(
        url("survey", project),
        {
            "new-kind": "single",
            "new-text": "Team?",
            "new-choices": "Red\nBlue\n",
            "new-required": "on",
        },
    )
    assert added.status_code == 302
    team = Question.objects.get()
    assert (team.choices, team.required) == (["Red", "Blue"], True)
    refused = client.post(url("survey", project), {"new-kind": "single", "new-text": "Pick"})
    assert refused.status_code == 400 and b"at least two" in refused.content
    question_create(project=project, kind="rating", text="Score?")

    page = client.get(url("survey", project))
    assert (
        page.status_code == 200 and b"Score?" in page.content and b"Add a question" in page.content
    )
    client.post(url("question", project, team.pk), {"action": "down"})
    assert list(project.questions.values_list("text", flat=True)) == ["Score?", "Team?"]
    client.post(
        url("question", project, team.pk),
        {
            "action": "save",
            f"q{team.pk}-kind": "multiple",
            f"q{team.pk}-text": "Teams?",
            f"q{team.pk}-choices": "Red\nBlue\nGreen",
        },
    )
    team.refresh_from_db()
    assert (team.kind, team.text, team.choices, team.required) == (
        "multiple",
        "Teams?",
        ["Red", "Blue", "Green"],
        False,
    )
    client.post(url("question", project, team.pk), {"action": "delete"})
    assert list(project.questions.values_list("text", flat=True)) == ["Score?"]


def test_viewers_and_other_brands_cannot_edit_the_survey(tenancy, page_client_for, client):
    viewer = page_client_for(tenancy.viewer_a)
    project = tenancy.project_a
    assert viewer.get(url("survey", project)).status_code == 200
    assert b"Add a question" not in viewer.get(url("survey", project)).content
    assert (
        viewer.post(url("survey", project), {"new-kind": "text", "new-text": "x"}).status_code
        == 403
    )
    client.force_login(tenancy.admin_b)
    for name in ("survey", "links", "responses", "pause", "series"):
        assert client.get(url(name, project)).status_code == 404, name
    assert client.get(url("qr", project, "png")).status_code == 404
    assert not Question.objects.exists()


def test_links_page_qr_code_and_invitation_only(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    project = tenancy.project_a
    page = client.get(url("links", project))
    assert project.anonymous_url.encode() in page.content
    png = client.get(url("qr", project, "png") + "?download=1")
    assert png.content.startswith(b"\x89PNG") and "attachment" in png["Content-Disposition"]
    svg = client.get(url("qr", project, "svg"))
    assert svg.content.startswith(b"<svg") and not svg.has_header("Content-Disposition")

    client.post(url("links", project), {"by_invitation_only": "on"})
    project.refresh_from_db()
    assert project.by_invitation_only
    assert b"disabled" in client.get(url("links", project)).content
    client.post(url("links", project), {})
    project.refresh_from_db()
    assert not project.by_invitation_only


def test_personal_links_are_generated_and_downloaded_as_csv(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    project = tenancy.project_a
    manager = ParticipantFactory(project=project, role="Manager")
    response = client.post(url("links-generate", project), {"role": "manager", "channel": "email"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = read_csv(response)
    link = SurveyLink.objects.get()
    assert link.participant == manager and link.channel == "email"
    assert rows[1][0] == manager.person.person_id and rows[1][6] == link.url
    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    refused = client.post(url("links-generate", project), {"channel": "email", "expires_at": past})
    assert refused.status_code == 400 and b"Must be in the future" in refused.content
    assert SurveyLink.objects.count() == 1
    assert len(read_csv(client.get(url("links-csv", project)))) == 2
    assert client.get(url("links-generate", project)).status_code == 405


def test_summary_page_live_fragment_and_csv(tenancy, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    project = tenancy.project_a
    score = question_create(project=project, kind="rating", text="Score?")
    ResponseFactory(project=project, participant=tenancy.participant_a, answers={str(score.pk): 7})
    ResponseFactory(project=project, channel="qr")
    ResponseFactory(project=project, channel="qr", status="partial")
    ResponseFactory(project=tenancy.project_b, channel="email")
    page = client.get(url("responses", project))
    html = page.content.decode()
    assert page.status_code == 200 and "vendor/chart.umd.min.js" in html
    assert 'hx-trigger="every 10s"' in html
    assert 'data-metric="total">2<' in html and 'data-metric="respondents">1<' in html
    summary = page.context["summary"]
    assert [d["channel"] for d in summary["datasets"]] == ["qr", "sms"]
    assert sum(summary["datasets"][0]["data"]) == 1 and len(summary["labels"]) == 30
    assert "Email" not in [row["label"] for row in summary["table"]]
    live = client.get(url("responses-live", project))
    assert b"<html" not in live.content and b"responses-chart-data" in live.content
    rows = read_csv(client.get(url("responses-csv", project)))
    assert len(rows) == 4 and rows[0][-3] == "Q1. Score?"
    assert len(read_csv(client.get(url("responses-csv", project) + "?status=partial"))) == 2


def test_pause_dialog_then_resume_sends_what_was_missed(
    tenancy, page_client_for, django_capture_on_commit_callbacks
):
    client = page_client_for(tenancy.project_admin_a)
    project = tenancy.project_a
    later = timezone.now() + timedelta(minutes=5)
    invite = distribution_create(project=project, message="Hi ${link}", send_at=later)
    reminder = distribution_create(
        project=project,
        message="Again ${link}",
        kind="reminder",
        parent=invite,
        send_at=later + timedelta(days=2),
    )

    # The Pause button opens the dialog.
    overview = client.get(reverse("projects:detail", args=[project.pk])).content.decode()
    assert f'href="{url("pause", project)}"' in overview
    dialog = client.get(url("pause", project))
    assert b"Respondents in the middle of the survey" in dialog.content
    client.post(
        url("pause", project), {"in_progress": "close", "partial": "discard", "reason": "fix Q2"}
    )
    project.refresh_from_db()
    assert project.stage == Stage.PAUSED and project.stage_changes.first().reason == "fix Q2"
    assert not project.stop_lets_in_progress_finish and not project.stop_keeps_partial_responses

    # The invite falls due while paused: it fails, nothing is sent (the engine's rule).
    Distribution.objects.filter(pk=invite.pk).update(send_at=timezone.now())
    distribution_start(distribution_id=invite.pk)
    invite.refresh_from_db()
    assert invite.status == Distribution.Status.FAILED and not invite.messages.exists()

    overview = client.get(reverse("projects:detail", args=[project.pk])).content.decode()
    assert f'href="{url("resume", project)}"' in overview
    resume = client.get(url("resume", project))
    assert str(invite).encode() in resume.content
    with django_capture_on_commit_callbacks() as callbacks:
        client.post(url("resume", project), {"resend_missed": "on"})
    project.refresh_from_db()
    assert project.stage == Stage.ACTIVE and project.collection_stopped_at is None
    resent = Distribution.objects.exclude(pk__in=[invite.pk, reminder.pk]).get()
    assert (resent.kind, resent.message, resent.status) == ("invite", invite.message, "scheduled")
    assert resent.send_at <= timezone.now() and "(resent after pause)" in resent.name
    assert callbacks  # its start is queued once the transaction commits
    reminder.refresh_from_db()
    assert reminder.parent == resent  # the reminder now follows the invite that is sent


def test_resume_without_resending_leaves_missed_distributions_failed(tenancy):
    project = tenancy.project_a
    invite = distribution_create(
        project=project, message="Hi", send_at=timezone.now() + timedelta(minutes=5)
    )
    project_change_stage(project=project, stage=Stage.PAUSED)
    Distribution.objects.filter(pk=invite.pk).update(send_at=timezone.now())
    distribution_start(distribution_id=invite.pk)
    project_change_stage(project=project, stage=Stage.ACTIVE, resend_missed=False)
    assert Distribution.objects.count() == 1


def test_recurring_messages_page(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    project = ProjectFactory(brand=tenancy.brand_a, kind=Project.Kind.LIFECYCLE)
    assert (
        b"Recurring messages" in client.get(reverse("projects:detail", args=[project.pk])).content
    )
    created = client.post(
        url("series", project),
        {
            "message": "Weekly pulse ${link}",
            "frequency": "weekly",
            "weekdays": ["0", "3"],
            "time_of_day": "09:30",
            "starts_on": "2030-01-01",
        },
    )
    assert created.status_code == 302
    series = DistributionSeries.objects.get()
    assert series.weekdays == [0, 3] and series.status == "active"
    bad = client.post(
        url("series", project),
        {"message": "x", "frequency": "weekly", "time_of_day": "09:30", "starts_on": "2030-01-01"},
    )
    assert bad.status_code == 400 and b"at least one day" in bad.content
    client.post(url("series-action", project, series.pk, "pause"))
    series.refresh_from_db()
    assert series.status == "paused"
    client.post(url("series-action", project, series.pk, "end"))
    series.refresh_from_db()
    assert series.status == "ended"
    page = client.get(url("series", project))
    assert b"Ended" in page.content
    engagement = tenancy.project_a
    assert (
        b"Recurring messages"
        not in client.get(reverse("projects:detail", args=[engagement.pk])).content
    )
