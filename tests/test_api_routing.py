"""API paths answer with or without their trailing slash: no redirect a REST client trips on."""

import csv
import io

import pytest

from brands.roles import Role
from tests.factories.brands import ApiKeyFactory
from tests.factories.distributions import DistributionFactory


@pytest.mark.parametrize("slash", ["", "/"])
def test_list_and_create_answer_without_a_redirect(api_a, tenancy, slash):
    listed = api_a.get(f"/api/v1/projects{slash}")
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["results"]] == [tenancy.project_a.pk]

    created = api_a.post(
        f"/api/v1/projects{slash}", {"name": f"Pulse{slash}", "kind": "ad_hoc"}, format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["name"] == f"Pulse{slash}"


@pytest.mark.parametrize("path", ["history.csv", "history.csv/"])
def test_history_csv_is_served_at_its_documented_path(api_a, tenancy, path):
    distribution = DistributionFactory(project=tenancy.project_a)
    response = api_a.get(f"/api/v1/distributions/{distribution.pk}/{path}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode("utf-8").removeprefix("\ufeff")
    header = next(csv.reader(io.StringIO(body)))
    assert header[:4] == ["PersonID", "First name", "Last name", "Phone number"]


def test_plain_paths_answer_without_their_slash_too(api_client_for, tenancy):
    admin = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN))
    assert admin.get("/api/v1/credits/balance").status_code == 200
    assert admin.get("/api/v1/me").json()["brand"]["slug"] == "alpha"
    # An unknown path stays a 404, with or without the slash.
    assert admin.get("/api/v1/nothing-here").status_code == 404


def test_the_favicon_is_served_on_every_page_and_at_its_usual_address(client, tenancy):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("img/favicon.svg")
    client.force_login(tenancy.admin_a)
    page = client.get("/projects/").content.decode()
    assert 'rel="icon"' in page and "img/favicon.svg" in page
