"""The conversation: an inbound reply (already stored, STOP and HELP already acted on by
``optouts``) moves its respondent's session forward.

What callers can rely on (docs/two-way.md):
- a reply goes to the open session of its number on the sender it was texted to; the newest
  two-way invite handed to that number from that sender opens a session when its first
  reply arrives and closes an older open one (``REPLACED``, its answers kept as partial);
- STOP closes every open session of the number in the brand and nothing more is sent to it
  (the send re-checks opt-outs under the guard); HELP is answered with the help text and
  leaves the session waiting for its answer;
- an invalid answer gets a correction and the question again, at most ``max_invalid``
  times, then the session ends; an answer after ``expires_at`` gets the closed notice;
- each valid answer is saved at once (a partial response), the last one completes the
  response (``surveys.services.response_save_sms``: the same events as the web survey);
- the session row is locked while a reply is applied: two replies of one number at once
  are applied one after the other;
- a yes to a consent request (the number's last message) records the number's consent to
  that project (``optouts.services.consent_record``, with its audit event);
- every reply that reaches a conversation, and every reply to a consent request (yes or
  not, STOP and HELP included), is recorded once in the number's texts and debited once at
  the inbound rate of its country (``credits_debit_once``, keyed by the inbound message),
  by the send task.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists

from brands.models import Brand
from conversations.models import Session, SmsKeyword, Turn, TwoWaySettings
from conversations.sending import (
    reply_record,
    reply_turn,
    text_turn,
    turn_queue,
    turns_batch,
    turns_record_many,
)
from core.bulk import insert_objects, update_rows
from distributions.models import Distribution, Message
from distributions.selectors import brand_provider_account
from distributions.sending import sender_identity
from optouts.keywords import Keyword, normalize_reply
from optouts.models import ConsentPolicy, InboundMessage
from optouts.services import consent_record, consent_words_match
from projects.models import Project, Question
from surveys.answers import may_finish
from surveys.services import response_save_sms, responses_save_sms
from surveys.sms import (
    CLOSED_TEXT,
    GAVE_UP_TEXT,
    OPT_OUT_LINE,
    THANK_YOU_TEXT,
    sms_answer_parse,
    sms_question_text,
)

SStatus = Session.Status
TKind = Turn.Kind
# A reply this long after a session closed still gets the closed notice; later, nothing.
LATE_WINDOW = timedelta(days=7)
KEYWORD_EMBEDDED_FIELD = "sms_from"  # the keyword respondent's number (docs/two-way.md)
# The kind of a reply to a consent request that no conversation took (any other: not a yes).
_CONSENT_REPLY_KINDS = {Keyword.STOP: TKind.STOP, Keyword.HELP: TKind.HELP}


def settings_for(project: Project) -> TwoWaySettings:
    """The project's two-way rules (defaults without a row); read once per project object."""
    found = getattr(project, "_two_way_settings", None)
    if found is None:
        if Project.two_way.is_cached(project):  # read with the project (select_related)
            found = getattr(project, "two_way", None)
        else:
            found = TwoWaySettings.objects.filter(project=project).first()
        found = project._two_way_settings = found or TwoWaySettings(project=project)
    return found


def _questions(project: Project) -> list[Question]:
    """The survey in order; read once per project object (one reply, one read)."""
    found = getattr(project, "_two_way_questions", None)
    if found is None:
        found = project._two_way_questions = list(
            Question.objects.filter(project=project).order_by("position", "pk")
        )
    return found


# --- finding the session --------------------------------------------------------------------
def _invite_sender_matches(message: Message, inbound: InboundMessage, account) -> bool:
    """Was ``message`` sent from the number (or messaging service) ``inbound`` was texted to?"""
    identity = sender_identity(message.distribution, account) if account else ""
    if not identity:
        return True  # the platform's default sender: one number
    return identity in (inbound.to_number, inbound.messaging_service_sid)


