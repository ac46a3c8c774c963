"""End to end through the Twilio-compatible fake: real SDK sends, signed inbound webhooks posted
by the fake to the live server, TwiML answers read back by the fake, carrier 21610."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from django.db import connection

import pytest

from distributions.models import Message, ProviderAccount
from distributions.services import distribution_create
from optouts.models import InboundMessage, OptOut, OptOutEvent, Scope, Source
from participants.models import Person
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.fake_twilio import FakeTwilio
from tests.test_optout_support import self_service

pytestmark = pytest.mark.django_db(transaction=True)
SENDER = "+15005550006"
SERVICE = "MG" + "5e" * 16
S = Message.Status


@pytest.fixture
def fake():
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def brand(tenancy, fake, settings, live_server):
    settings.TWILIO_API_BASE_URL = fake.base_url
    settings.PUBLIC_BASE_URL = live_server.url
    self_service(tenancy.brand_a)
    ProviderAccount.objects.create(
        brand=tenancy.brand_a,
        provider="twilio",
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        default_sender=SENDER,
        messaging_service_sid=SERVICE,
        messages_per_second=1000,
    )
    tenancy.participant_a.delete()
    people = [
        PersonFactory(brand=tenancy.brand_a, first_name=name, phone=f"+1415555{7000 + i:04d}")
        for i, name in enumerate(["Ada", "Bob", "Cy"])
    ]
    for person in people:
        ParticipantFactory(project=tenancy.project_a, person=person)
    tenancy.people = people
    return tenancy


def inbound_url(live_server) -> str:
    return f"{live_server.url}/webhooks/twilio/inbound/"


def send(project, message="Hi ${first_name}, opt out: ${opt_out_link}"):
    return distribution_create(project=project, message=message)


def replies_to(fake, number: str) -> list[str]:
    return [
        m["body"] for m in fake.messages if m["direction"] == "outbound-reply" and m["to"] == number
    ]


def http(url: str, *, post: bool = False) -> tuple[int, str]:
    request = urllib.request.Request(url, data=b"" if post else None)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_stop_help_start_link_and_carrier_block(brand, fake, live_server, eager_tasks):
    ada, bob, cy = brand.people
    url = inbound_url(live_server)
    first = send(brand.project_a)
    assert fake.stats()["accepted"] == 3

    # Ada answers in Spanish: opted out in the directory (within 2 days of our message).
    assert fake.inbound(ada.phone, SENDER, "Baja", url) == 200
    optout = OptOut.objects.get(address=ada.phone)
    assert (optout.source, optout.scope) == (Source.REPLY, Scope.DIRECTORY)
    ada.refresh_from_db()
    assert ada.metadata["Opted out"] == "Yes"
    assert InboundMessage.objects.get(from_number=ada.phone).language == "es"
    assert replies_to(fake, ada.phone) == []  # no TwiML reply to a STOP

    # Bob asks for help and gets the brand's help text back through TwiML.
    assert fake.inbound(bob.phone, SENDER, "HELP", url) == 200
    assert replies_to(fake, bob.phone)[0].startswith("Alpha: survey invitations")
    # Through the messaging service, Twilio's Advanced Opt-Out answers HELP itself.
    assert fake.inbound(bob.phone, SENDER, "INFO", url, messaging_service_sid=SERVICE) == 200
    assert len(replies_to(fake, bob.phone)) == 1

    # Ada texts START: the carrier lets messages through again, Relay still does not send.
    assert fake.inbound(ada.phone, SENDER, "START", url) == 200
    optout.refresh_from_db()
    assert optout.active
    assert OptOutEvent.objects.filter(action="resubscribe", address=ada.phone).exists()

    # Cy uses the opt-out link of his message.
    cy_message = first.messages.get(person=cy)
    link = cy_message.body.rsplit(" ", 1)[1]
    assert urlsplit(link).netloc == urlsplit(live_server.url).netloc
    status, page = http(link)
    assert status == 200 and "Opt out of text messages?" in page
    status, page = http(link, post=True)
    assert status == 200 and "You are opted out" in page
    assert OptOut.objects.get(address=cy.phone).source == Source.LINK

    # The next distribution reaches Bob only.
    second = send(brand.project_a, "Reminder ${first_name} ${opt_out_link}")
    statuses = {m.person_id: m.status for m in second.messages.all()}
    assert statuses[ada.pk] == statuses[cy.pk] == S.SKIPPED_OPTOUT
    assert statuses[bob.pk] in Message.HANDED_OVER
    assert fake.sent_to(ada.phone) == fake.sent_to(cy.phone) == 1
    assert fake.sent_to(bob.phone) == 2

    # Bob unsubscribed at the carrier: Twilio refuses with 21610, the row is Blocked.
    fake.set_number_error(bob.phone, 21610)
    third = send(brand.project_a, "Last one ${first_name} ${opt_out_link}")
    bob_row = third.messages.get(person=bob)
    assert bob_row.status == S.BLOCKED and bob_row.error_code == "21610"
    carrier = OptOut.objects.get(address=bob.phone)
    assert carrier.source == Source.PROVIDER and carrier.active


def test_forged_and_replayed_webhooks_through_http(brand, fake, live_server, eager_tasks):
    ada = brand.people[0]
    url = inbound_url(live_server)
    send(brand.project_a)
    # A request that is not signed by the brand's token.
    forged = urllib.request.Request(  # noqa: S310
        url,
        data=f"From=%2B{ada.phone[1:]}&To=%2B{SENDER[1:]}&Body=STOP&MessageSid=SMx".encode(),
        headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(forged, timeout=10)  # noqa: S310
    assert excinfo.value.code == 403
    assert not OptOut.objects.exists() and not InboundMessage.objects.exists()
    # A webhook signed with another account's token (another tenant's Twilio account).
    other_sid, _ = fake.add_account()
    assert fake.inbound(ada.phone, SENDER, "STOP", url, account_sid=other_sid) == 403
    assert not OptOut.objects.exists()
    # A replay of a real webhook (same MessageSid) changes nothing.
    sid = "SM" + "77" * 16
    extra = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid}
    assert fake.inbound(ada.phone, SENDER, "STOP", url, extra=extra) == 200
    assert fake.inbound(ada.phone, SENDER, "STOP", url, extra=extra) == 200
    assert InboundMessage.objects.count() == 1 and OptOutEvent.objects.count() == 1


def test_an_unknown_number_replying_stop(brand, fake, live_server):
    url = inbound_url(live_server)
    assert fake.inbound("+14155550999", SENDER, "STOP", url) == 200
    inbound = InboundMessage.objects.get()
    assert inbound.brand == brand.brand_a and inbound.action == "unknown_number"
    assert not OptOut.objects.exists()
    assert not Person.objects.filter(metadata__has_key="Opted out").exists()


@pytest.mark.integration
def test_a_stop_arriving_mid_send_through_the_fake(brand, fake, live_server, start_worker):
    """A real worker sends 1,500 messages through the fake at 100/s; 100 recipients whose turn
    has not come reply STOP at once through Twilio's webhook. None of them is messaged
    afterwards (the exact timing proof, against the opt-out's own timestamp, is the
    5,000-recipient outbox test in test_optout_guarantee.py)."""
    from tests.progress import until, wait_until_finished
    from tests.test_optout_guarantee import populate

    fake_sends_to = fake.sent_to
    fake.set_callbacks(enabled=False)  # 1,500 delivery callbacks would queue ahead of the STOPs
    project = brand.project_a
    Person.objects.filter(brand=brand.brand_a).delete()
    populate(project, 1500)
    ProviderAccount.objects.filter(brand=brand.brand_a).update(messages_per_second=100)
    env = {"TWILIO_API_BASE_URL": fake.base_url, "PUBLIC_BASE_URL": live_server.url}
    # SQLite is the one-machine setup: one worker, one writer at a time (see optouts.guard).
    worker = start_worker(concurrency=2 if connection.vendor == "postgresql" else 1, extra_env=env)
    distribution = send(project, "Hi ${first_name}")
    rows = Message.objects.filter(distribution=distribution)
    until(
        lambda: fake.counters()["accepted"] >= 100,
        progress=lambda: fake.counters()["accepted"],
        describe=worker.output,
    )
    # The last rows by id go out last (a chunk's windows go in id order); they may be leased
    # already (a send task takes 1,000 rows at once) but not handed over.
    victims = list(
        rows.filter(status__in=[S.PENDING, S.SENDING], provider_id="")
        .order_by("-pk")
        .values_list("address", flat=True)[:100]
    )
    assert len(victims) == 100
    url = inbound_url(live_server)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda n: fake.inbound(n, SENDER, "STOP", url), victims))
    assert answers == [200] * len(victims)

    wait_until_finished(distribution, describe=worker.output)
    skipped = carrier = 0
    for number in victims:
        row = rows.get(address=number)
        assert fake_sends_to(number) <= 1
        if row.status == S.SKIPPED_OPTOUT:  # our check stopped it
            assert fake_sends_to(number) == 0 and row.provider_id == ""
            skipped += 1
        elif row.status == S.BLOCKED:
            # Handed over in the moment between Twilio taking the STOP and its webhook
            # reaching us: the carrier refused it (21610), nothing was delivered.
            assert row.error_code == "21610" and fake_sends_to(number) == 0
            carrier += 1
        else:  # handed over before the STOP was sent
            assert row.status in Message.HANDED_OVER and fake_sends_to(number) == 1
    print(f"STOPs mid-send through the fake: {skipped} skipped, {carrier} refused by the carrier")
    assert skipped >= 80, f"only {skipped} STOPs came before their turn ({carrier} at carrier)"
    assert OptOut.objects.filter(brand=brand.brand_a, active=True).count() == len(victims)
