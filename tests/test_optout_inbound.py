"""The inbound-SMS webhook: STOP words in every language, the 2-day rule, START, HELP, other
replies, forged and replayed requests, unknown numbers, odd encodings, brand routing."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

import pytest

from distributions.inbound import sms_reply_receive
from distributions.models import Distribution, Message, ProviderAccount
from distributions.providers.base import InboundSms
from distributions.services import distribution_materialise
from optouts.keywords import HELP_KEYWORDS, STOP_KEYWORDS
from optouts.models import InboundMessage, OptOut, OptOutEvent, Scope, Source
from optouts.services import DIRECTORY_WINDOW
from participants.models import Participant, Person
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import PersonFactory
from tests.factories.projects import ProjectFactory
from tests.test_optout_support import (
    INBOUND_PATH,
    PLATFORM_TOKEN,
    SENDER_A,
    SERVICE_B,
    SID_A,
    SID_B,
    TOKEN_A,
    TOKEN_B,
    configure_numbers,
    encode_form,
    inbound_params,
    post_inbound,
    post_raw,
    sent_message,
)

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
Action = InboundMessage.Action

# Independent of the module's data: what the issue and CTIA/Twilio require, at least.
REQUIRED_STOP_WORDS = {
    "en": ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"],
    "es": ["PARAR", "CANCELAR", "BAJA"],
    "fr": ["ARRET", "ARRÊT"],
    "de": ["STOPP", "ABMELDEN"],
    "pt": ["PARAR", "SAIR"],
    "it": ["BASTA", "FERMA"],
    "nl": ["STOPPEN", "AFMELDEN"],
}
EVERY_STOP_WORD = sorted(
    {(lang, word) for lang, words in STOP_KEYWORDS.items() for word in words}
    | {(lang, word) for lang, words in REQUIRED_STOP_WORDS.items() for word in words}
)


@pytest.fixture
def numbers(tenancy, settings):
    return configure_numbers(tenancy, settings)


def stop_from(client, phone=PHONE, body="STOP", **extra):
    return post_inbound(
        client, inbound_params(from_=phone, to=SENDER_A, body=body, **extra), token=TOKEN_A
    )


def test_every_language_is_covered():
    assert set(STOP_KEYWORDS) >= {"en", "es", "fr", "de", "pt", "it", "nl"}
    for lang, words in REQUIRED_STOP_WORDS.items():
        assert set(words) <= set(STOP_KEYWORDS[lang]), lang


@pytest.mark.parametrize(("language", "word"), EVERY_STOP_WORD)
def test_each_stop_word_in_each_language_opts_out(client, numbers, language, word):
    message = sent_message(numbers.project_a, PHONE)
    body = f"  {word.lower()} " if len(word) % 2 else word  # whole text, trimmed, case-folded
    response = stop_from(client, body=body)
    assert response.status_code == 200 and response.content == EMPTY_TWIML
    optout = OptOut.objects.get(brand=numbers.brand_a, address=PHONE, active=True)
    assert (optout.source, optout.scope, optout.person_id) == (
        Source.REPLY,
        Scope.DIRECTORY,
        message.person_id,
    )
    inbound = InboundMessage.objects.get()
    assert inbound.kind == "STOP" and inbound.action == Action.OPTED_OUT
    assert language in STOP_KEYWORDS and inbound.keyword.casefold() == word.casefold()
    assert inbound.message == message and inbound.optout == optout
    message.person.refresh_from_db()
    assert message.person.metadata["Opted out"] == "Yes"
    assert Participant.objects.get(person=message.person).metadata["Opted out"] == "Yes"


@pytest.mark.parametrize(
    "body", ["Stop!", "STOP.", "'stop'", "opt-out", "Opt Out", "S.T.O.P", "ＳＴＯＰ", "stop 🛑"]
)
def test_stop_with_punctuation_case_and_width_variants(client, numbers, body):
    sent_message(numbers.project_a, PHONE)
    stop_from(client, body=body)
    assert OptOut.objects.filter(brand=numbers.brand_a, address=PHONE, active=True).exists()


@pytest.mark.parametrize(
    "body", ["stop please", "Please stop texting me", "STOP STOP STOP now", "non-stop", "", "   "]
)
def test_other_replies_are_stored_and_shown_not_acted_on(client, numbers, body):
    sent_message(numbers.project_a, PHONE)
    response = stop_from(client, body=body)
    assert response.status_code == 200 and response.content == EMPTY_TWIML
    inbound = InboundMessage.objects.get()
    assert (inbound.kind, inbound.action, inbound.body) == ("OTHER", Action.STORED, body)
    assert not OptOut.objects.exists() and not OptOutEvent.objects.exists()


# --- the 2-day rule ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ago", "scope", "action"),
    [
        (timedelta(minutes=1), Scope.DIRECTORY, Action.OPTED_OUT),
        (DIRECTORY_WINDOW - timedelta(minutes=1), Scope.DIRECTORY, Action.OPTED_OUT),
        (DIRECTORY_WINDOW + timedelta(minutes=1), Scope.PROVIDER, Action.OPTED_OUT_PROVIDER),
        (timedelta(days=30), Scope.PROVIDER, Action.OPTED_OUT_PROVIDER),
    ],
)
def test_two_day_rule_on_both_sides(client, numbers, ago, scope, action):
    message = sent_message(numbers.project_a, PHONE, ago=ago)
    stop_from(client)
    optout = OptOut.objects.get(brand=numbers.brand_a, address=PHONE)
    assert optout.active and optout.scope == scope  # either way, we never send again
    assert InboundMessage.objects.get().action == action
    message.person.refresh_from_db()
    if scope == Scope.DIRECTORY:
        assert message.person.metadata["Opted out"] == "Yes"
    else:
        assert "Opted out" not in message.person.metadata
    event = OptOutEvent.objects.get()
    assert event.scope == scope and event.message == message and event.inbound_text == "STOP"


def test_the_two_days_count_from_our_last_message(client, numbers):
    old = sent_message(numbers.project_a, PHONE, ago=timedelta(days=9))
    other_project = ProjectFactory(brand=numbers.brand_a)  # same brand, another project
    recent = sent_message(other_project, PHONE, ago=timedelta(hours=47), person=old.person)
    stop_from(client)
    assert OptOut.objects.get().scope == Scope.DIRECTORY
    assert InboundMessage.objects.get().message == recent


def test_a_late_stop_then_a_timely_one_upgrades_to_the_directory(client, numbers):
    message = sent_message(numbers.project_a, PHONE, ago=timedelta(days=5))
    stop_from(client)
    assert OptOut.objects.get().scope == Scope.PROVIDER
    sent_message(numbers.project_a, PHONE, ago=timedelta(hours=1), person=message.person)
    stop_from(client, body="Stop")
    optout = OptOut.objects.get()
    assert optout.scope == Scope.DIRECTORY and optout.active
    message.person.refresh_from_db()
    assert message.person.metadata["Opted out"] == "Yes"
    assert OptOutEvent.objects.count() == 2


def test_messages_not_handed_over_do_not_count(client, numbers):
    """Only a message handed to the provider (sent_at) opens the 2-day window."""
    message = sent_message(numbers.project_a, PHONE, ago=timedelta(days=3))
    Message.objects.create(
        distribution=message.distribution,
        person=message.person,
        address=PHONE,
        status=Message.Status.SKIPPED_OPTOUT,
        status_changed_at=timezone.now(),
    )
    stop_from(client)
    assert OptOut.objects.get().scope == Scope.PROVIDER


# --- START and HELP -----------------------------------------------------------------------
@pytest.mark.parametrize("word", ["START", "unstop", "Yes", "SI", "OUI"])
def test_start_words_resubscribe_at_the_provider_only(client, numbers, word):
    message = sent_message(numbers.project_a, PHONE)
    stop_from(client)
    response = stop_from(client, body=word)
    assert response.status_code == 200 and response.content == EMPTY_TWIML
    optout = OptOut.objects.get()
    assert optout.active  # never a directory opt-in: only a brand admin opts people in
    message.person.refresh_from_db()
    assert message.person.metadata["Opted out"] == "Yes"
    note = OptOutEvent.objects.get(action=OptOutEvent.Action.RESUBSCRIBE)
    assert note.scope == Scope.PROVIDER and note.optout == optout and note.inbound_text == word
    assert InboundMessage.objects.get(kind="START").action == Action.RESUBSCRIBED_PROVIDER


def test_start_without_an_opt_out_is_just_a_reply(client, numbers):
    sent_message(numbers.project_a, PHONE)
    stop_from(client, body="YES")
    inbound = InboundMessage.objects.get()
    assert (inbound.kind, inbound.action) == ("START", Action.STORED)
    assert not OptOutEvent.objects.exists()


ALL_HELP_WORDS = sorted({w for words in HELP_KEYWORDS.values() for w in words})


@pytest.mark.parametrize("word", ALL_HELP_WORDS)
def test_help_words_get_the_brands_help_text(client, numbers, word):
    sent_message(numbers.project_a, PHONE)
    response = stop_from(client, body=word.lower())
    assert response["Content-Type"].startswith("text/xml")
    text = response.content.decode()
    assert "<Message>Alpha: survey invitations by text message." in text
    assert "Reply STOP to opt out" in text
    inbound = InboundMessage.objects.get()
    assert inbound.action == Action.HELP_SENT and inbound.reply.startswith("Alpha:")
    assert not OptOut.objects.exists()


def test_custom_help_text_is_escaped(client, numbers):
    ProviderAccount.objects.filter(brand=numbers.brand_a).update(
        help_text="Alpha HR <surveys> & more: reply STOP to opt out"
    )
    response = stop_from(client, body="HELP")
    assert b"<Message>Alpha HR &lt;surveys&gt; &amp; more: reply STOP" in response.content


def test_advanced_opt_out_help_is_not_answered_twice(client, numbers):
    response = stop_from(client, body="HELP", OptOutType="HELP")
    assert response.content == EMPTY_TWIML
    assert InboundMessage.objects.get().action == Action.HELP_BY_PROVIDER


def test_advanced_opt_out_custom_keyword_is_trusted(client, numbers):
    """Twilio's Advanced Opt-Out may have custom keywords: its OptOutType wins."""
    sent_message(numbers.project_a, PHONE)
    stop_from(client, body="LEAVE ME ALONE", OptOutType="STOP")
    assert OptOut.objects.get().scope == Scope.DIRECTORY
    assert InboundMessage.objects.get().keyword == ""


