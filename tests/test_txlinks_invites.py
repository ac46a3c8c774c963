"""Transactional links count as invites: per-distribution metrics and the transactions CSV."""

import csv
import io
from datetime import timedelta

from django.test import Client
from django.utils import timezone

import pytest

from projects.models import SurveyLink
from surveys.services import question_create
from tests.factories.distributions import DistributionFactory

pytestmark = pytest.mark.django_db


def make(api, project, number: int, **extra) -> dict:
    body = {
        "contact": {"person_id": f"P-{number}", "email": f"p{number}@example.com"},
        "transaction": {"id": f"T-{number}", "data": {"gate": number, "venue": "Arena"}},
        "channel": "push",
        **extra,
    }
    answer = api.post(f"/api/v1/projects/{project.pk}/links/", body, format="json")
    assert answer.status_code == 201, answer.json()
    return answer.json()


@pytest.fixture
def invites(api_a, tenancy):
    project = tenancy.project_a
    score = question_create(project=project, kind="rating", text="Score?", required=True)
    made = [make(api_a, project, n) for n in range(4)]
    client = Client()
    client.get(f"/s/{made[0]['token']}")  # opened only
    path = f"/s/{made[1]['token']}"  # completed
    stamp = client.get(path).context["stamp"]
    assert client.post(path, {score.field_name: "7", "stamp": stamp}).status_code == 302
    SurveyLink.objects.filter(pk=made[2]["link_id"]).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    return made


def test_invite_metrics_of_a_transactional_distribution(api_a, invites):
    distribution = invites[0]["distribution"]

    answer = api_a.get(f"/api/v1/distributions/{distribution}/invites/")

    assert answer.status_code == 200
    assert answer.json() == {
        "distribution": distribution,
        "label": "push",
        "created": 4,
        "opened": 2,
        "started": 1,
        "completed": 1,
        "expired": 1,
    }


def test_the_transactions_csv_lists_each_transaction(api_a, invites):
    distribution = invites[0]["distribution"]

    answer = api_a.get(f"/api/v1/distributions/{distribution}/transactions.csv?delimiter=semicolon")

    assert answer.status_code == 200
    text = b"".join(answer.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert rows[0][:3] == ["Transaction ID", "Occurred at", "PersonID"]
    body = rows[1:]
    assert [row[0] for row in body] == ["T-0", "T-1", "T-2", "T-3"]
    assert [row[9] for row in body] == ["Opened", "Completed", "Expired", "Created"]
    assert [row[8] for row in body] == ["No", "Yes", "No", "No"]
    assert body[1][2] == "P-1" and body[1][10].endswith(invites[1]["token"])
    assert '"gate": 1' in body[1][15]


def test_another_brand_or_a_plain_distribution_answers_404(api_a, api_client_for, tenancy):
    plain = DistributionFactory(project=tenancy.project_a)
    assert api_a.get(f"/api/v1/distributions/{plain.pk}/invites/").status_code == 404
    other = DistributionFactory(project=tenancy.project_b)
    assert api_a.get(f"/api/v1/distributions/{other.pk}/transactions.csv").status_code == 404


def test_another_brand_cannot_read_these_invites(api_client_for, tenancy, invites):
    outsider = api_client_for(user=tenancy.admin_b)
    distribution = invites[0]["distribution"]
    assert outsider.get(f"/api/v1/distributions/{distribution}/invites/").status_code == 404
    assert outsider.get(f"/api/v1/distributions/{distribution}/transactions.csv").status_code == 404


def test_a_viewer_reads_the_metrics(api_client_for, tenancy, invites):
    viewer = api_client_for(user=tenancy.viewer_a)
    answer = viewer.get(f"/api/v1/distributions/{invites[0]['distribution']}/invites/")
    assert answer.status_code == 200
