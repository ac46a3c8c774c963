"""What each role may and may not do, on pages and in the API alike."""

from django.urls import reverse

import pytest

from brands.roles import Role
from tests.factories.brands import ApiKeyFactory

pytestmark = pytest.mark.django_db

ROLES = [Role.VIEWER, Role.PROJECT_ADMIN, Role.BRAND_ADMIN]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("auth", ["session", "api_key"])
def test_api_role_matrix(tenancy, api_client_for, role, auth):
    client = (
        api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=role))
        if auth == "api_key"
        else api_client_for(user=tenancy.user_for(role))
    )
    project_url = reverse("api:project-detail", args=[tenancy.project_a.pk])

    assert client.get(reverse("api:project-list")).status_code == 200
    assert client.get(project_url).status_code == 200

    created = client.post(reverse("api:project-list"), {"name": "New one"}, format="json")
    assert created.status_code == (403 if role == Role.VIEWER else 201)

    patched = client.patch(project_url, {"name": "Renamed"}, format="json")
    assert patched.status_code == (403 if role == Role.VIEWER else 200)

    keys = client.get(reverse("api:api-key-list"))
    assert keys.status_code == (200 if role == Role.BRAND_ADMIN else 403)
    if keys.status_code == 403:
        assert keys.json()["error"]["code"] == "permission_denied"

    deleted = client.delete(project_url)
    assert deleted.status_code == (204 if role == Role.BRAND_ADMIN else 403)


@pytest.mark.parametrize("role", ROLES)
def test_page_role_matrix(tenancy, page_client_for, role):
    client = page_client_for(tenancy.user_for(role))
    project = tenancy.project_a
    assert client.get(reverse("projects:list")).status_code == 200
    assert client.get(reverse("projects:detail", args=[project.pk])).status_code == 200

    can_write = role != Role.VIEWER
    assert client.get(reverse("projects:create")).status_code == (200 if can_write else 403)
    response = client.post(reverse("projects:stage", args=[project.pk]), {"stage": "paused"})
    assert response.status_code == (302 if can_write else 403)
    project.refresh_from_db()
    assert project.stage == ("paused" if can_write else "active")

    settings_page = client.get(reverse("brands:settings"))
    assert settings_page.status_code == (200 if role == Role.BRAND_ADMIN else 403)


def test_anonymous_is_sent_to_login_and_api_answers_401(client, tenancy):
    response = client.get(reverse("projects:list"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    api = client.get(reverse("api:project-list"))
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "not_authenticated"


def test_user_without_brand_gets_a_clear_page(client, user_factory):
    client.force_login(user_factory(username="lonely"))
    response = client.get(reverse("projects:list"))
    assert response.status_code == 403
    assert b"does not belong to any brand" in response.content
