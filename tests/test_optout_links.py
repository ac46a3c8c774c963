"""The opt-out link: rendered per message, confirmation page, expiry after 10 days, bad tokens."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.urls import resolve, reverse
from django.utils import timezone

import pytest

from distributions.models import Distribution, Message, OutboxMessage
from distributions.services import distribution_create
from optouts.links import (
    LINK_VALIDITY,
    SIGNATURE_LENGTH,
    TOKEN_LENGTH,
    _b62,
    _signature,
    opt_out_token,
    opt_out_token_read,
    opt_out_url,
)
from optouts.models import OptOut, OptOutEvent, Scope, Source
from optouts.services import optout_record_link
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.test_optout_support import self_service, sent_message

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"


def link_path(message) -> str:
    return urlsplit(opt_out_url(message.pk)).path


def send_to_ada(tenancy, capture, message: str):
    """Ada (PHONE), the only participant of a self-service project, is sent ``message`` through
    the real engine; answers her person and the body the outbox received."""
    self_service(tenancy.brand_a)
    tenancy.participant_a.delete()
    person = PersonFactory(brand=tenancy.brand_a, first_name="Ada", phone=PHONE)
    ParticipantFactory(project=tenancy.project_a, person=person)
    with capture(execute=True):
        distribution_create(project=tenancy.project_a, message=message)
    return person, OutboxMessage.objects.get(to=PHONE).body


def test_the_link_is_short_signed_and_per_message(tenancy, settings):
    settings.PUBLIC_BASE_URL = "https://r.example"
    one = sent_message(tenancy.project_a, PHONE)
    two = sent_message(tenancy.project_a, "+14155550124")
    url = opt_out_url(one.pk)
    assert url.startswith("https://r.example/o/") and len(urlsplit(url).path) <= 20
    assert opt_out_token(one.pk) != opt_out_token(two.pk)
    assert resolve(link_path(one)).url_name == "link"


@pytest.mark.parametrize(
    "message_id", [1, 61, 62, 3_843, 3_844, 238_328, 1_000_000, 14_776_336, 62**6 - 1]
)
def test_every_token_has_the_same_length_whatever_the_message_id(message_id):
    """The counter and the estimate count the link before its message exists: the token's
    length must not depend on the id (it used to be 11 characters for id 1, 14 for 1,000,000)."""
    token = opt_out_token(message_id)
    assert len(token) == TOKEN_LENGTH == 16
    assert opt_out_token_read(token) == message_id
    # A link sent before the padding (the id's digits alone) still opts out.
    assert opt_out_token_read(_b62(message_id) + _signature(message_id)) == message_id


def test_the_counter_and_the_estimate_count_the_link_that_is_sent(
    tenancy, eager_tasks, django_capture_on_commit_callbacks, page_client_for
):
    from credits.estimate import opt_out_placeholder

    _, body = send_to_ada(tenancy, django_capture_on_commit_callbacks, "Stop: ${opt_out_link}")
    sent_link = body.removeprefix("Stop: ")
    assert len(urlsplit(sent_link).path) == len("/o/") + TOKEN_LENGTH

    page = page_client_for(tenancy.admin_a).get(
        reverse("distributions:create", args=[tenancy.project_a.pk])
    )
    counted = re.search(r'data-opt-out-link="([^"]+)"', page.content.decode())[1]
    assert len(counted) == len(sent_link)  # the live counter's sample
    assert len(opt_out_placeholder()) == len(sent_link)  # the estimate's


def test_sending_renders_the_link_and_the_link_opts_out(
    tenancy, client, eager_tasks, django_capture_on_commit_callbacks, settings
):
    settings.PUBLIC_BASE_URL = "http://testserver"
    person, body = send_to_ada(
        tenancy, django_capture_on_commit_callbacks, "Hi ${first_name}: ${opt_out_link}"
    )
    url = body.split(": ", 1)[1]
    path = urlsplit(url).path

    page = client.get(path)
    assert page.status_code == 200 and b"Opt out of text messages?" in page.content
    assert b"0123" in page.content and PHONE.encode() not in page.content  # masked number
    assert page["Referrer-Policy"] == "no-referrer" and "no-cache" in page["Cache-Control"]
    assert not OptOut.objects.exists()  # opening the link alone changes nothing

    done = client.post(path)
    assert done.status_code == 200 and b"You are opted out" in done.content
    optout = OptOut.objects.get()
    assert (optout.source, optout.scope, optout.person) == (Source.LINK, Scope.DIRECTORY, person)
    event = OptOutEvent.objects.get()
    assert event.message == Message.objects.get(address=PHONE) and event.source == Source.LINK
    person.refresh_from_db()
    assert person.metadata["Opted out"] == "Yes"
    assert person.participations.get().metadata["Opted out"] == "Yes"

    # The next distribution skips the number.
    with django_capture_on_commit_callbacks(execute=True):
        again = distribution_create(project=tenancy.project_a, message="Again ${opt_out_link}")
    assert again.messages.get().status == Message.Status.SKIPPED_OPTOUT
    assert OutboxMessage.objects.filter(to=PHONE).count() == 1


def test_the_link_is_idempotent(tenancy, client):
    message = sent_message(tenancy.project_a, PHONE)
    first = client.post(link_path(message))
    second = client.post(link_path(message))
    assert first.status_code == second.status_code == 200
    assert b"You had already opted out" in second.content
    assert OptOut.objects.count() == 1 and OptOutEvent.objects.count() == 1
    again = client.get(link_path(message))
    assert b"You are opted out" in again.content and b"<form" not in again.content


def test_the_link_upgrades_a_provider_level_opt_out(tenancy, client):
    message = sent_message(tenancy.project_a, PHONE)
    OptOut.objects.create(
        brand=tenancy.brand_a, channel="sms", address=PHONE, source="reply", scope="provider"
    )
    assert b"Opt out of text messages?" in client.get(link_path(message)).content
    client.post(link_path(message))
    assert OptOut.objects.get().scope == Scope.DIRECTORY
    message.person.refresh_from_db()
    assert message.person.metadata["Opted out"] == "Yes"


@pytest.mark.parametrize(
    ("age", "valid"),
    [
        (timedelta(hours=1), True),
        (LINK_VALIDITY - timedelta(minutes=1), True),
        (LINK_VALIDITY + timedelta(minutes=1), False),
        (timedelta(days=400), False),
    ],
)
def test_link_expiry_on_both_sides_of_ten_days(tenancy, client, age, valid):
    message = sent_message(tenancy.project_a, PHONE, ago=age)
    page = client.get(link_path(message))
    posted = client.post(link_path(message))
    if valid:
        assert page.status_code == 200 and posted.status_code == 200
        assert OptOut.objects.filter(active=True, address=PHONE).exists()
    else:
        for response in (page, posted):
            assert response.status_code == 410
            text = response.content.decode()
            assert "This opt-out link has expired" in text
            assert "Opt-out links expire 10 days after the message is sent" in text
            assert "reply <strong>STOP</strong>" in text
        assert not OptOut.objects.exists() and not OptOutEvent.objects.exists()


def test_the_service_refuses_an_expired_link(tenancy):
    message = sent_message(tenancy.project_a, PHONE, ago=timedelta(days=11))
    with pytest.raises(ValidationError):
        optout_record_link(message=message)
    fresh = sent_message(tenancy.project_a, "+14155550124")
    with pytest.raises(ValidationError):
        optout_record_link(message=fresh, now=timezone.now() + timedelta(days=10, seconds=1))


def test_expired_links_of_alphanumeric_senders_do_not_only_say_reply(tenancy, client):
    message = sent_message(tenancy.project_a, PHONE, ago=timedelta(days=12), sender="ACME")
    text = client.get(link_path(message)).content.decode()
    assert "use the opt-out link in a more recent text message" in text


def test_email_links_work_on_the_email_channel(tenancy, client):
    message = sent_message(
        tenancy.project_a, PHONE, channel=Distribution.Channel.EMAIL, ago=timedelta(days=1)
    )
    assert b"Opt out of emails?" in client.get(link_path(message)).content
    client.post(link_path(message))
    optout = OptOut.objects.get()
    assert optout.channel == "email" and optout.address == message.person.email


def bad_tokens(message) -> dict[str, str]:
    token = opt_out_token(message.pk)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    return {
        "tampered signature": flipped,
        "tampered id": ("1" if token[0] != "1" else "2") + token[1:],
        "truncated by one": token[:-1],
        "truncated by half": token[: len(token) // 2],
        "id only": token[:-SIGNATURE_LENGTH],
        "extended": token + "A",
        "not base62": token[:-1] + "-",
        "unicode": token[:-1] + "é",
        "very long": "A" * 500,
        "unknown message": opt_out_token(message.pk + 10_000),
        "sql-ish": "1' OR '1'='1",
    }


@pytest.mark.parametrize(
    "case",
    [
        "tampered signature",
        "tampered id",
        "truncated by one",
        "truncated by half",
        "id only",
        "extended",
        "not base62",
        "unicode",
        "very long",
        "unknown message",
        "sql-ish",
    ],
)
def test_tampered_or_truncated_tokens_are_a_plain_not_found(tenancy, client, case):
    message = sent_message(tenancy.project_a, PHONE)
    token = bad_tokens(message)[case]
    for method in (client.get, client.post):
        response = method(f"/o/{token}")
        assert response.status_code == 404
        text = response.content.decode()
        assert "Not found" in text and "Alpha" not in text and "expired" not in text
    assert not OptOut.objects.exists() and not OptOutEvent.objects.exists()


def test_a_message_without_an_address_has_no_link(tenancy, client):
    message = sent_message(tenancy.project_a, PHONE)
    Message.objects.filter(pk=message.pk).update(address="")
    assert client.get(link_path(message)).status_code == 404


def test_a_token_opts_out_in_its_own_brand_only(tenancy, client):
    """The same number in two brands: brand B's link silences brand B, not brand A."""
    person_a = PersonFactory(brand=tenancy.brand_a, phone=PHONE)
    sent_message(tenancy.project_a, PHONE, person=person_a)
    message_b = sent_message(tenancy.project_b, PHONE)
    page = client.get(link_path(message_b))
    assert b"Beta" in page.content and b"Alpha" not in page.content
    client.post(link_path(message_b))
    assert list(OptOut.objects.values_list("brand__slug", flat=True)) == ["beta"]
    person_a.refresh_from_db()
    assert "Opted out" not in person_a.metadata


def test_the_link_page_needs_no_login_and_shows_no_navigation(tenancy, client):
    message = sent_message(tenancy.project_a, PHONE)
    page = client.get(link_path(message))
    assert page.status_code == 200 and b"Log out" not in page.content
    assert b'name="robots" content="noindex' in page.content
    assert client.get(link_path(message) + "/").status_code == 200  # a trailing slash is fine


def test_scheduling_from_an_alphanumeric_sender_needs_the_link(tenancy, api_client_for):
    from tests.factories.brands import ApiKeyFactory

    client = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a))
    response = client.post(
        "/api/v1/distributions/",
        {"project": tenancy.project_a.pk, "message": "Hi ${link}", "sender": "ACME"},
        format="json",
    )
    assert response.status_code == 400
    assert "${opt_out_link}" in response.json()["error"]["message"]
    assert not Distribution.objects.exists()
