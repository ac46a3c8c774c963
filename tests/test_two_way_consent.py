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
from distributions.audiences import recipients_queryset
from distributions.models import Distribution, Message, ProviderAccount
from distributions.services import distribution_create
from optouts.models import Consent, ConsentPolicy, InboundMessage, OptOut
from participants.models import Person
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


# --- the consents API (GET /api/v1/sms-consents/, POST .../withdraw/) ----------------------
URL = "/api/v1/sms-consents/"


def invited(project) -> list[str]:
    """The numbers an SMS invite of ``project`` would select now (consent checked)."""
    invite = Distribution(project=project, channel="sms", mode=Distribution.Mode.LINK)
    return sorted(recipients_queryset(invite).values_list("person__phone", flat=True))


@pytest.fixture
def consents(client, tenancy, consent_request, django_capture_on_commit_callbacks):
    """Ada said yes then STOP; Eve said "oui"; brand B has a consent of its own."""
    cb = django_capture_on_commit_callbacks
    signed_reply(client, cb, "Ada", "yes", "SMa1")
    signed_reply(client, cb, "Eve", "oui", "SMa2")
    signed_reply(client, cb, "Ada", "STOP", "SMa3")
    other = Consent.objects.create(
        brand=tenancy.brand_b, project=tenancy.project_b, address=NAMES["Eve"]
    )
    return {
        "ada": Consent.objects.get(brand=tenancy.brand_a, address=NAMES["Ada"]),
        "eve": Consent.objects.get(brand=tenancy.brand_a, address=NAMES["Eve"]),
        "other": other,
    }


def test_everyone_in_the_brand_reads_its_consents_and_only_its_own(
    tenancy, consents, consent_request, api_client_for
):
    viewer = api_client_for(user=tenancy.viewer_a)
    listed = viewer.get(URL).json()["results"]
    assert [item["address"] for item in listed] == [NAMES["Eve"], NAMES["Ada"]]
    eve, ada = listed
    yes = InboundMessage.objects.get(provider_sid="SMa2")
    request = consent_request.messages.get(address=NAMES["Eve"])
    assert {k: eve[k] for k in ("project", "status", "inbound", "inbound_text", "request")} == {
        "project": tenancy.project_a.pk,
        "status": "given",
        "inbound": yes.pk,
        "inbound_text": "oui",
        "request": request.pk,
    }
    assert eve["withdrawn_at"] is None
    assert [e["action"] for e in eve["events"]] == ["consent"]
    stop = InboundMessage.objects.get(provider_sid="SMa3")
    assert ada["status"] == "withdrawn" and ada["withdrawn_at"]
    assert [(e["action"], e["source"], e["inbound"], e["who"]) for e in ada["events"]] == [
        ("consent", "reply", InboundMessage.objects.get(provider_sid="SMa1").pk, "The recipient"),
        ("consent_withdrawn", "reply", stop.pk, "The recipient"),
    ]

    def addresses(**query):
        answer = viewer.get(URL, query)
        assert answer.status_code == 200, answer.content
        return [item["address"] for item in answer.json()["results"]]

    assert addresses(status="given") == [NAMES["Eve"]]
    assert addresses(status="withdrawn") == [NAMES["Ada"]]
    assert addresses(project=tenancy.project_a.pk) == [NAMES["Eve"], NAMES["Ada"]]
    assert addresses(project=tenancy.project_b.pk) == []  # another brand's project: nothing
    assert addresses(address=NAMES["Ada"]) == [NAMES["Ada"]]
    # An unencoded "+" arrives as a space: the number is found all the same.
    assert viewer.get(f"{URL}?address={NAMES['Eve']}").json()["results"][0]["id"] == eve["id"]
    refused = viewer.get(URL, {"status": "pending"})
    assert refused.status_code == 400 and "status" in refused.json()["error"]["fields"]

    assert viewer.get(f"{URL}{eve['id']}/").json() == eve
    # Another brand's consent: 404, to read and to withdraw, for everyone of brand A.
    admin = api_client_for(user=tenancy.admin_a)
    other = consents["other"].pk
    assert viewer.get(f"{URL}{other}/").status_code == 404
    assert admin.post(f"{URL}{other}/withdraw/", {"reason": "x"}, format="json").status_code == 404
    assert Consent.objects.get(pk=other).active
    beta = api_client_for(user=tenancy.admin_b).get(URL).json()["results"]
    assert [item["id"] for item in beta] == [other]


def test_an_admin_withdraws_a_consent_in_the_audit_trail(tenancy, consents, api_client_for):
    eve = consents["eve"]
    url = f"{URL}{eve.pk}/withdraw/"
    assert invited(tenancy.project_a) == [NAMES["Eve"]]
    viewer = api_client_for(user=tenancy.viewer_a)
    assert viewer.post(url, {"reason": "Called us"}, format="json").status_code == 403
    padmin = api_client_for(user=tenancy.project_admin_a)
    blank = padmin.post(url, {"reason": "  "}, format="json")
    assert blank.status_code == 400 and "reason" in blank.json()["error"]["fields"]
    assert Consent.objects.get(pk=eve.pk).active

    answer = padmin.post(url, {"reason": "Asked on the phone"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["status"] == "withdrawn" and body["withdrawn_at"]
    withdrawal = body["events"][-1]
    assert {k: withdrawal[k] for k in ("action", "source", "who", "actor", "reason")} == {
        "action": "consent_withdrawn",
        "source": "admin",
        "who": "padmin_a",
        "actor": "padmin_a",
        "reason": "Asked on the phone: project Alpha pulse",
    }
    assert withdrawal["consent"] == eve.pk and withdrawal["person"] is not None
    # The project's invites no longer select her; the same call again is a conflict.
    assert invited(tenancy.project_a) == []
    again = padmin.post(url, {"reason": "Asked on the phone"}, format="json")
    assert again.status_code == 409

    # The audit trail shows both consents given and both withdrawn (API and person page).
    events = viewer.get("/api/v1/optout-events/", {"address": NAMES["Eve"]}).json()["results"]
    assert [(e["action"], e["source"]) for e in events] == [
        ("consent_withdrawn", "admin"),
        ("consent", "reply"),
    ]
    withdrawn = viewer.get("/api/v1/optout-events/", {"action": "consent_withdrawn"}).json()
    assert sorted(e["address"] for e in withdrawn["results"]) == [NAMES["Ada"], NAMES["Eve"]]


def test_the_person_page_shows_the_consent_trail(tenancy, consents, page_client_for):
    ada = Person.objects.get(brand=tenancy.brand_a, phone=consents["ada"].address)
    page = page_client_for(tenancy.viewer_a).get(f"/people/{ada.pk}/").content.decode()
    assert "Consented to a project&#x27;s invites (YES)" in page
    assert "Consent withdrawn" in page
    assert "Opted out: project Alpha pulse" in page
