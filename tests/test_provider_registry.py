"""A new provider is one module plus its registry line: tests/providers.py's EchoProvider, which
speaks nothing like Twilio, sends a distribution and has its status callbacks and inbound
replies authenticated, classified and applied by the same views as Twilio's."""

from django.urls import reverse

import pytest

from distributions.models import Message, ProviderAccount
from distributions.providers.registry import provider_classes
from distributions.services import distribution_create
from optouts.models import InboundMessage, OptOut
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.providers import SIGNATURE_HEADER, EchoProvider, echo_body, echo_signature

pytestmark = pytest.mark.django_db
SECRET = "echo-secret-a"
SHORTCODE = "+15550001000"


@pytest.fixture
def echo(settings, tenancy):
    settings.RELAY_SMS_PROVIDERS = [*settings.RELAY_SMS_PROVIDERS, "tests.providers.EchoProvider"]
    provider_classes.cache_clear()
    EchoProvider.sent = []
    ProviderAccount.objects.create(
        brand=tenancy.brand_a, provider="echo", auth_token=SECRET, default_sender=SHORTCODE
    )
    yield EchoProvider
    provider_classes.cache_clear()


def post(client, url, fields, *, secret=SECRET):
    body = echo_body(fields)
    return client.generic(
        "POST",
        url,
        body,
        content_type="application/x-www-form-urlencoded",
        **{f"HTTP_{SIGNATURE_HEADER.upper().replace('-', '_')}": echo_signature(secret, body)},
    )


def sent_rows(tenancy, capture, *phones):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    for phone in phones:
        person = PersonFactory(brand=tenancy.brand_a, phone=phone)
        ParticipantFactory(project=project, person=person)
    with capture(execute=True):
        distribution = distribution_create(project=project, message="Hi ${first_name}")
    return {m.address: m for m in distribution.messages.all()}


def test_the_registered_provider_sends_and_its_callbacks_move_rows_forward(
    client, settings, tenancy, echo, eager_tasks, django_capture_on_commit_callbacks
):
    rows = sent_rows(tenancy, django_capture_on_commit_callbacks, "+14155550101", "+14155550102")
    assert sorted(m.to for m in echo.sent) == ["+14155550101", "+14155550102"]
    first, second = rows["+14155550101"], rows["+14155550102"]
    status_url = reverse("callbacks:status", args=["echo", first.pk])
    assert status_url == f"/webhooks/echo/status/{first.pk}/"
    for outgoing in echo.sent:  # each message carries the callback URL of its provider
        expected = reverse("callbacks:status", args=["echo", outgoing.message_id])
        assert outgoing.status_callback == settings.PUBLIC_BASE_URL + expected

    # A forged callback (another secret) changes nothing.
    forged = post(client, status_url, {"state": "ok", "ref": first.provider_id}, secret="nope")
    assert forged.status_code == 403
    first.refresh_from_db()
    assert first.status == Message.Status.SENT

    # Its own vocabulary: "ok" is Delivered.
    assert post(client, status_url, {"state": "ok", "ref": first.provider_id}).status_code == 204
    first.refresh_from_db()
    assert first.status == Message.Status.DELIVERED

    # Its own error codes: E-STOP is Blocked and opts the recipient out.
    second_url = reverse("callbacks:status", args=["echo", second.pk])
    fields = {"state": "bounced", "ref": second.provider_id, "problem": "E-STOP"}
    assert post(client, second_url, fields).status_code == 204
    second.refresh_from_db()
    assert second.status == Message.Status.BLOCKED and second.error_code == "E-STOP"
    assert OptOut.objects.filter(
        brand=tenancy.brand_a, channel="sms", address="+14155550102", active=True
    ).exists()


def test_an_inbound_stop_through_the_registered_provider_opts_out(
    client, tenancy, echo, eager_tasks, django_capture_on_commit_callbacks
):
    sent_rows(tenancy, django_capture_on_commit_callbacks, "+14155550103")
    url = reverse("callbacks:inbound", args=["echo"])
    assert url == "/webhooks/echo/inbound/"
    fields = {"msisdn": "+14155550103", "shortcode": SHORTCODE, "text": "STOP", "ref": "EIN1"}

    assert post(client, url, fields, secret="forged").status_code == 403
    assert not InboundMessage.objects.exists()

    answer = post(client, url, fields)
    assert answer.status_code == 200 and answer.json() == {"reply": None}
    inbound = InboundMessage.objects.get()
    assert (inbound.brand, inbound.provider, inbound.provider_sid) == (
        tenancy.brand_a,
        "echo",
        "EIN1",
    )
    assert inbound.message is not None  # matched to the brand's last message to the number
    assert OptOut.objects.filter(brand=tenancy.brand_a, address="+14155550103").exists()


def test_an_unknown_provider_code_answers_404(client):
    url = reverse("callbacks:status", args=["nope", 1])
    assert client.post(url, {}).status_code == 404
