"""The survey loop through the REST API: questions, responses, links, QR code, stage options.
Every endpoint is checked against the other brand's data."""

import csv
import io
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.roles import Role
from projects.models import Project, Question, Response, SurveyLink
from tests.conftest import make_api_client
from tests.factories.brands import ApiKeyFactory
from tests.factories.participants import ParticipantFactory
from tests.factories.projects import QuestionFactory, ResponseFactory, SurveyLinkFactory

pytestmark = pytest.mark.django_db


def read_csv(response) -> list[list[str]]:
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text)))


def test_questions_crud_and_reorder(tenancy, api_a):
    project = tenancy.project_a
    url = reverse("api:question-list", args=[project.pk])
    rating = api_a.post(url, {"kind": "rating", "text": "Score?", "required": True}, format="json")
    assert rating.status_code == 201 and rating.json()["position"] == 1
    bad = api_a.post(url, {"kind": "single", "text": "Team?", "choices": ["Red"]}, format="json")
    assert bad.status_code == 400
    assert "at least two" in bad.json()["error"]["fields"]["choices"]
    unknown = api_a.post(url, {"kind": "text", "text": "Why?", "colour": 1}, format="json")
    assert unknown.json()["error"]["fields"] == {"colour": "Unknown field."}
    single = api_a.post(
        url, {"kind": "single", "text": "Team?", "choices": ["Red", "Blue"]}, format="json"
    ).json()
    listed = api_a.get(url).json()
    assert [q["text"] for q in listed] == ["Score?", "Team?"]

    detail = reverse("api:question-detail", args=[project.pk, single["id"]])
    patched = api_a.patch(detail, {"text": "Which team?"}, format="json")
    assert patched.status_code == 200 and patched.json()["choices"] == ["Red", "Blue"]
    order = [single["id"], rating.json()["id"]]
    reordered = api_a.post(
        reverse("api:question-reorder", args=[project.pk]), {"order": order}, format="json"
    )
    assert [q["id"] for q in reordered.json()] == order
    assert api_a.delete(detail).status_code == 204
    assert Question.objects.filter(project=project).count() == 1

    foreign = QuestionFactory(project=tenancy.project_b)
    assert api_a.get(reverse("api:question-list", args=[tenancy.project_b.pk])).status_code == 404
    cross = reverse("api:question-detail", args=[project.pk, foreign.pk])
    assert api_a.patch(cross, {"text": "x"}, format="json").status_code == 404


def test_viewers_read_but_do_not_write_questions(tenancy):
    viewer = make_api_client(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.VIEWER))
    url = reverse("api:question-list", args=[tenancy.project_a.pk])
    assert viewer.get(url).status_code == 200
    assert viewer.post(url, {"kind": "text", "text": "x"}, format="json").status_code == 403


