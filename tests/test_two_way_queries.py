"""The SQL statements of one signed two-way reply (docs/benchmarks.md, "Two-way SMS: signed
inbound replies"): the webhook's (authenticate, store, answer) and the applier's per batch
(``conversations.replies``), pinned, so that a change that adds one per reply is seen. If a
change removes some, lower the pin; the list printed on failure says what each ran."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import pytest

from conversations.models import Session, Turn
from conversations.replies import replies_apply_batch
from distributions import selectors
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

# Statements per request: the insert (ON CONFLICT DO NOTHING: a replay needs no savepoint;
# 3 with the savepoint's SAVEPOINT and RELEASE), and once the process has trusted its kept
# accounts for INBOUND_ACCOUNTS_TRUSTED_SECONDS, the read of their versions. Before that
# trust: 2 a request; before the reply's application left the request: 17, 13, 14 (and 28,
# 22, 22 before issue 20's work).
WEBHOOK = 1
# The applier: statements per batch whatever its size (its claim, reads and bulk writes),
# for a batch of first answers (the invite opens the session), of next answers and of last
# answers (the brands wanting the completed responses' webhook event: one read for the
# batch), and what each completed response adds (it was 1, its endpoints' read, and a task
# each for the thank-you messages: now one for the batch). Applied one by one in the
# request, a first answer had taken 17 statements. The claim is the batch's first read (its
# rows locked ``FOR UPDATE SKIP LOCKED`` in the batch's transaction); it was a transaction
# of its own (SAVEPOINT, the ids read, an UPDATE of a claim column, RELEASE) and a read of
# the claimed rows: 21, 19 and 20 then. The numbers' last messages' distributions are one
# read of their own (a batch answers a few): one model instance each, not one a reply (17,
# 15 and 16 before). The claim is two reads since it shares a batch between the brands
# waiting (how many each has, then each one's share): 18, 16 and 17 before.
FIRST_ANSWERS = 19
NEXT_ANSWERS = 17
LAST_ANSWERS = 18
PER_COMPLETED = 0


@pytest.fixture
def two_way_invite(tenancy, settings):
    """Brand A's Twilio number, a three-question survey and a two-way invite sent to PHONE
    (as the benchmark has them); ``invite_more(n)`` sends it to n more numbers."""
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
    now = timezone.now()
    invite = Distribution.objects.create(
        project=project, message="Hi", mode="two_way", send_at=now, status="sent"
    )

    def send_to(phone: str) -> Message:
        person = PersonFactory(brand=brand, phone=phone)
        return Message.objects.create(
            distribution=invite,
            participant=ParticipantFactory(project=project, person=person),
            person=person,
            address=phone,
            status="sent",
            status_changed_at=now,
            sent_at=now,
            body="Hi\n\n(1/3) Which store?",
            segments=1,
        )

    message = send_to(PHONE)
    message.invite_more = lambda n: [send_to(f"+1415555{k:04d}") for k in range(n)]
    return message


def _reply(client, body: str, phone: str = PHONE) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        answer = post_inbound(
            client, inbound_params(from_=phone, to=SENDER_A, body=body), token=TOKEN_A
        )
    assert answer.status_code == 200
    return [query["sql"] for query in queries]


def _apply() -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        replies_apply_batch()
    return [query["sql"] for query in queries]


def _listing(statements: list[str]) -> str:
    return "\n".join(f"{n}. {sql[:160]}" for n, sql in enumerate(statements, 1))


def test_a_signed_reply_costs_the_webhook_one_insert(client, two_way_invite, monkeypatch):
    for n, body in enumerate(("1", "7", "Friendly staff")):
        if n == 2:  # the process has trusted its kept accounts long enough: checked again
            monkeypatch.setattr(selectors, "INBOUND_ACCOUNTS_TRUSTED_SECONDS", 0.0)
            selectors.inbound_accounts_expire()
        statements = _reply(client, body)
        # The first request of a process reads the accounts' versions, then the accounts
        # with their brands; the next ones use them as kept (no read) for a while, then
        # check that they did not change (ids, versions, brand names: one raw read).
        assert len(statements) == WEBHOOK + {0: 2, 1: 0, 2: 1}[n], _listing(statements)
        if n != 1:
            assert statements[0].startswith("SELECT a.id, a.updated_at, b.name FROM")
        assert statements[-1].startswith('INSERT INTO "optouts_inboundmessage"')
        assert "ON CONFLICT DO NOTHING" in statements[-1]  # a replay: no savepoint needed
        replies_apply_batch()
    session = Session.objects.get()
    assert session.status == "completed"
    assert Response.objects.get().status == "complete"
    # Each reply stored once, applied once, each its turn; each answer followed by one text.
    assert InboundMessage.objects.filter(action="stored", apply_state="applied").count() == 3
    assert Turn.objects.filter(direction="in", kind="answer").count() == 3
    assert list(
        Turn.objects.filter(direction="out").order_by("pk").values_list("kind", flat=True)
    ) == ["question", "question", "thank_you"]


def test_the_applier_runs_a_fixed_number_of_statements_per_batch(client, two_way_invite):
    """A batch's statements do not grow with it: its claim, its reads (the order check, the
    numbers' last messages, their sessions, invites, projects and surveys) and each write
    for all its replies at once. Only a completed response fires its own events."""
    two_way_invite.invite_more(6)
    small, large = [PHONE, "+14155550000"], [f"+1415555{k:04d}" for k in range(1, 5)]
    for body, (fixed, per_reply) in zip(
        ("1", "7", "Friendly staff"),
        ((FIRST_ANSWERS, 0), (NEXT_ANSWERS, 0), (LAST_ANSWERS, PER_COMPLETED)),
        strict=True,
    ):
        counts = []
        for phones in (small, large):
            for phone in phones:
                _reply(client, body, phone)
            counts.append(_apply())
        grows = (len(counts[1]) - len(counts[0])) / 2
        assert (len(counts[0]) - 2 * grows, grows) == (fixed, per_reply), _listing(counts[1])
    assert InboundMessage.objects.filter(apply_state="applied").count() == 18
    assert Session.objects.filter(status="completed").count() == 6
    assert Response.objects.filter(status="complete").count() == 6
    assert Turn.objects.filter(direction="in", kind="answer").count() == 18
    assert Turn.objects.filter(direction="out", kind="question").count() == 12
    assert Turn.objects.filter(direction="out", kind="thank_you").count() == 6


def test_stop_still_wins_and_is_recorded_once(client, two_way_invite):
    _reply(client, "1")
    _reply(client, "STOP")
    # STOP is acted on in its request, before any worker applied the answer before it.
    assert OptOut.objects.filter(address=PHONE, active=True).count() == 1
    stop = InboundMessage.objects.get(kind="STOP")
    assert (stop.action, stop.optout_id) == ("opted_out", OptOut.objects.get().pk)
    replies_apply_batch()
    assert Session.objects.get().status == "opted_out"
    question = Turn.objects.get(direction="out")
    assert question.status == "skipped_optout"


def test_a_changed_auth_token_takes_effect_at_once(client, two_way_invite):
    assert _reply(client, "1")  # the accounts are now kept by the process
    account = ProviderAccount.objects.get()
    account.auth_token = "a-new-token-" + "9" * 20
    account.save()
    old = post_inbound(client, inbound_params(from_=PHONE, to=SENDER_A, body="7"), token=TOKEN_A)
    assert old.status_code == 403
    assert InboundMessage.objects.count() == 1  # nothing written
    new = post_inbound(
        client, inbound_params(from_=PHONE, to=SENDER_A, body="7"), token=account.auth_token
    )
    assert new.status_code == 200
    assert InboundMessage.objects.count() == 2


def test_a_token_rotated_by_another_process_is_taken_at_once(client, two_way_invite):
    """Another process saved the account (this one kept it and trusts it for a moment): a
    reply signed with the new token is refused by the kept one, so the accounts are read
    again before the answer, and it is stored; the old token is refused from then on."""
    assert _reply(client, "1")  # the accounts are now kept (and trusted) by the process
    new_token = "a-rotated-token-" + "7" * 16
    # No save() here: no signal tells this process (as when another process saves).
    ProviderAccount.objects.update(auth_token=new_token, updated_at=timezone.now())
    new = post_inbound(client, inbound_params(from_=PHONE, to=SENDER_A, body="7"), token=new_token)
    assert new.status_code == 200
    old = post_inbound(client, inbound_params(from_=PHONE, to=SENDER_A, body="8"), token=TOKEN_A)
    assert old.status_code == 403
    assert list(InboundMessage.objects.order_by("pk").values_list("body", flat=True)) == [
        "1",
        "7",
    ]