# --- forged, replayed, unknown ------------------------------------------------------------
@pytest.mark.parametrize(
    "forgery", ["no signature", "wrong token", "other brand's token", "tampered body", "other url"]
)
def test_forged_requests_answer_403_and_change_nothing(client, numbers, forgery, settings):
    sent_message(numbers.project_a, PHONE)
    params = inbound_params(from_=PHONE, to=SENDER_A, body="STOP")
    if forgery == "no signature":
        response = client.post(INBOUND_PATH, params)
    elif forgery == "wrong token":
        response = post_inbound(client, params, token="x" * 32)
    elif forgery == "other brand's token":
        response = post_inbound(client, params, token=TOKEN_B)
    elif forgery == "tampered body":
        from tests.test_optout_support import sign

        signature = sign({**params, "Body": "hello"}, TOKEN_A)
        response = post_inbound(client, params, token=TOKEN_A, signature=signature)
    else:
        from twilio.request_validator import RequestValidator

        signature = RequestValidator(TOKEN_A).compute_signature(
            "http://evil.example/webhooks/twilio/inbound/", params
        )
        response = post_inbound(client, params, token=TOKEN_A, signature=signature)
    assert response.status_code == 403
    assert not InboundMessage.objects.exists() and not OptOut.objects.exists()
    assert not OptOutEvent.objects.exists()