def _latest_two_way_invite(
    brand: Brand, inbound: InboundMessage, last_message, since
) -> Message | None:
    """The newest two-way invite handed to the number from the sender it texted, if it was
    sent after ``since`` (None: any time). ``last_message`` (the brand's last message to
    the number) answers without a query when nothing was sent since."""
    if last_message is not None and since is not None and last_message.sent_at <= since:
        return None
    account = brand_provider_account(brand)
    if last_message is not None and last_message.distribution.mode == Distribution.Mode.TWO_WAY:
        candidates = [last_message]
    else:
        candidates = (
            Message.objects.filter(
                address=inbound.from_number,
                sent_at__isnull=False,
                distribution__project__brand=brand,
                distribution__mode=Distribution.Mode.TWO_WAY,
            )
            .select_related("distribution", "participant")
            .order_by("-sent_at", "-pk")[:5]
        )
    for message in candidates:
        if since is not None and message.sent_at <= since:
            return None
        if _invite_sender_matches(message, inbound, account):
            return message
    return None


def _invite_session_fields(inbound, invite: Message, project: Project, questions) -> dict:
    """The session a two-way invite opens when its number first replies: asked the first
    question when the invite was handed over, expiring the project's hours after that."""
    return {
        "address": inbound.from_number,
        "sender": inbound.to_number,
        "project": project,
        "origin": Session.Origin.INVITE,
        "distribution": invite.distribution,
        "message": invite,
        "participant_id": invite.participant_id,
        "question": questions[0],
        "position": 1,
        "opened_at": invite.sent_at,
        "asked_at": invite.sent_at,
        "expires_at": invite.sent_at + timedelta(hours=settings_for(project).expiry_hours),
    }


def _open(
    brand: Brand, *, address: str, sender: str, replaces: bool = True, **values
) -> Session | None:
    """Open a session (closing the number's open one on that sender, unless the caller,
    holding the lock, found none: ``replaces=False``); None if another request opened one
    at the same moment (the caller reads it again)."""
    now = values["opened_at"]
    if replaces:
        Session.objects.filter(
            brand=brand, address=address, sender=sender, status=SStatus.OPEN
        ).update(status=SStatus.REPLACED, closed_at=now)
    try:
        with transaction.atomic():
            return Session.objects.create(brand=brand, address=address, sender=sender, **values)
    except IntegrityError:
        return None


def _open_session(brand: Brand, inbound: InboundMessage) -> Session | None:
    return (
        Session.objects.select_for_update(of=("self",))
        .select_related("project__two_way", "response", "question")
        .filter(
            brand=brand, address=inbound.from_number, sender=inbound.to_number, status=SStatus.OPEN
        )
        .first()
    )


def _session_for(brand: Brand, inbound: InboundMessage, last_message=None) -> Session | None:
    """The open session this reply answers (locked), after letting a newer two-way invite
    replace the open one; None when there is none."""
    current = _open_session(brand, inbound)
    invite = _latest_two_way_invite(
        brand, inbound, last_message, current.opened_at if current else None
    )
    if invite is None:
        return current
    # Its project (with its two-way settings), and whether the invite opened a session
    # already (an invite opens one, ever), in one read.
    project = (
        Project.objects.select_related("two_way")
        .annotate(invite_taken=Exists(Session.objects.filter(message=invite)))
        .get(pk=invite.distribution.project_id)
    )
    if project.invite_taken:
        return current
    questions = _questions(project)
    if not questions:
        return current
    opened = _open(
        brand,
        replaces=current is not None,
        **_invite_session_fields(inbound, invite, project, questions),
    )
    # The row this transaction inserted is ours until commit; a concurrent reply that
    # opened it first is read (and locked) instead.
    return opened or _open_session(brand, inbound)


# --- the conversation -----------------------------------------------------------------------
def _inbound_turn(session: Session | None, inbound: InboundMessage, kind: str, question=None):
    return reply_record(session=session, inbound=inbound, kind=kind, question=question)


def _close(session: Session, status: str, now: datetime) -> None:
    session.status = status
    session.closed_at = now
    session.save(update_fields=["status", "closed_at"])


def _ask(session: Session, question: Question, *, total: int, now: datetime, prefix: str = ""):
    text = sms_question_text(question, number=session.position, total=total)
    turn_queue(
        session=session,
        kind=TKind.CORRECTION if prefix else TKind.QUESTION,
        body=f"{prefix}\n{text}" if prefix else text,
        question=question,
        now=now,
    )


