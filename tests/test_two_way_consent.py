"""Consent first (docs/two-way.md, "Consent first"): every reply to a consent request is a
reply like any other (in the number's texts, debited once at the inbound rate), through the
signed inbound webhook, replays included."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

import pytest

from conversations.models import Turn
from credits.models import CountryRate, CreditEntry
from distributions.models import Distribution, Message, ProviderAccount
from distributions.services import distribution_create
from optouts.models import Consent, ConsentPolicy, InboundMessage, OptOut
from tests.factories.credits import grant, set_default_rate
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.test_optout_support import (
    PLATFORM_TOKEN,
    SENDER_A,
    SID_A,
    TOKEN_A,
    inbound_params,
    post_inbound,
)

pytestmark = pytest.mark.django_db
OUT_RATE = Decimal("0.01")
IN_RATE = Decimal("0.002")
NAMES = {
    "Ada": "+14155550101",
    "Bob": "+14155550102",
    "Cy": "+14155550103",
    "Dee": "+14155550104",
    "Eve": "+14155550105",
}


@pytest.fixture
def consent_request(tenancy, settings, eager_tasks, django_capture_on_commit_callbacks):
    """Brand A's project requires consent; its consent request went (through the outbox) to
    five people; replies then reach brand A's Twilio number on the signed webhook."""
    brand, project = tenancy.brand_a, tenancy.project_a
    tenancy.participant_a.delete()
    set_default_rate(Decimal("0.05"))
    CountryRate.objects.create(country="US", rate=OUT_RATE, inbound_rate=IN_RATE)
    grant(brand, 100)
    ConsentPolicy.objects.create(project=project, required=True)
    for name, phone in NAMES.items():
        ParticipantFactory(
            project=project, person=PersonFactory(brand=brand, first_name=name, phone=phone)
        )
    with django_capture_on_commit_callbacks(execute=True):
        request = distribution_create(project=project, message="May we text you?", mode="consent")
    assert request.messages.filter(status__in=Message.HANDED_OVER).count() == len(NAMES)
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.TWILIO_AUTH_TOKEN = PLATFORM_TOKEN
    ProviderAccount.objects.create(
        brand=brand, provider="twilio", account_sid=SID_A, auth_token=TOKEN_A
    )
    return request


def signed_reply(client, callbacks, name: str, body: str, sid: str):
    with callbacks(execute=True):
        answer = post_inbound(
            client,
            inbound_params(from_=NAMES[name], to=SENDER_A, body=body, sid=sid),
            token=TOKEN_A,
        )
    assert answer.status_code == 200, answer.content
    return answer


def test_every_reply_to_a_consent_request_is_recorded_and_debited_once(
    client, tenancy, consent_request, django_capture_on_commit_callbacks
):
    cb = django_capture_on_commit_callbacks
    replies = [
        ("Ada", "maybe", "SMc1"),
        ("Bob", "NO", "SMc2"),
        ("Cy", "HELP", "SMc3"),
        ("Dee", "STOP", "SMc4"),
        ("Eve", "Yes!", "SMc5"),
    ]
    for name, body, sid in replies:
        signed_reply(client, cb, name, body, sid)
    # The same signed webhooks again (Twilio retries): stored once, debited once.
    for name, body, sid in replies:
        signed_reply(client, cb, name, body, sid)

    assert InboundMessage.objects.count() == len(replies)
    kinds = dict(Turn.objects.filter(direction="in").values_list("address", "kind"))
    assert kinds == {
        NAMES["Ada"]: "consent_no",
        NAMES["Bob"]: "consent_no",
        NAMES["Cy"]: "help",
        NAMES["Dee"]: "stop",
        NAMES["Eve"]: "consent_yes",
    }
    assert not Turn.objects.filter(direction="out").exists()  # HELP is answered in the reply
    # STOP and HELP keep their meaning; only the yes consented.
    assert list(Consent.objects.values_list("address", flat=True)) == [NAMES["Eve"]]
    assert OptOut.objects.get(active=True).address == NAMES["Dee"]
    assert InboundMessage.objects.get(provider_sid="SMc3").action == "help_sent"

    # Credits: the requests at the outbound rate, the five replies at the inbound rate, once.
    debits = CreditEntry.objects.filter(brand=tenancy.brand_a, kind="debit")
    replies_debited = debits.filter(idempotency_key__startswith="sms-inbound:")
    assert replies_debited.count() == len(replies)
    assert sorted(replies_debited.values_list("idempotency_key", flat=True)) == sorted(
        f"sms-inbound:{pk}" for pk in InboundMessage.objects.values_list("pk", flat=True)
    )
    assert set(replies_debited.values_list("project_id", flat=True)) == {tenancy.project_a.pk}
    requests = Message.objects.filter(distribution=consent_request).aggregate(s=Sum("segments"))
    expected = OUT_RATE * requests["s"] + IN_RATE * len(replies)
    assert -debits.aggregate(s=Sum("amount"))["s"] == expected


def test_a_reply_after_a_later_message_is_no_reply_to_the_consent_request(
    client, tenancy, consent_request, django_capture_on_commit_callbacks
):
    """Only a reply whose number's last message is the consent request answers it: after a
    link invite (no conversation), "maybe" is stored, neither recorded nor debited."""
    cb = django_capture_on_commit_callbacks
    ada = Message.objects.get(distribution=consent_request, address=NAMES["Ada"])
    now = timezone.now()
    invite = Distribution.objects.create(
        project=tenancy.project_a, message="Survey: ${link}", send_at=now, status="sent"
    )
    Message.objects.create(
        distribution=invite,
        participant=ada.participant,
        person=ada.person,
        address=ada.address,
        status="sent",
        status_changed_at=now,
        sent_at=now,
        body="Survey: https://relay.example/s/abc",
        segments=1,
    )
    signed_reply(client, cb, "Ada", "maybe", "SMl1")
    assert InboundMessage.objects.get(provider_sid="SMl1").message.distribution == invite
    assert not Turn.objects.exists()
    assert not CreditEntry.objects.filter(idempotency_key__startswith="sms-inbound:").exists()