def test_get_is_not_allowed(client, numbers):
    assert client.get(INBOUND_PATH).status_code == 405


def test_a_replayed_webhook_changes_nothing(client, numbers):
    sent_message(numbers.project_a, PHONE)
    params = inbound_params(from_=PHONE, to=SENDER_A, body="HELP")
    first = post_inbound(client, params, token=TOKEN_A)
    again = post_inbound(client, params, token=TOKEN_A)
    assert b"<Message>" in first.content
    assert again.status_code == 200 and again.content == EMPTY_TWIML  # no second help text
    stop = inbound_params(from_=PHONE, to=SENDER_A, body="STOP")
    for _ in range(3):
        assert post_inbound(client, stop, token=TOKEN_A).status_code == 200
    assert InboundMessage.objects.count() == 2
    assert OptOutEvent.objects.count() == 1 and OptOut.objects.count() == 1


def test_the_same_sid_twice_in_the_service_is_one_row(numbers):
    sent_message(numbers.project_a, PHONE)
    reply = InboundSms(from_number=PHONE, to_number="", body="STOP", provider_sid="SMdup")
    first = sms_reply_receive(brand=numbers.brand_a, inbound=reply, provider="twilio")
    second = sms_reply_receive(brand=numbers.brand_a, inbound=reply, provider="twilio")
    assert not first.replayed and second.replayed and first.inbound == second.inbound