def inbound_converse(*, brand: Brand, inbound: InboundMessage, last_message=None) -> Session | None:
    """Apply one stored reply to its conversation (see the module docstring). Returns the
    session it went to (None: it was no conversation's). ``last_message``: the brand's last
    message handed to the number (``distributions.selectors.last_message_to``), if known."""
    with turns_batch():
        return _converse(brand, inbound, last_message)


def _converse(brand: Brand, inbound: InboundMessage, last_message) -> Session | None:
    now = inbound.received_at
    consent_request = _is_consent_request(last_message)
    if inbound.kind == Keyword.STOP:
        session = _on_stop(brand, inbound, now)
    elif consent_request and _consent_given(inbound, last_message):
        return None
    else:
        session = _in_session(brand, inbound, last_message, now)
    # Each path above records the reply (a turn, debited once) exactly when it returns a
    # session. A reply to a consent request that no conversation took (a no, a maybe, a
    # STOP or HELP without an open session) is a reply all the same: in the number's texts,
    # debited once at the inbound rate (the yes is recorded by ``_consent_given``).
    if session is None and consent_request:
        _inbound_turn(None, inbound, _CONSENT_REPLY_KINDS.get(inbound.kind, TKind.CONSENT_OTHER))
    return session


def _in_session(
    brand: Brand, inbound: InboundMessage, last_message, now: datetime
) -> Session | None:
    """The reply in its open session (or a keyword's new one, or a late answer's closed
    one); None, having recorded nothing, when it is no conversation's."""
    session = _session_for(brand, inbound, last_message)
    if inbound.kind == Keyword.HELP:
        if session is not None:
            _inbound_turn(session, inbound, TKind.HELP, session.question)
        return session
    if session is None:
        return _without_session(brand, inbound, now)
    if session.expires_at <= now:
        _inbound_turn(session, inbound, TKind.LATE, session.question)
        _close(session, SStatus.EXPIRED, now)
        turn_queue(session=session, kind=TKind.CLOSED, body=CLOSED_TEXT, now=now)
        return session
    if not may_finish(session.project, started_at=session.opened_at, now=now):
        _inbound_turn(session, inbound, TKind.LATE, session.question)
        _close(session, SStatus.CLOSED, now)
        turn_queue(session=session, kind=TKind.CLOSED, body=CLOSED_TEXT, now=now)
        return session
    _answer(session, inbound, now)
    return session


def _is_consent_request(last_message) -> bool:
    """Is the number's last message from the brand a consent request (it answers that)?"""
    return last_message is not None and last_message.distribution.mode == Distribution.Mode.CONSENT


def _consent_given(inbound: InboundMessage, last_message) -> bool:
    """A yes (YES, SI, OUI… or the project's own words) to the consent request that was the
    number's last message: the number consented to that project's invites."""
    if inbound.kind == Keyword.HELP:
        return False
    project = Project.objects.get(pk=last_message.distribution.project_id)
    policy = ConsentPolicy.objects.filter(project=project).first()
    if not consent_words_match(inbound.body, extra_words=policy.extra_words if policy else ""):
        return False
    consent_record(project=project, address=inbound.from_number, inbound=inbound)
    # A reply like any other: in the number's history, debited once at the inbound rate.
    _inbound_turn(None, inbound, TKind.CONSENT_GIVEN)
    return True


def _on_stop(brand: Brand, inbound: InboundMessage, now: datetime) -> Session | None:
    """STOP ends every open conversation of the number (the opt-out is recorded already)."""
    sessions = list(
        Session.objects.select_for_update().filter(
            brand=brand, address=inbound.from_number, status=SStatus.OPEN
        )
    )
    for session in sessions:
        _close(session, SStatus.OPTED_OUT, now)
    if sessions:
        _inbound_turn(sessions[0], inbound, TKind.STOP, sessions[0].question)
        Turn.objects.filter(
            session__in=sessions, status=Turn.Status.PENDING, direction=Turn.Direction.OUT
        ).update(status=Turn.Status.SKIPPED_OPTOUT, status_reason="Opted out")
    return sessions[0] if sessions else None


