"""Two-way SMS end to end: a real Celery worker sends the invites and every follow-up text
through the real twilio SDK to the Twilio-compatible fake, and the recipients answer by
signed inbound webhooks posted by the fake to the live server (docs/two-way.md)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from django.db import connection
from django.db.models import Sum
from django.utils import timezone

import pytest

from conversations.models import Session, Turn
from credits.models import CountryRate, CreditEntry
from distributions.models import Message, ProviderAccount
from distributions.services import distribution_create
from optouts.models import InboundMessage, OptOut
from participants.models import Person
from projects.models import Response
from surveys.services import question_create
from surveys.sms import CLOSED_TEXT
from tests.factories.credits import grant
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory
from tests.fake_twilio import FakeTwilio
from tests.progress import until, wait_until_finished

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
SENDER = "+15005550006"
RECIPIENTS = 200
OUT_RATE, IN_RATE = Decimal("0.01"), Decimal("0.002")


@pytest.fixture
def fake():
    with FakeTwilio() as server:
        yield server


def _people(brand, project, count):
    people = []
    for i in range(count):
        person = PersonFactory(brand=brand, first_name=f"P{i}", phone=f"+1415556{i:04d}")
        ParticipantFactory(project=project, person=person)
        people.append(person)
    return people


def _survey(project):
    return [
        question_create(project=project, kind="single", text="Team?", choices=["Red", "Blue"]),
        question_create(project=project, kind="rating", text="Score?"),
        question_create(project=project, kind="text", text="Why?"),
    ]


def test_two_hundred_conversations_through_the_fake(
    tenancy, fake, live_server, settings, start_worker
):
    settings.TWILIO_API_BASE_URL = fake.base_url
    settings.PUBLIC_BASE_URL = live_server.url
    brand = tenancy.brand_a
    fake.set_callbacks(enabled=False)  # delivery receipts are not what this test is about
    ProviderAccount.objects.create(
        brand=brand,
        provider="twilio",
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        default_sender=SENDER,
        messages_per_second=1000,
    )
    CountryRate.objects.create(country="US", rate=OUT_RATE, inbound_rate=IN_RATE)
    grant(brand, 1000)
    tenancy.participant_a.delete()
    Person.objects.filter(brand=brand).delete()
    project = tenancy.project_a
    team, score, why = _survey(project)
    people = _people(brand, project, RECIPIENTS)
    numbers = [person.phone for person in people]
    env = {"TWILIO_API_BASE_URL": fake.base_url, "PUBLIC_BASE_URL": live_server.url}
    worker = start_worker(concurrency=2 if connection.vendor == "postgresql" else 1, extra_env=env)
    url = f"{live_server.url}/webhooks/twilio/inbound/"

    def sent_turns() -> int:
        return Turn.objects.filter(direction="out", status="sent").count()

    def settled(expected_sent: int) -> None:
        until(
            lambda: (
                sent_turns() >= expected_sent
                and not Turn.objects.filter(status__in=["pending", "sending"]).exists()
            ),
            progress=sent_turns,
            describe=worker.output,
        )

    def answer_all(replies: dict[str, str]) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(
                pool.map(lambda item: fake.inbound(item[0], SENDER, item[1], url), replies.items())
            )
        assert set(codes) == {200}

    invite = distribution_create(project=project, message="Hi ${first_name}", mode="two_way")
    wait_until_finished(invite)
    assert fake.stats()["accepted"] == RECIPIENTS

    # Who does what: every 10th number stops after the first answer, the next one asks for
    # help, the next one answers late, the next one gets a second survey; every 5th number
    # first answers with something that is not a choice.
    stop = numbers[0::10]
    helpers = numbers[1::10]
    late = numbers[2::10]
    twice = numbers[3::10]
    invalid = set(numbers[0::5])

    # Round 1: invalid answers, then everyone answers the first question.
    answer_all(dict.fromkeys(invalid, "purple"))
    settled(len(invalid))
    answer_all({n: "1" if i % 2 else "blue" for i, n in enumerate(numbers)})
    settled(len(invalid) + RECIPIENTS)

    # A second survey on one number: a newer two-way invite from another project on the same
    # sender closes the open session of the first.
    other = ProjectFactory(brand=brand, name="Second survey")
    other_team, _, _ = _survey(other)
    for person in Person.objects.filter(phone__in=twice):
        ParticipantFactory(project=other, person=person)
    second = distribution_create(project=other, message="And this one", mode="two_way")
    wait_until_finished(second)

    # Round 2: STOP, HELP, the first answer to the second survey; the others answer the
    # second question (the late ones after their session expired).
    Session.objects.filter(address__in=late, status="open").update(expires_at=timezone.now())
    answer_all(
        dict.fromkeys(stop, "STOP")
        | dict.fromkeys(helpers, "HELP")
        | dict.fromkeys(twice, "1")
        | {n: "7" for n in numbers if n not in stop + helpers + twice}
    )
    answer_all(dict.fromkeys(helpers, "8") | dict.fromkeys(twice, "7") | dict.fromkeys(stop, "5"))
    # Round 3: the last question.
    answer_all({n: f"Because {n}" for n in numbers if n not in stop and n not in late})
    # The webhook stored the replies; the worker applies them moments later (and sends).
    until(
        lambda: (
            not InboundMessage.objects.filter(apply_state="pending").exists()
            and not Turn.objects.filter(status__in=["pending", "sending"]).exists()
        ),
        progress=lambda: (
            InboundMessage.objects.filter(apply_state="applied").count(),
            sent_turns(),
        ),
        describe=worker.output,
    )
    assert not InboundMessage.objects.filter(apply_state="failed").exists()
    assert Session.objects.exclude(status="open").count() == Session.objects.count()

    # Responses are exactly what was answered.
    complete = Response.objects.filter(project=project, status="complete")
    finishers = [n for n in numbers if n not in stop and n not in late and n not in twice]
    assert complete.count() == len(finishers)
    by_number = {
        r.participant.person.phone: r for r in complete.select_related("participant__person")
    }
    for i, number in enumerate(numbers):
        if number not in finishers:
            continue
        expected_team = "Red" if i % 2 else "Blue"
        expected_score = 8 if number in helpers else 7
        assert by_number[number].answers == {
            str(team.pk): expected_team,
            str(score.pk): expected_score,
            str(why.pk): f"Because {number}",
        }
    # The second survey's sessions took the later answers; the first survey's stay partial.
    second_responses = Response.objects.filter(project=other, status="complete")
    assert sorted(r.participant.person.phone for r in second_responses) == sorted(twice)
    assert all(r.answers[str(other_team.pk)] == "Red" for r in second_responses)
    for number in twice:
        older = Session.objects.get(address=number, project=project)
        assert older.status == "replaced"
    partial = Response.objects.filter(project=project, status="partial")
    assert partial.count() == len(stop) + len(late) + len(twice)
    # Late answers got the closed notice; nothing was sent after a STOP.
    for number in late:
        assert Session.objects.get(address=number, project=project).status == "expired"
        assert fake.messages_to(number)[-1]["body"] == CLOSED_TEXT
    for number in stop:
        assert OptOut.objects.filter(address=number, active=True).exists()
        stopped = InboundMessage.objects.get(from_number=number, kind="STOP").received_at
        sent = [m for m in fake.messages_to(number) if m["direction"] == "outbound-api"]
        assert len(sent) == 3  # the invite, the correction, the second question: before STOP
        assert not Turn.objects.filter(
            address=number, direction="out", created_at__gte=stopped
        ).exists()
        assert Session.objects.get(address=number).status == "opted_out"
    for number in helpers:
        assert any(m["direction"] == "outbound-reply" for m in fake.messages_to(number))

    # Credits: every outbound text and every reply a conversation took, each once.
    invites = Message.objects.filter(
        distribution__in=[invite, second], status__in=Message.HANDED_OVER
    )
    turns = Turn.objects.filter(direction="out", status="sent")
    api_sent = [m for m in fake.messages if m["direction"] == "outbound-api"]
    assert len(api_sent) == invites.count() + turns.count()
    charged_inbound = InboundMessage.objects.count() - len(stop)  # the "5" after STOP is free
    expected = (
        OUT_RATE
        * (invites.aggregate(s=Sum("segments"))["s"] + turns.aggregate(s=Sum("segments"))["s"])
        + IN_RATE * charged_inbound
    )
    debits = CreditEntry.objects.filter(brand=brand, kind="debit")
    assert -debits.aggregate(s=Sum("amount"))["s"] == expected
    assert debits.filter(idempotency_key__startswith="sms-inbound:").count() == charged_inbound