def test_a_number_the_brand_never_messaged_is_stored_not_opted_out(client, numbers):
    response = stop_from(client, phone="+14155550999")
    assert response.status_code == 200 and response.content == EMPTY_TWIML
    inbound = InboundMessage.objects.get()
    assert inbound.brand == numbers.brand_a and inbound.action == Action.UNKNOWN_NUMBER
    assert not OptOut.objects.exists() and not OptOutEvent.objects.exists()


def test_a_directory_person_never_messaged_is_opted_out_at_the_provider_level(client, numbers):
    person = PersonFactory(brand=numbers.brand_a, phone=PHONE)
    stop_from(client)
    optout = OptOut.objects.get()
    assert optout.scope == Scope.PROVIDER and optout.person == person
    person.refresh_from_db()
    assert "Opted out" not in person.metadata


def test_numbers_of_no_brand_are_stored_with_the_platform_signature(client, numbers):
    params = inbound_params(from_="+14155550999", to="+15005559999", body="STOP", AccountSid="AC0")
    assert post_inbound(client, params, token=TOKEN_A).status_code == 403
    response = post_inbound(client, params, token=PLATFORM_TOKEN)
    assert response.status_code == 200 and response.content == EMPTY_TWIML
    inbound = InboundMessage.objects.get()
    assert inbound.brand is None and inbound.action == Action.UNKNOWN_NUMBER
    assert not OptOut.objects.exists()


# --- encodings and sizes ------------------------------------------------------------------
def test_replies_in_other_encodings(client, numbers):
    sent_message(numbers.project_a, PHONE)
    params = inbound_params(from_=PHONE, to=SENDER_A, body="Arrêt")
    raw = encode_form(params, "latin-1")
    response = post_raw(client, raw, params, token=TOKEN_A, charset="ISO-8859-1")
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.body == "Arrêt" and inbound.language == "fr"
    assert OptOut.objects.get().scope == Scope.DIRECTORY


def test_invalid_utf8_and_lost_characters(client, numbers):
    sent_message(numbers.project_a, PHONE)
    # "ARRÊT" sent as latin-1 but read as UTF-8: the Ê becomes U+FFFD.
    raw = b"Body=ARR%CAT&From=" + PHONE.replace("+", "%2B").encode() + b"&To=%2B15005550006"
    raw += b"&MessageSid=SMbad1&AccountSid=" + SID_A.encode()
    params = {
        "Body": "ARR\ufffdT",
        "From": PHONE,
        "To": SENDER_A,
        "MessageSid": "SMbad1",
        "AccountSid": SID_A,
    }
    response = post_raw(client, raw, params, token=TOKEN_A)
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.body == "ARR\ufffdT" and inbound.kind == "STOP" and inbound.approximate
    assert OptOut.objects.filter(address=PHONE, active=True).exists()


@pytest.mark.parametrize(
    "body",
    ["STOP\x00", "\x00\x00", "👍🏽 merci", "ש\u200fלום", "x" * 20_000, "STOP" + "\u200b" * 3],
)
def test_odd_bodies_are_stored_without_errors(client, numbers, body):
    sent_message(numbers.project_a, PHONE)
    response = stop_from(client, body=body)
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert "\x00" not in inbound.body and len(inbound.body) <= 5000
    opted = OptOut.objects.exists()
    assert opted == body.replace("\x00", "").replace("\u200b", "").strip().upper().startswith(
        "STOP"
    )