def _without_session(brand: Brand, inbound: InboundMessage, now: datetime) -> Session | None:
    """No open session: a keyword starts one; an answer to a recently closed one gets the
    closed notice; anything else is no conversation's."""
    keyword = keyword_match(sender=inbound.to_number, body=inbound.body)
    if keyword is not None and keyword.brand_id == brand.pk:
        return _start_by_keyword(brand, keyword, inbound, now)
    recent = (
        Session.objects.filter(
            brand=brand,
            address=inbound.from_number,
            sender=inbound.to_number,
            closed_at__gte=now - LATE_WINDOW,
        )
        .exclude(status__in=[SStatus.OPTED_OUT, SStatus.OPEN])
        .order_by("-closed_at")
        .first()
    )
    if recent is None:
        return None
    _inbound_turn(recent, inbound, TKind.LATE)
    turn_queue(session=recent, kind=TKind.CLOSED, body=CLOSED_TEXT, now=now)
    return recent


def _answer(session: Session, inbound: InboundMessage, now: datetime) -> None:
    questions = _questions(session.project)
    question = session.question
    if question is None or question not in questions:  # the survey changed meanwhile
        _inbound_turn(session, inbound, TKind.LATE)
        _close(session, SStatus.CLOSED, now)
        turn_queue(session=session, kind=TKind.CLOSED, body=CLOSED_TEXT, now=now)
        return
    try:
        value = sms_answer_parse(question, inbound.body)
    except ValueError as exc:
        _inbound_turn(session, inbound, TKind.INVALID, question)
        session.invalid_count += 1
        if session.invalid_count >= settings_for(session.project).max_invalid:
            _close(session, SStatus.GAVE_UP, now)
            session.save(update_fields=["invalid_count"])
            turn_queue(session=session, kind=TKind.CLOSED, body=GAVE_UP_TEXT, now=now)
            return
        session.save(update_fields=["invalid_count"])
        _ask(session, question, total=len(questions), now=now, prefix=str(exc))
        return
    _inbound_turn(session, inbound, TKind.ANSWER, question)
    answers = dict(session.response.answers) if session.response else {}
    answers[str(question.pk)] = value
    index = questions.index(question)
    following = questions[index + 1] if index + 1 < len(questions) else None
    session.response = response_save_sms(
        project=session.project,
        answers=answers,
        complete=following is None,
        response=session.response,
        participant_id=session.participant_id,
        distribution_id=session.distribution_id,
        embedded_data=_embedded_data(session),
        started_at=session.opened_at,
        now=now,
    )
    if following is None:
        session.status, session.closed_at, session.question = SStatus.COMPLETED, now, None
        session.save(update_fields=["status", "closed_at", "question", "response"])
        turn_queue(session=session, kind=TKind.THANK_YOU, body=THANK_YOU_TEXT, now=now)
        return
    expiry = timedelta(hours=settings_for(session.project).expiry_hours)
    session.question, session.position, session.invalid_count = following, index + 2, 0
    session.asked_at, session.expires_at = now, now + expiry
    session.save(
        update_fields=[
            "question",
            "position",
            "invalid_count",
            "asked_at",
            "expires_at",
            "response",
        ]
    )
    _ask(session, following, total=len(questions), now=now)


def _embedded_data(session: Session) -> dict:
    if session.origin == Session.Origin.KEYWORD:
        return {KEYWORD_EMBEDDED_FIELD: session.address, "sms_keyword": session.keyword.keyword}
    return {}


# --- many replies at once (conversations.replies) ------------------------------------------
def _db_time(value: datetime | None):
    """A datetime as the database takes it in a raw statement (``core.bulk``)."""
    return connection.ops.adapt_datetimefield_value(value) if value is not None else None


