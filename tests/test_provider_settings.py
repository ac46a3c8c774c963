"""A brand admin sets the SMS provider: credentials checked with Twilio (the fake), the token
encrypted at rest and never shown back; other roles and brands cannot touch it."""

from django.db import connection
from django.urls import reverse

import pytest

from brands.models import Brand
from brands.roles import Role
from distributions.models import ProviderAccount
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake(settings):
    with FakeTwilio() as server:
        settings.TWILIO_API_BASE_URL = server.base_url
        yield server


def test_self_service_credentials_are_checked_encrypted_and_redacted(tenancy, fake, api_client_for):
    Brand.objects.filter(pk=tenancy.brand_a.pk).update(integration_model="self_service")
    api = api_client_for(user=tenancy.admin_a)
    url = reverse("api:sms-provider")
    assert api.get(url).json()["provider"] == "outbox"

    wrong = api.put(
        url,
        {
            "provider": "twilio",
            "account_sid": fake.account_sid,
            "auth_token": "wrong",
            "default_sender": "+15005550006",
        },
        format="json",
    )
    assert wrong.status_code == 400
    assert "refused these credentials" in wrong.json()["error"]["fields"]["auth_token"]
    assert not ProviderAccount.objects.exists()

    ok = api.put(
        url,
        {
            "provider": "twilio",
            "account_sid": fake.account_sid,
            "auth_token": fake.auth_token,
            "default_sender": "+15005550006",
            "messages_per_second": 50,
        },
        format="json",
    )
    assert ok.status_code == 200, ok.json()
    body = ok.json()
    assert "auth_token" not in body and fake.auth_token not in str(body)
    assert body["auth_token_redacted"].endswith(fake.auth_token[-4:])

    with connection.cursor() as cursor:
        cursor.execute("SELECT auth_token FROM distributions_provideraccount")
        stored = cursor.fetchone()[0]
    assert fake.auth_token not in stored
    assert ProviderAccount.objects.get().auth_token == fake.auth_token

    # An empty token keeps the stored one.
    kept = api.put(
        url,
        {
            "provider": "twilio",
            "account_sid": fake.account_sid,
            "auth_token": "",
            "default_sender": "+15005550007",
        },
        format="json",
    )
    assert kept.status_code == 200
    assert ProviderAccount.objects.get().auth_token == fake.auth_token


@pytest.mark.parametrize(
    "body,field",
    [
        ({"provider": "carrier-pigeon"}, "provider"),
        ({"provider": "twilio", "account_sid": "XX1"}, "account_sid"),
        ({"provider": "outbox", "messages_per_second": 0}, "messages_per_second"),
        ({"provider": "outbox", "colour": "red"}, "colour"),
    ],
)
def test_bad_provider_settings_name_the_field(tenancy, api_client_for, body, field):
    response = api_client_for(user=tenancy.admin_a).put(
        reverse("api:sms-provider"), body, format="json"
    )
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not ProviderAccount.objects.exists()


@pytest.mark.parametrize("role", [Role.VIEWER, Role.PROJECT_ADMIN])
def test_only_brand_admins_see_or_change_the_provider(
    tenancy, api_client_for, page_client_for, role
):
    user = tenancy.user_for(role)
    assert api_client_for(user=user).get(reverse("api:sms-provider")).status_code == 403
    assert page_client_for(user).get(reverse("distributions:provider")).status_code == 403


def test_settings_page_saves_and_never_shows_the_token(tenancy, fake, page_client_for):
    Brand.objects.filter(pk=tenancy.brand_a.pk).update(integration_model="self_service")
    client = page_client_for(tenancy.admin_a)
    response = client.post(
        reverse("distributions:provider"),
        {
            "provider": "twilio",
            "account_sid": fake.account_sid,
            "auth_token": fake.auth_token,
            "default_sender": "+15005550006",
            "messages_per_second": 20,
        },
    )
    assert response.status_code == 302
    page = client.get(reverse("distributions:provider")).content.decode()
    assert fake.auth_token not in page
    assert fake.auth_token[-4:] in page
    # Brand B's settings are untouched and invisible.
    assert not ProviderAccount.objects.filter(brand=tenancy.brand_b).exists()


def test_sub_account_is_provisioned_under_the_platform_account(
    tenancy, fake, settings, page_client_for
):
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = fake.account_sid, fake.auth_token
    client = page_client_for(tenancy.admin_a)
    client.post(reverse("distributions:provider"), {"action": "provision"})
    account = ProviderAccount.objects.get(brand=tenancy.brand_a)
    assert account.provider == "twilio" and account.account_sid != fake.account_sid
    assert account.account_sid.startswith("AC") and account.auth_token
