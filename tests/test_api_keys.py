from django.urls import reverse

import pytest

from brands.models import ApiKey
from brands.roles import Role

pytestmark = pytest.mark.django_db


def test_key_is_shown_once_stored_hashed_and_revocable(tenancy, api_client_for):
    admin = api_client_for(user=tenancy.admin_a)
    created = admin.post(
        reverse("api:api-key-list"), {"name": "crm", "role": "viewer"}, format="json"
    )
    assert created.status_code == 201
    key = created.json()["key"]
    stored = ApiKey.objects.get(pk=created.json()["id"])
    assert key.startswith(f"rly_{stored.prefix}_")
    assert key.split("_", 2)[2] not in stored.secret_hash
    listed = admin.get(reverse("api:api-key-list")).json()["results"]
    assert all("key" not in row for row in listed)

    client = api_client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    me = client.get(reverse("api:me")).json()
    assert me["brand"]["slug"] == "alpha" and me["role"] == Role.VIEWER
    stored.refresh_from_db()
    assert stored.last_used_at is not None

    assert admin.delete(reverse("api:api-key-detail", args=[stored.pk])).status_code == 204
    refused = client.get(reverse("api:me"))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid or revoked API key."


@pytest.mark.parametrize("header", ["Bearer", "Bearer rly_x", "Bearer rly_abc_def", "Bearer a b"])
def test_bad_keys_are_refused(client, header):
    response = client.get(reverse("api:me"), HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "fields"}


def test_settings_page_issues_a_key_once(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    response = client.post(
        reverse("brands:settings"), {"action": "create_key", "name": "web", "role": "viewer"}
    )
    assert response.status_code == 200
    assert b"rly_" in response.content and b"will not be shown again" in response.content
    again = client.get(reverse("brands:settings"))
    key = ApiKey.objects.get(name="web")
    assert f"rly_{key.prefix}_…".encode() in again.content
    assert b'id="new-api-key"' not in again.content


def test_schema_and_docs_are_served(client):
    schema = client.get(reverse("api:schema"))
    assert schema.status_code == 200
    assert b"/api/v1/projects/" in schema.content
    docs = client.get(reverse("api:docs"))
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()