def inbound_converse_many(*, replies: list[tuple[InboundMessage, Message | None]]) -> set[int]:
    """Apply at once the replies among ``replies`` (each with its brand's last message to
    the number; at most one reply per number, the caller holding their order) that are a
    valid answer to the question their session waits for, in an open session or in the one
    their two-way invite opens: the same rows as ``inbound_converse`` writes for them, in a
    fixed number of statements for the batch (plus what each completed response fires).
    Returns the ids of the replies applied; the caller applies the others one by one. It
    writes nothing for a reply it leaves."""
    replies = [
        (inbound, last)
        for inbound, last in replies
        if inbound.kind == Keyword.OTHER and not _is_consent_request(last)
    ]
    if not replies:
        return set()
    keys = {(i.brand_id, i.from_number, i.to_number) for i, _ in replies}
    open_sessions = {
        (s.brand_id, s.address, s.sender): s
        # Its project and question are attached below from the batch's one read of each
        # project and survey (not a model instance of each for every session).
        for s in Session.objects.select_for_update(of=("self",))
        .select_related("response", "keyword")
        .filter(
            brand_id__in={b for b, _, _ in keys},
            address__in={a for _, a, _ in keys},
            status=SStatus.OPEN,
        )
        if (s.brand_id, s.address, s.sender) in keys
    }
    # The two-way invites that would open a session (``_session_for``), where the last
    # message answers it without a query; a reply that needs more goes one by one.
    invites: dict[int, Message] = {}
    plain: list[tuple[InboundMessage, Message | None]] = []
    for inbound, last in replies:
        current = open_sessions.get((inbound.brand_id, inbound.from_number, inbound.to_number))
        if last is None or (current is not None and last.sent_at <= current.opened_at):
            plain.append((inbound, None))
        elif last.distribution.mode != Distribution.Mode.TWO_WAY:
            continue  # an older two-way invite may be the one: ``_latest_two_way_invite``
        elif _invite_sender_matches(last, inbound, brand_provider_account(inbound.brand)):
            invites[inbound.pk] = last
            plain.append((inbound, last))
        else:
            plain.append((inbound, None))
    taken = (
        set(
            Session.objects.filter(message__in=list(invites.values())).values_list(
                "message_id", flat=True
            )
        )
        if invites
        else set()
    )
    project_ids = {m.distribution.project_id for m in invites.values()} | {
        s.project_id for s in open_sessions.values()
    }
    projects = {
        p.pk: p for p in Project.objects.select_related("two_way").filter(pk__in=project_ids)
    }
    survey: dict[int, list[Question]] = defaultdict(list)
    for question in Question.objects.filter(project_id__in=project_ids).order_by("position", "pk"):
        survey[question.project_id].append(question)
    asked: dict[int, Question] = {}
    for project in projects.values():
        project._two_way_questions = survey[project.pk]
        asked.update((question.pk, question) for question in survey[project.pk])
    for session in open_sessions.values():
        session.project = projects[session.project_id]
        if session.question_id in asked:  # else read if needed: not a question of its survey
            session.question = asked[session.question_id]

    replaced: list[Session] = []
    opened: list[Session] = []
    steps: list[tuple[InboundMessage, Session, Question, object]] = []
    for inbound, invite in plain:
        now = inbound.received_at
        session = open_sessions.get((inbound.brand_id, inbound.from_number, inbound.to_number))
        if invite is not None and invite.pk not in taken:
            project = projects[invite.distribution.project_id]
            questions = _questions(project)
            if questions:
                if session is not None:
                    session.status, session.closed_at = SStatus.REPLACED, invite.sent_at
                    replaced.append(session)
                session = Session(
                    brand_id=inbound.brand_id,
                    **_invite_session_fields(inbound, invite, project, questions),
                )
                opened.append(session)
        if session is None or session.expires_at <= now:
            continue
        if not may_finish(session.project, started_at=session.opened_at, now=now):
            continue
        question = session.question
        if question is None or question not in _questions(session.project):
            continue
        try:
            value = sms_answer_parse(question, inbound.body)
        except ValueError:
            continue
        steps.append((inbound, session, question, value))
    opened = [s for s in opened if any(s is step[1] for step in steps)]
    replaced = [s for s in replaced if s.address in {o.address for o in opened}]
    if not steps:
        return set()

    if replaced:
        update_rows(
            Session,
            ["status", "closed_at"],
            [(r.pk, r.status, _db_time(r.closed_at)) for r in replaced],
            casts={"closed_at": "timestamptz"},
        )
    if opened:
        insert_objects(opened)
    turns = [
        reply_turn(session=session, inbound=inbound, kind=TKind.ANSWER, question=question)
        for inbound, session, question, _ in steps
    ]
    saves = []
    for inbound, session, question, value in steps:
        questions = _questions(session.project)
        answers = dict(session.response.answers) if session.response else {}
        answers[str(question.pk)] = value
        saves.append(
            {
                "project": session.project,
                "answers": answers,
                "complete": questions.index(question) + 1 == len(questions),
                "response": session.response,
                "participant_id": session.participant_id,
                "distribution_id": session.distribution_id,
                "embedded_data": _embedded_data(session),
                "started_at": session.opened_at,
                "now": inbound.received_at,
            }
        )
    responses = responses_save_sms(saves=saves)
    for (inbound, session, question, _), response in zip(steps, responses, strict=True):
        now = inbound.received_at
        questions = _questions(session.project)
        index = questions.index(question)
        session.response = response
        if index + 1 == len(questions):
            session.status, session.closed_at, session.question = SStatus.COMPLETED, now, None
            turns.append(
                text_turn(session=session, kind=TKind.THANK_YOU, body=THANK_YOU_TEXT, now=now)
            )
            continue
        following = questions[index + 1]
        expiry = timedelta(hours=settings_for(session.project).expiry_hours)
        session.question, session.position, session.invalid_count = following, index + 2, 0
        session.asked_at, session.expires_at = now, now + expiry
        turns.append(
            text_turn(
                session=session,
                kind=TKind.QUESTION,
                body=sms_question_text(following, number=session.position, total=len(questions)),
                question=following,
                now=now,
            )
        )
    update_rows(
        Session,
        [
            "status",
            "closed_at",
            "question_id",
            "position",
            "invalid_count",
            "asked_at",
            "expires_at",
            "response_id",
        ],
        [
            (
                session.pk,
                session.status,
                _db_time(session.closed_at),
                session.question_id,
                session.position,
                session.invalid_count,
                _db_time(session.asked_at),
                _db_time(session.expires_at),
                session.response_id,
            )
            for _, session, _, _ in steps
        ],
        casts={
            "closed_at": "timestamptz",
            "question_id": "bigint",
            "asked_at": "timestamptz",
            "expires_at": "timestamptz",
            "response_id": "bigint",
        },
    )
    turns_record_many(turns)
    return {inbound.pk for inbound, *_ in steps}


