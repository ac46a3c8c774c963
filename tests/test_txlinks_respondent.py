"""A transactional link on the respondent's side: it answers once, carries its transaction to
the response as embedded data, honours its expiry and the project's stage."""

from datetime import timedelta

from django.test import Client
from django.utils import timezone

import pytest

from projects.models import Project, Response, SurveyLink
from surveys.services import question_create

pytestmark = pytest.mark.django_db


def make_link(api, project, *, transaction_id="T-1", email="ana@example.com", **extra) -> dict:
    body = {
        "contact": {"email": email},
        "transaction": {"id": transaction_id, "data": {"venue": "Arena", "gate": 4}},
        "channel": "push",
        **extra,
    }
    answer = api.post(f"/api/v1/projects/{project.pk}/links/", body, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


@pytest.fixture
def score(tenancy):
    return question_create(project=tenancy.project_a, kind="rating", text="Score?", required=True)


def answer(client, path, score, value="9"):
    stamp = client.get(path).context["stamp"]
    return client.post(path, {score.field_name: value, "stamp": stamp})


def test_the_transaction_is_attached_to_the_response_as_trusted_embedded_data(
    api_a, tenancy, score
):
    made = make_link(api_a, tenancy.project_a)
    client = Client()
    path = f"/s/{made['token']}"

    posted = answer(client, f"{path}?venue=Forged&utm=x", score)

    assert posted.status_code == 302
    response = Response.objects.get(link_id=made["link_id"])
    assert response.embedded_data["venue"] == "Arena"  # the server's value wins
    assert response.embedded_data["gate"] == 4
    assert response.embedded_data["transaction_id"] == "T-1"
    assert response.embedded_data["utm"] == "x"
    assert response.untrusted_keys == ["utm"]
    assert response.participant_id == made["participant"]
    assert response.distribution_id == made["distribution"]
    link = SurveyLink.objects.get(pk=made["link_id"])
    assert link.opened_at and link.completed_at


def test_the_link_answers_once_then_says_thank_you(api_a, tenancy, score):
    made = make_link(api_a, tenancy.project_a)
    client = Client()
    path = f"/s/{made['token']}"
    answer(client, path, score)

    again = client.get(path)

    assert again.status_code == 200 and "Score?" not in again.content.decode()
    assert client.post(path, {score.field_name: "1"}).status_code == 409
    assert Response.objects.count() == 1


def test_each_transaction_of_one_person_answers_once(api_a, tenancy, score):
    first = make_link(api_a, tenancy.project_a, transaction_id="T-1")
    second = make_link(api_a, tenancy.project_a, transaction_id="T-2")
    assert first["participant"] == second["participant"]
    client = Client()
    answer(client, f"/s/{first['token']}", score)

    page = client.get(f"/s/{second['token']}")

    assert "Score?" in page.content.decode()
    assert answer(client, f"/s/{second['token']}", score).status_code == 302
    assert Response.objects.filter(participant_id=first["participant"]).count() == 2


def test_an_expired_link_shows_the_expired_page(api_a, tenancy, score):
    expires = (timezone.now() + timedelta(minutes=5)).isoformat()
    made = make_link(api_a, tenancy.project_a, expires_at=expires)
    SurveyLink.objects.filter(pk=made["link_id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    page = Client().get(f"/s/{made['token']}")

    assert "expired" in page.content.decode()
    assert "Score?" not in page.content.decode()


def test_a_paused_project_shows_the_closed_page(api_a, tenancy, score):
    made = make_link(api_a, tenancy.project_a)
    Project.objects.filter(pk=tenancy.project_a.pk).update(stage=Project.Stage.PAUSED)

    page = Client().get(f"/s/{made['token']}")

    assert "Score?" not in page.content.decode()
    assert page.context["reason"] == "paused"


def test_answers_through_a_push_link_are_counted_under_push_in_the_summary(
    api_a, tenancy, score, page_client_for
):
    """The response summary (chart and table) and the responses CSV name a transactional link's
    channel label, not "API"; a link made with the default label stays "API"."""
    import csv
    import io

    from django.urls import reverse

    for transaction_id, extra in (("T-1", {}), ("T-2", {}), ("T-3", {"channel": "api"})):
        made = make_link(api_a, tenancy.project_a, transaction_id=transaction_id, **extra)
        assert answer(Client(), f"/s/{made['token']}", score).status_code == 302

    page = page_client_for(tenancy.viewer_a).get(
        reverse("projects:responses", args=[tenancy.project_a.pk])
    )
    summary = page.context["summary"]
    table = {row["channel"]: (row["label"], row["complete"]) for row in summary["table"]}
    assert table == {"push": ("push", 2), "api": ("API", 1)}
    chart = {d["channel"]: (d["label"], sum(d["data"])) for d in summary["datasets"]}
    assert chart == {"push": ("push", 2), "api": ("API", 1)}

    exported = page_client_for(tenancy.viewer_a).get(
        reverse("projects:responses-csv", args=[tenancy.project_a.pk])
    )
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    channel = rows[0].index("Channel")
    assert sorted(row[channel] for row in rows[1:]) == ["api", "push", "push"]
