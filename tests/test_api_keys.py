import time

from django.urls import reverse
from django.utils import timezone

import pytest

from brands import services
from brands.models import ApiKey
from brands.roles import Role
from tests.conftest import make_api_client
from tests.factories.brands import ApiKeyFactory

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


def test_a_key_revoked_elsewhere_is_refused_within_the_cache_bound(tenancy, monkeypatch):
    # Given a key this process has used (its lookup is cached)
    key = ApiKeyFactory(brand=tenancy.brand_a, role=Role.VIEWER)
    client = make_api_client(api_key=key)
    assert client.get(reverse("api:me")).status_code == 200
    # When another process revokes it (not through this process's cache)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    # Then this process may honour it until its cached lookup expires, and not a moment later
    clock = time.monotonic()
    monkeypatch.setattr(services.time, "monotonic", lambda: clock + 0.5)
    assert client.get(reverse("api:me")).status_code == 200
    later = clock + services.API_KEY_CACHE_SECONDS + 0.01
    monkeypatch.setattr(services.time, "monotonic", lambda: later)
    refused = client.get(reverse("api:me"))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid or revoked API key."
    assert services.API_KEY_CACHE_SECONDS <= 5


def test_a_cached_key_is_a_copy_per_call_and_proves_its_secret(tenancy):
    key = ApiKeyFactory(brand=tenancy.brand_a)
    first = services.api_key_authenticate(key=key.plain_key)
    first.role = Role.BRAND_ADMIN
    first.brand.name = "Changed"
    second = services.api_key_authenticate(key=key.plain_key)
    assert (second.pk, second.role, second.brand.name) == (key.pk, Role.PROJECT_ADMIN, "Alpha")
    wrong = f"rly_{key.prefix}_{'x' * 20}"
    assert services.api_key_authenticate(key=wrong) is None


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