# --- keywords -------------------------------------------------------------------------------
def keyword_normalise(word: str) -> str:
    """A keyword as stored and compared: the STOP words' normalisation, upper case."""
    return normalize_reply(word or "").upper()


def keyword_match(*, sender: str, body: str) -> SmsKeyword | None:
    word = keyword_normalise(body)
    if not word:
        return None
    return (
        SmsKeyword.objects.filter(sender=sender, keyword=word, active=True)
        .select_related("project")
        .first()
    )


def _start_by_keyword(
    brand: Brand, keyword: SmsKeyword, inbound: InboundMessage, now: datetime
) -> Session | None:
    project = keyword.project
    questions = _questions(project)
    if not questions or not may_finish(project, started_at=now, now=now):
        return None
    session = _open(
        brand,
        address=inbound.from_number,
        sender=inbound.to_number,
        project=project,
        origin=Session.Origin.KEYWORD,
        keyword=keyword,
        question=questions[0],
        position=1,
        opened_at=now,
        asked_at=now,
        expires_at=now + timedelta(hours=settings_for(project).expiry_hours),
    )
    if session is None:
        return None
    _inbound_turn(session, inbound, TKind.KEYWORD)
    first = sms_question_text(questions[0], number=1, total=len(questions))
    turn_queue(
        session=session,
        kind=TKind.QUESTION,
        body=f"{first}\n{OPT_OUT_LINE}",
        question=questions[0],
        now=now,
    )
    return session
