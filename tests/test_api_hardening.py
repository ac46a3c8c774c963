"""Issue 18, the API's contract: every documented input works, every bad one answers 4xx in the
error shape naming the field, nothing answers 5xx and nothing is half-written."""

from __future__ import annotations

from django.urls import reverse

import pytest

from projects.models import Project

pytestmark = pytest.mark.django_db


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    return response.json()["error"]


def test_project_create_takes_by_invitation_only_as_documented(tenancy, api_a):
    url = reverse("api:project-list")
    created = api_a.post(url, {"name": "Invited", "by_invitation_only": True}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["by_invitation_only"] is True
    assert Project.objects.get(pk=created.json()["id"]).by_invitation_only is True
    default = api_a.post(url, {"name": "Open"}, format="json")
    assert default.json()["by_invitation_only"] is False
    refused = api_a.post(url, {"name": "x", "by_invitation_only": "perhaps"}, format="json")
    assert "by_invitation_only" in _error(refused, 400)["fields"]


@pytest.mark.parametrize(
    "params,fields",
    [
        ({"enclosure": "AAA"}, {"enclosure"}),
        ({"delimiter": ";;"}, {"delimiter"}),
        ({"delimiter": "colon", "enclosure": "'"}, {"delimiter", "enclosure"}),
    ],
)
def test_every_csv_download_refuses_unknown_options_naming_them(tenancy, api_a, params, fields):
    from tests.factories.distributions import DistributionFactory

    project = tenancy.project_a
    distribution = DistributionFactory(project=project)
    for url in (
        f"/api/v1/distributions/{distribution.pk}/history.csv",
        f"/api/v1/projects/{project.pk}/responses.csv",
        f"/api/v1/projects/{project.pk}/links.csv",
    ):
        error = _error(api_a.get(url, params), 400)
        assert set(error["fields"]) == fields, url
        assert "comma" in error["fields"].get("delimiter", "comma")
        assert "double" in error["fields"].get("enclosure", "double")
    good = api_a.get(f"/api/v1/distributions/{distribution.pk}/history.csv", {"enclosure": "none"})
    assert good.status_code == 200
