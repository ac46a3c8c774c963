"""Two-way SMS surveys (docs/two-way.md): the mode's rules on every path, the invite's first
text, replies through the inbound service (the signed webhook path is proved end to end by
tests/test_two_way_integration.py), answers as responses, keywords and the cost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.utils import timezone

import pytest

from conversations.keywords import keyword_create
from conversations.models import Session, SmsKeyword, Turn
from conversations.replies import replies_apply
from credits.models import CountryRate, CreditEntry
from distributions.copies import distribution_copy
from distributions.inbound import sms_reply_receive
from distributions.models import Distribution, Message
from distributions.providers.base import InboundSms
from distributions.services import distribution_create
from optouts.models import Consent, ConsentPolicy, InboundMessage, OptOutEvent
from projects.models import Response
from surveys.services import question_create
from surveys.sms import CLOSED_TEXT, THANK_YOU_TEXT
from tests.factories.credits import grant, set_default_rate
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db
SENDER = "+15005550006"
S = Session.Status


@pytest.fixture
def survey(tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    questions = [
        question_create(
            project=project, kind="single", text="How did you hear of us?", choices=["Web", "Ad"]
        ),
        question_create(project=project, kind="rating", text="How likely to recommend?"),
        question_create(project=project, kind="text", text="Anything to add?"),
    ]
    people = [
        ParticipantFactory(
            project=project,
            person=PersonFactory(brand=tenancy.brand_a, first_name=name, phone=phone),
        )
        for name, phone in [("Ada", "+14155550101"), ("Bob", "+14155550102")]
    ]
    tenancy.questions, tenancy.people = questions, people
    return tenancy


def invite(project, django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        sent = distribution_create(
            project=project, message="Hi ${first_name}!", mode="two_way", **kwargs
        )
    sent.refresh_from_db()
    return sent


def reply(brand, number, body, *, sid, to=SENDER, at=None, callbacks=None):
    """The webhook's part (stored; STOP and START acted on), then the applier's (the
    conversation), as a worker runs it right after."""
    inbound = InboundSms(from_number=number, to_number=to, body=body, provider_sid=sid)
    if callbacks is None:
        result = sms_reply_receive(brand=brand, inbound=inbound, provider="twilio", received_at=at)
        replies_apply()
        return result
    with callbacks(execute=True):
        result = sms_reply_receive(brand=brand, inbound=inbound, provider="twilio", received_at=at)
        replies_apply()
        return result


def texts_to(number):
    return list(
        Turn.objects.filter(address=number, direction="out")
        .order_by("created_at", "pk")
        .values_list("body", "status")
    )


def test_a_survey_that_cannot_be_texted_is_refused_naming_its_questions(survey):
    question_create(
        project=survey.project_a, kind="multiple", text="Which ones?", choices=["A", "B"]
    )
    with pytest.raises(ValidationError) as caught:
        distribution_create(project=survey.project_a, message="Hi", mode="two_way")
    assert '4. "Which ones?" (Multiple choice)' in caught.value.message_dict["mode"][0]
    with pytest.raises(ValidationError) as caught:
        distribution_create(project=survey.project_a, message="Hi", mode="two_way", sender="ACME")
    assert "alphanumeric" in caught.value.message_dict["sender"][0]
    with pytest.raises(ValidationError) as caught:
        distribution_create(
            project=survey.project_a,
            message="<p>${link} ${opt_out_link}</p>",
            channel="email",
            subject="Hi",
            mode="two_way",
        )
    assert caught.value.message_dict["mode"] == ["Only SMS distributions can be two-way."]
    assert not Distribution.objects.exists()


def test_a_copy_stays_two_way_and_meets_the_same_rules(survey):
    original = distribution_create(
        project=survey.project_a,
        message="Hi",
        mode="two_way",
        send_at=timezone.now() + timedelta(days=1),
    )
    assert distribution_copy(original=original).mode == Distribution.Mode.TWO_WAY
    question_create(project=survey.project_a, kind="multiple", text="Which?", choices=["A", "B"])
    with pytest.raises(ValidationError) as caught:
        distribution_copy(original=original)
    assert '4. "Which?" (Multiple choice)' in caught.value.message_dict["mode"][0]
    assert Distribution.objects.count() == 2


def test_the_api_refuses_it_too(survey, api_a):
    question_create(project=survey.project_a, kind="multiple", text="Which?", choices=["A", "B"])
    answer = api_a.post(
        "/api/v1/distributions/",
        {"project": survey.project_a.pk, "message": "Hi", "mode": "two_way"},
        format="json",
    )
    assert answer.status_code == 400, answer.json()
    assert '4. "Which?" (Multiple choice)' in answer.json()["error"]["fields"]["mode"]


def test_the_invite_asks_the_first_question_and_the_estimate_counts_the_conversation(
    survey, api_a, eager_tasks, django_capture_on_commit_callbacks
):
    estimate = api_a.post(
        "/api/v1/distributions/estimate/",
        {"project": survey.project_a.pk, "message": "Hi ${first_name}!", "mode": "two_way"},
        format="json",
    ).json()
    assert estimate["two_way"] == {
        "questions": 3,
        "outbound_texts": 3,
        "outbound_segments": 3,
        "inbound_replies": 3,
    }
    sent = invite(survey.project_a, django_capture_on_commit_callbacks)
    body = sent.messages.get(person__first_name="Ada").body
    assert body == (
        "Hi Ada!\n\n(1/3) How did you hear of us?\n1) Web\n2) Ad\n"
        "Reply with a number from 1 to 2.\nReply STOP to opt out."
    )
    assert sent.messages.get(person__first_name="Ada").segments == estimate["segments_per_message"]


def test_a_conversation_from_invite_to_thank_you(
    survey, eager_tasks, django_capture_on_commit_callbacks
):
    brand = survey.brand_a
    sent = invite(survey.project_a, django_capture_on_commit_callbacks)
    ada = sent.messages.get(person__first_name="Ada")
    cb = django_capture_on_commit_callbacks

    reply(brand, ada.address, "3", sid="SM1", callbacks=cb)  # no choice 3: corrected
    reply(brand, ada.address, "HELP", sid="SM2", callbacks=cb)  # answered, session waits
    reply(brand, ada.address, "2", sid="SM3", callbacks=cb)
    reply(brand, ada.address, "eleven", sid="SM4", callbacks=cb)
    reply(brand, ada.address, "9", sid="SM5", callbacks=cb)
    session = Session.objects.get(address=ada.address)
    response = Response.objects.get(pk=session.response_id)
    assert response.status == Response.Status.PARTIAL
    assert response.channel == Response.Channel.SMS_TWO_WAY
    reply(brand, ada.address, "Great service", sid="SM6", callbacks=cb)
    reply(brand, ada.address, "Great service", sid="SM6", callbacks=cb)  # a replay: nothing

    session.refresh_from_db()
    response.refresh_from_db()
    q1, q2, q3 = survey.questions
    assert session.status == S.COMPLETED
    assert response.status == Response.Status.COMPLETE
    assert response.answers == {str(q1.pk): "Ad", str(q2.pk): 9, str(q3.pk): "Great service"}
    assert (response.participant_id, response.distribution_id) == (ada.participant_id, sent.pk)
    bodies = [body.split("\n")[0] for body, _ in texts_to(ada.address)]
    assert bodies == [
        "Sorry, please reply with a number from 1 to 2.",
        "(2/3) How likely to recommend?",
        "Sorry, please reply with a whole number from 0 to 10.",
        "(3/3) Anything to add?",
        THANK_YOU_TEXT,
    ]
    assert {status for _, status in texts_to(ada.address)} == {Turn.Status.SENT}
    kinds = list(session.turns.filter(direction="in").values_list("kind", flat=True))
    assert kinds == ["invalid", "help", "answer", "invalid", "answer", "answer"]
    # A late answer gets the closed notice.
    reply(brand, ada.address, "more", sid="SM7", callbacks=cb)
    assert texts_to(ada.address)[-1] == (CLOSED_TEXT, Turn.Status.SENT)


def test_stop_ends_the_session_and_nothing_more_is_sent(
    survey, eager_tasks, django_capture_on_commit_callbacks
):
    brand, cb = survey.brand_a, django_capture_on_commit_callbacks
    sent = invite(survey.project_a, django_capture_on_commit_callbacks)
    bob = sent.messages.get(person__first_name="Bob")
    reply(brand, bob.address, "1", sid="SM1", callbacks=cb)
    reply(brand, bob.address, "Stop", sid="SM2", callbacks=cb)
    reply(brand, bob.address, "7", sid="SM3", callbacks=cb)
    session = Session.objects.get(address=bob.address)
    assert session.status == S.OPTED_OUT
    assert len(texts_to(bob.address)) == 1  # the second question only
    response = Response.objects.get(pk=session.response_id)
    assert response.status == Response.Status.PARTIAL
    assert list(response.answers.values()) == ["Web"]


def test_too_many_invalid_answers_and_expiry(
    survey, eager_tasks, django_capture_on_commit_callbacks
):
    brand, cb = survey.brand_a, django_capture_on_commit_callbacks
    sent = invite(survey.project_a, django_capture_on_commit_callbacks)
    ada = sent.messages.get(person__first_name="Ada")
    bob = sent.messages.get(person__first_name="Bob")
    for n in range(3):
        reply(brand, ada.address, "what?", sid=f"SMa{n}", callbacks=cb)
    assert Session.objects.get(address=ada.address).status == S.GAVE_UP
    late = bob.sent_at + timedelta(hours=25)
    reply(brand, bob.address, "1", sid="SMb", at=late, callbacks=cb)
    assert Session.objects.get(address=bob.address).status == S.EXPIRED
    assert texts_to(bob.address) == [(CLOSED_TEXT, Turn.Status.SENT)]
    assert not Response.objects.exists()


def test_a_newer_invite_closes_the_older_session(
    survey, eager_tasks, django_capture_on_commit_callbacks
):
    brand, cb = survey.brand_a, django_capture_on_commit_callbacks
    first = invite(survey.project_a, django_capture_on_commit_callbacks)
    ada = first.messages.get(person__first_name="Ada")
    reply(brand, ada.address, "1", sid="SM1", callbacks=cb)
    second = invite(survey.project_a, django_capture_on_commit_callbacks)
    reply(brand, ada.address, "2", sid="SM2", callbacks=cb)
    older, newer = Session.objects.filter(address=ada.address).order_by("pk")
    assert (older.distribution_id, older.status) == (first.pk, S.REPLACED)
    assert (newer.distribution_id, newer.status, newer.position) == (second.pk, S.OPEN, 2)
    q1 = str(survey.questions[0].pk)
    assert Response.objects.get(pk=older.response_id).answers == {q1: "Web"}
    assert Response.objects.get(pk=newer.response_id).answers == {q1: "Ad"}


def test_keyword_starts_an_anonymous_session(
    survey, eager_tasks, django_capture_on_commit_callbacks
):
    brand, cb = survey.brand_a, django_capture_on_commit_callbacks
    keyword_create(brand=brand, project=survey.project_a, sender=SENDER, keyword="pulse")
    with pytest.raises(ValidationError) as caught:
        keyword_create(brand=brand, project=survey.project_a, sender=SENDER, keyword="Pulse!")
    assert "already" in caught.value.message_dict["keyword"][0]
    with pytest.raises(ValidationError) as caught:
        keyword_create(brand=brand, project=survey.project_a, sender=SENDER, keyword="arrêt")
    assert "STOP" in caught.value.message_dict["keyword"][0]
    stranger = "+14155559999"
    reply(brand, stranger, " Pulse ", sid="SK1", callbacks=cb)
    assert texts_to(stranger)[0][0].startswith("(1/3) How did you hear of us?")
    for n, answer in enumerate(["web", "10", "Nice"]):
        reply(brand, stranger, answer, sid=f"SK{n + 2}", callbacks=cb)
    session = Session.objects.get(address=stranger)
    response = Response.objects.get(pk=session.response_id)
    assert (session.origin, session.status) == ("keyword", S.COMPLETED)
    assert response.participant_id is None
    assert response.embedded_data == {"sms_from": stranger, "sms_keyword": "PULSE"}
    assert SmsKeyword.objects.count() == 1


def test_outbound_and_inbound_are_debited_once_each(
    survey, eager_tasks, django_capture_on_commit_callbacks
):
    brand, cb = survey.brand_a, django_capture_on_commit_callbacks
    set_default_rate(Decimal("0.05"))
    CountryRate.objects.create(country="US", rate=Decimal("0.01"), inbound_rate=Decimal("0.002"))
    grant(brand, 100)
    sent = invite(survey.project_a, django_capture_on_commit_callbacks)
    ada = sent.messages.get(person__first_name="Ada")
    for n, answer in enumerate(["x", "1", "5", "ok"]):
        reply(brand, ada.address, answer, sid=f"SM{n}", callbacks=cb)
    reply(brand, ada.address, "ok", sid="SM3", callbacks=cb)  # replayed
    debits = CreditEntry.objects.filter(brand=brand, kind="debit")
    turns = Turn.objects.filter(direction="out", status="sent")
    outbound = sum(turn.segments for turn in turns) * Decimal("0.01")
    invites = sum(m.segments for m in Message.objects.filter(distribution=sent)) * Decimal("0.01")
    expected = outbound + invites + 4 * Decimal("0.002")
    assert -debits.aggregate(s=Sum("amount"))["s"] == expected
    assert debits.filter(idempotency_key__startswith="sms-inbound:").count() == 4
    assert debits.filter(idempotency_key__startswith="sms-turn:").count() == turns.count() == 4


def test_consent_first(survey, eager_tasks, django_capture_on_commit_callbacks, page_client_for):
    brand, cb = survey.brand_a, django_capture_on_commit_callbacks
    project = survey.project_a
    ada, bob = (p.person for p in survey.people)
    with pytest.raises(ValidationError) as caught:
        distribution_create(project=project, message="May we text you?", mode="consent")
    assert "does not require consent" in caught.value.message_dict["mode"][0]
    client = page_client_for(survey.project_admin_a)
    client.post(
        f"/projects/{project.pk}/two-way/",
        {"form": "consent", "required": "on", "extra_words": "volontiers"},
    )
    assert ConsentPolicy.objects.get(project=project).required

    # No consent yet: a two-way invite reaches nobody.
    nobody = invite(project, cb)
    assert nobody.messages.count() == 0
    with cb(execute=True):
        request = distribution_create(project=project, message="May we text you?", mode="consent")
    bodies = dict(request.messages.values_list("address", "body"))
    assert bodies[ada.phone].endswith("Reply YES to agree. Reply STOP to opt out.")
    reply(brand, ada.phone, "Sí", sid="SC1", callbacks=cb)
    reply(brand, bob.phone, "maybe", sid="SC2", callbacks=cb)
    assert list(Consent.objects.values_list("address", "active")) == [(ada.phone, True)]
    # Her yes is a reply like any other: in her history, debited once at the inbound rate.
    yes = InboundMessage.objects.get(provider_sid="SC1")
    given = Turn.objects.get(inbound=yes)
    assert (given.kind, given.direction) == ("consent_yes", "in")
    assert CreditEntry.objects.filter(idempotency_key=f"sms-inbound:{yes.pk}").count() == 1

    # The next request skips Ada; the invite reaches only her.
    with cb(execute=True):
        again = distribution_create(project=project, message="Still ok?", mode="consent")
    assert list(again.messages.values_list("address", flat=True)) == [bob.phone]
    reply(brand, bob.phone, "Volontiers!", sid="SC3", callbacks=cb)
    sent = invite(project, cb)
    assert sorted(sent.messages.values_list("address", flat=True)) == [ada.phone, bob.phone]

    # STOP withdraws the consent; both are in the audit trail.
    reply(brand, ada.phone, "STOP", sid="SC4", callbacks=cb)
    assert not Consent.objects.get(address=ada.phone).active
    actions = list(
        OptOutEvent.objects.filter(address=ada.phone)
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["consent", "opt_out", "consent_withdrawn"]