# --- routing and tenancy ------------------------------------------------------------------
def test_stop_to_brand_a_does_not_silence_brand_b(client, numbers):
    """By design: each brand is a separate sender with its own consent."""
    person_b = PersonFactory(brand=numbers.brand_b, phone=PHONE)
    sent_message(numbers.project_b, PHONE, person=person_b)
    sent_message(numbers.project_a, PHONE)
    stop_from(client)
    assert OptOut.objects.filter(brand=numbers.brand_a, active=True).count() == 1
    assert not OptOut.objects.filter(brand=numbers.brand_b).exists()
    person_b.refresh_from_db()
    assert "Opted out" not in person_b.metadata
    # Brand B's next distribution still reaches the number.
    distribution = DistributionFactory(
        project=numbers.project_b, status=Distribution.Status.IN_PROGRESS
    )
    distribution_materialise(distribution=distribution)
    row = distribution.messages.get(person=person_b)
    assert row.status == Message.Status.PENDING


def test_routing_by_messaging_service_and_account(client, numbers):
    person_b = PersonFactory(brand=numbers.brand_b, phone=PHONE)
    sent_message(numbers.project_b, PHONE, person=person_b)
    sent_message(numbers.project_a, PHONE)
    # To is a number of the messaging service's pool, not B's default sender.
    params = inbound_params(
        from_=PHONE, to="+15005550077", body="STOP", MessagingServiceSid=SERVICE_B
    )
    assert post_inbound(client, params, token=TOKEN_B).status_code == 200
    assert OptOut.objects.get().brand == numbers.brand_b
    # Only the account sid names the brand.
    params = inbound_params(from_="+14155550124", to="+15005550078", body="HELP", AccountSid=SID_B)
    response = post_inbound(client, params, token=TOKEN_B)
    assert b"Beta:" in response.content


def test_routing_falls_back_to_the_brand_that_last_messaged_the_number(client, numbers, settings):
    ProviderAccount.objects.filter(brand=numbers.brand_b).delete()
    settings.TWILIO_AUTH_TOKEN = PLATFORM_TOKEN  # brand B sends through the platform account
    person_b = PersonFactory(brand=numbers.brand_b, phone=PHONE)
    sent_message(numbers.project_b, PHONE, person=person_b)
    params = inbound_params(from_=PHONE, to="+15005550079", body="stop", AccountSid="ACzz")
    assert post_inbound(client, params, token=PLATFORM_TOKEN).status_code == 200
    assert OptOut.objects.get().brand == numbers.brand_b
    assert InboundMessage.objects.get().brand == numbers.brand_b


def test_inbound_brand_a_stop_is_visible_to_brand_a_only(client, numbers, api_client_for):
    sent_message(numbers.project_a, PHONE)
    stop_from(client)
    assert InboundMessage.objects.for_brand(numbers.brand_b).count() == 0
    assert InboundMessage.objects.for_brand(numbers.brand_a).count() == 1
    assert Person.objects.filter(metadata__has_key="Opted out").count() == 1


def test_the_help_reply_says_what_start_does_and_so_do_the_docs(client, numbers):
    """Only a brand admin opts a person back in (the seed): the HELP reply must not promise that
    START does, and docs/optouts.md quotes the reply the code sends."""
    import re
    from html import unescape
    from pathlib import Path

    from optouts.services import DEFAULT_HELP_TEXT

    sent_message(numbers.project_a, PHONE)
    stop_from(client)
    stop_from(client, body="START")
    assert OptOut.objects.get().active  # START did not opt back in...
    reply = unescape(stop_from(client, body="HELP").content.decode())
    assert "START" not in reply and "opt back in" not in reply  # ...and HELP does not say so
    assert "Reply STOP to opt out." in reply and "contact Alpha" in reply

    docs = Path(__file__).resolve().parent.parent / "docs" / "optouts.md"
    flat = " ".join(docs.read_text().split())
    quoted = " ".join(DEFAULT_HELP_TEXT.format(brand="<Brand>").split())
    assert f'*"{quoted}"*' in flat
    assert not re.search(r"START to opt (back )?in", flat)
