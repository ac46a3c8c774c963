"""The SQL statements of one signed two-way reply (docs/benchmarks.md, "Two-way SMS: signed
inbound replies"): pinned, so that a change that adds one per reply is seen. If a change
removes some, lower the pin; the list printed on failure says what each reply ran."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import pytest

from conversations.models import Session, Turn
from distributions.models import Distribution, Message, ProviderAccount
from optouts.models import InboundMessage, OptOut
from projects.models import Response
from surveys.services import question_create
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
PHONE = "+14155550123"

# Statements per reply, in the request's transaction (a test runs inside one, so its
# BEGIN/COMMIT are a SAVEPOINT/RELEASE here, counted). Before issue 20's work: 28, 22, 22.
FIRST_ANSWER = 17  # opens the session from the invite
NEXT_ANSWER = 13  # the session's next question
LAST_ANSWER = 14  # completes the response (its event reads the brand's webhook endpoints)


@pytest.fixture
def two_way_invite(tenancy, settings):
    """Brand A's Twilio number, a three-question survey and a two-way invite sent to PHONE
    (as the benchmark has them)."""
    settings.PUBLIC_BASE_URL = "http://testserver"
    settings.TWILIO_AUTH_TOKEN = PLATFORM_TOKEN
    brand, project = tenancy.brand_a, tenancy.project_a
    ProviderAccount.objects.create(
        brand=brand,
        provider="twilio",
        account_sid=SID_A,
        auth_token=TOKEN_A,
        default_sender=SENDER_A,
    )
    question_create(project=project, kind="single", text="Which store?", choices=["Lyon", "Nice"])
    question_create(project=project, kind="rating", text="How likely?")
    question_create(project=project, kind="text", text="What should we improve?")
    person = PersonFactory(brand=brand, phone=PHONE)
    participant = ParticipantFactory(project=project, person=person)
    now = timezone.now()
    invite = Distribution.objects.create(
        project=project, message="Hi", mode="two_way", send_at=now, status="sent"
    )
    return Message.objects.create(
        distribution=invite,
        participant=participant,
        person=person,
        address=PHONE,
        status="sent",
        status_changed_at=now,
        sent_at=now,
        body="Hi\n\n(1/3) Which store?",
        segments=1,
    )


def _reply(client, body: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        answer = post_inbound(
            client, inbound_params(from_=PHONE, to=SENDER_A, body=body), token=TOKEN_A
        )
    assert answer.status_code == 200
    return [query["sql"] for query in queries]


def _listing(statements: list[str]) -> str:
    return "\n".join(f"{n}. {sql[:160]}" for n, sql in enumerate(statements, 1))


def test_a_signed_reply_runs_a_pinned_number_of_statements(client, two_way_invite):
    first = _reply(client, "1")
    assert len(first) == FIRST_ANSWER, _listing(first)
    session = Session.objects.get()
    assert (session.message, session.position, session.status) == (two_way_invite, 2, "open")

    second = _reply(client, "7")
    assert len(second) == NEXT_ANSWER, _listing(second)
    session.refresh_from_db()
    store, rating, _ = two_way_invite.distribution.project.questions.order_by("position")
    assert session.position == 3
    assert session.response.answers == {str(store.pk): "Lyon", str(rating.pk): 7}

    third = _reply(client, "Friendly staff")
    assert len(third) == LAST_ANSWER, _listing(third)
    session.refresh_from_db()
    assert session.status == "completed"
    assert Response.objects.get().status == "complete"
    # Each reply stored once, each its turn; each answer followed by one text to send.
    assert InboundMessage.objects.filter(action="stored").count() == 3
    assert Turn.objects.filter(direction="in", kind="answer").count() == 3
    assert list(
        Turn.objects.filter(direction="out").order_by("pk").values_list("kind", flat=True)
    ) == ["question", "question", "thank_you"]


def test_stop_still_wins_and_is_recorded_once(client, two_way_invite):
    _reply(client, "1")
    _reply(client, "STOP")
    assert OptOut.objects.filter(address=PHONE, active=True).count() == 1
    assert Session.objects.get().status == "opted_out"
    stop = InboundMessage.objects.get(kind="STOP")
    assert (stop.action, stop.optout_id) == ("opted_out", OptOut.objects.get().pk)