def test_responses_created_listed_and_exported(tenancy, api_a):
    project = tenancy.project_a
    score = QuestionFactory(project=project, kind="rating", text="Score?", required=True)
    perks = QuestionFactory(
        project=project, kind="multiple", text="Perks?", choices=["Gym", "Food"]
    )
    url = reverse("api:response-list", args=[project.pk])
    out_of_range = api_a.post(url, {"answers": {str(score.pk): 11}}, format="json")
    assert out_of_range.status_code == 400
    assert "from 0 to 10" in out_of_range.json()["error"]["fields"]["answers"][str(score.pk)]
    not_an_id = api_a.post(url, {"answers": {"score": 3}}, format="json")
    assert "is not a question id" in not_an_id.json()["error"]["fields"]["answers"]
    foreign = api_a.post(
        url,
        {"answers": {str(score.pk): 3}, "participant": tenancy.participant_b.pk},
        format="json",
    )
    assert foreign.status_code == 404
    assert not Response.objects.exists()

    created = api_a.post(
        url,
        {
            "answers": {str(score.pk): 8, str(perks.pk): ["Food"]},
            "participant": tenancy.participant_a.pk,
            "embedded_data": {"order_id": "A-1"},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["channel"] == "api" and body["status"] == "complete"
    assert body["embedded_data"] == {"order_id": "A-1"} and body["untrusted_keys"] == []
    ResponseFactory(project=project, channel="qr", answers={str(score.pk): 2})
    ResponseFactory(project=tenancy.project_b)

    listed = api_a.get(url).json()["results"]
    assert len(listed) == 2
    assert [r["channel"] for r in api_a.get(url, {"channel": "qr"}).json()["results"]] == ["qr"]
    detail = reverse("api:response-detail", args=[project.pk, body["id"]])
    assert api_a.get(detail).json()["participant"] == tenancy.participant_a.pk

    rows = read_csv(api_a.get(reverse("api:response-csv", args=[project.pk])))
    assert rows[0][-4:] == ["Q1. Score?", "Q2. Perks?", "Embedded data", "Untrusted fields"]
    api_row = next(row for row in rows[1:] if row[2] == "api")
    assert api_row[5] == tenancy.participant_a.person.person_id
    assert api_row[-4:] == ["8", "Food", '{"order_id": "A-1"}', ""]
    semicolon = read_csv(
        api_a.get(reverse("api:response-csv", args=[project.pk]), {"delimiter": "semicolon"})
    )
    assert len(semicolon) == 3
    bad = api_a.get(reverse("api:response-csv", args=[project.pk]), {"delimiter": "space"})
    assert bad.status_code == 400


def test_api_responses_are_refused_while_the_project_is_paused(tenancy, api_a):
    project = tenancy.project_a
    Project.objects.filter(pk=project.pk).update(stage=Project.Stage.PAUSED)
    url = reverse("api:response-list", args=[project.pk])
    refused = api_a.post(url, {"answers": {}}, format="json")
    assert refused.status_code == 400 and "Paused" in refused.json()["error"]["message"]


def test_personal_links_generated_listed_and_exported(tenancy, api_a):
    project = tenancy.project_a
    second = ParticipantFactory(project=project)
    url = reverse("api:link-list", args=[project.pk])
    expires = timezone.now() + timedelta(days=30)
    created = api_a.post(url, {"expires_at": expires.isoformat()}, format="json")
    assert created.status_code == 201
    links = created.json()
    assert sorted(link["participant"] for link in links) == sorted(
        [tenancy.participant_a.pk, second.pk]
    )
    assert all(link["url"].endswith("/s/" + link["token"]) for link in links)
    assert all(len(link["token"]) == 10 and link["channel"] == "email" for link in links)

    one = api_a.post(url, {"participants": [second.pk], "channel": "api"}, format="json")
    assert one.status_code == 201 and len(one.json()) == 1
    foreign = api_a.post(url, {"participants": [tenancy.participant_b.pk]}, format="json")
    assert foreign.status_code == 400
    assert str(tenancy.participant_b.pk) in foreign.json()["error"]["fields"]["participants"]
    past = api_a.post(url, {"expires_at": "2001-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and "expires_at" in past.json()["error"]["fields"]
    SurveyLinkFactory(project=tenancy.project_b)

    assert api_a.get(url).json()["count"] == 3
    assert api_a.get(url, {"channel": "api"}).json()["count"] == 1
    rows = read_csv(api_a.get(reverse("api:link-csv", args=[project.pk]), {"channel": "email"}))
    assert rows[0][:7] == [
        "PersonID",
        "First name",
        "Last name",
        "Email",
        "Phone number",
        "User name",
        "Link",
    ]
    assert len(rows) == 3
    tokens = {link.url for link in SurveyLink.objects.filter(project=project, channel="email")}
    assert {row[6] for row in rows[1:]} == tokens
    assert api_a.get(reverse("api:link-list", args=[tenancy.project_b.pk])).status_code == 404


def test_anonymous_link_settings_and_qr_code(tenancy, api_a):
    project = tenancy.project_a
    detail = reverse("api:project-detail", args=[project.pk])
    body = api_a.get(detail).json()
    assert body["anonymous_url"].endswith(f"/a/{project.public_token}")
    assert body["by_invitation_only"] is False
    assert api_a.patch(detail, {"by_invitation_only": True}, format="json").status_code == 200
    project.refresh_from_db()
    assert project.by_invitation_only is True
    refused = api_a.patch(detail, {"public_token": "guess"}, format="json")
    assert refused.status_code == 400

    png = api_a.get(reverse("api:project-qr", args=[project.pk, "png"]))
    assert png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    assert "attachment" in png["Content-Disposition"]
    svg = api_a.get(reverse("api:project-qr", args=[project.pk, "svg"]))
    assert svg["Content-Type"] == "image/svg+xml" and svg.content.startswith(b"<svg")
    assert api_a.get(f"/api/v1/projects/{project.pk}/qr.gif").status_code == 404
    other = reverse("api:project-qr", args=[tenancy.project_b.pk, "png"])
    assert api_a.get(other).status_code == 404


def test_stage_api_takes_the_pause_dialogs_choices(tenancy, api_a):
    project = tenancy.project_a
    url = reverse("api:project-stage", args=[project.pk])
    paused = api_a.post(
        url,
        {"stage": "paused", "let_in_progress_finish": False, "keep_partial_responses": False},
        format="json",
    )
    assert paused.status_code == 200
    project.refresh_from_db()
    assert project.collection_stopped_at is not None
    assert not project.stop_lets_in_progress_finish and not project.stop_keeps_partial_responses
    assert api_a.post(url, {"stage": "active"}, format="json").status_code == 200
    project.refresh_from_db()
    assert project.collection_stopped_at is None and project.stop_keeps_partial_responses
