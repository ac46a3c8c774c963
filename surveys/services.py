"""Writes of the survey: questions, personal links (made, opened), responses (through a
personal link, the anonymous link or the API) and what completing one sets off.

What callers can rely on: a personal link is answered once (per invite and its reminders); a
response completes once; opening a link and completing a response raise their webhook events
and fire ``surveys.hooks`` (distributions marks the recipient row Opened, sends thank-you
emails on completion) after the write."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.http import Http404
from django.utils import timezone

from core.bulk import insert_objects, update_rows
from core.tokens import new_token
from participants.models import Participant
from projects.models import Project, Question, Response, ResponseReset, SurveyLink
from projects.signed_links import SignedLinkUse
from projects.transactions import Transaction
from surveys import hooks
from surveys.answers import (
    MAX_URL_KEY,
    answers_clean,
    answers_from_api,
    answers_from_form,
    family_answered_q,
    form_stamp_read,
    keeps_partial,
    may_finish,
    url_embedded_data,
)
from surveys.events import link_opened_raised, responses_completed_raised
from surveys.signed_links import SignedParameters, signed_link_used

QKind = Question.Kind


def _question_fields(*, kind: str, text: str, choices, help_text: str) -> dict:
    """Validate a question's content; raise ValidationError naming the field."""
    errors: dict[str, str] = {}
    if kind not in QKind.values:
        errors["kind"] = f"Unknown kind '{kind}'. Choose one of: {', '.join(QKind.values)}."
    text = (text or "").strip()
    if not text:
        errors["text"] = "The question needs a text."
    elif len(text) > 500:
        errors["text"] = "Keep the question under 500 characters."
    cleaned: list[str] = []
    if kind in Question.CHOICE_KINDS:
        if not isinstance(choices, list | tuple) or not all(isinstance(c, str) for c in choices):
            errors["choices"] = "Give the answers to choose from as a list of texts."
        else:
            for choice in (c.strip() for c in choices):
                if choice and choice not in cleaned:
                    cleaned.append(choice)
            if len(cleaned) < 2:
                errors["choices"] = "A choice question needs at least two different answers."
            elif len(cleaned) > Question.MAX_CHOICES:
                errors["choices"] = f"A question offers at most {Question.MAX_CHOICES} answers."
            elif any(len(c) > Question.MAX_CHOICE_LENGTH for c in cleaned):
                errors["choices"] = (
                    f"Keep each answer under {Question.MAX_CHOICE_LENGTH} characters."
                )
    elif choices:
        errors["choices"] = "Only single and multiple choice questions have answers to choose."
    help_text = (help_text or "").strip()
    if len(help_text) > 300:
        errors["help_text"] = "Keep the help text under 300 characters."
    if errors:
        raise ValidationError(errors)
    return {"kind": kind, "text": text, "choices": cleaned, "help_text": help_text}


def question_create(
    *,
    project: Project,
    kind: str,
    text: str,
    choices: list[str] | None = None,
    required: bool = False,
    help_text: str = "",
    actor=None,
) -> Question:
    """Add a question at the end of the project's survey."""
    fields = _question_fields(kind=kind, text=text, choices=choices or [], help_text=help_text)
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        last = project.questions.aggregate(last=Max("position"))["last"]
        return Question.objects.create(
            project=project, position=(last or 0) + 1, required=bool(required), **fields
        )


QUESTION_EDITABLE = ("kind", "text", "choices", "required", "help_text")


def question_update(*, question: Question, actor=None, **changes) -> Question:
    unknown = set(changes) - set(QUESTION_EDITABLE)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed."))
    kind = changes.get("kind", question.kind)
    choices = changes.get("choices", question.choices if kind in Question.CHOICE_KINDS else [])
    fields = _question_fields(
        kind=kind,
        text=changes.get("text", question.text),
        choices=choices if kind in Question.CHOICE_KINDS or "choices" in changes else [],
        help_text=changes.get("help_text", question.help_text),
    )
    for name, value in fields.items():
        setattr(question, name, value)
    if "required" in changes:
        question.required = bool(changes["required"])
    question.save()
    return question


def question_delete(*, question: Question, actor=None) -> None:
    """Remove a question. Answers already given to it stay in their responses."""
    project = question.project
    with transaction.atomic():
        question.delete()
        _renumber(project, [q.pk for q in project.questions.all()])


def questions_reorder(*, project: Project, order: list[int], actor=None) -> list[Question]:
    """Put the project's questions in ``order`` (every question id, once)."""
    current = list(project.questions.values_list("pk", flat=True))
    if sorted(order) != sorted(current) or len(set(order)) != len(order):
        raise ValidationError({"order": "List every question of the survey exactly once."})
    with transaction.atomic():
        _renumber(project, order)
    return list(project.questions.all())


def question_move(*, question: Question, offset: int, actor=None) -> None:
    """Move a question up (negative) or down (positive) in its survey."""
    order = list(question.project.questions.values_list("pk", flat=True))
    index = order.index(question.pk)
    target = max(0, min(len(order) - 1, index + offset))
    order.insert(target, order.pop(index))
    questions_reorder(project=question.project, order=order)


def _renumber(project: Project, order: list[int]) -> None:
    questions = {q.pk: q for q in project.questions.all()}
    for position, pk in enumerate(order, start=1):
        questions[pk].position = position
    Question.objects.bulk_update(list(questions.values()), ["position"])


# --- links ----------------------------------------------------------------------------------
def survey_link_open(*, link: SurveyLink, now: datetime | None = None) -> bool:
    """Record the first opening of a personal link: its time, and Opened on the recipient row
    that carried it. Later openings change nothing. True the first time."""
    if link.opened_at is not None:
        return False
    now = now or timezone.now()
    if not SurveyLink.objects.filter(pk=link.pk, opened_at__isnull=True).update(opened_at=now):
        return False
    link.opened_at = now
    link_opened_raised(link=link, at=now)
    hooks.link_opened.fire(link=link, at=now)
    return True


LINK_BATCH = 1000  # links inserted per statement


def survey_links_create(
    *,
    project: Project,
    participants=None,
    channel: str = Response.Channel.EMAIL,
    expires_at: datetime | None = None,
    actor=None,
) -> list[SurveyLink]:
    """One new personal link per participant (all of the project's when ``participants`` is
    None), e.g. for a third-party mailer. Each answers once, like the links Relay sends."""
    if channel not in (Response.Channel.EMAIL, Response.Channel.SMS, Response.Channel.API):
        raise ValidationError({"channel": "Personal links are handed out by email, sms or api."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "Must be in the future."})
    queryset = participants if participants is not None else project.participants.all()
    ids = list(queryset.filter(project=project).order_by("pk").values_list("pk", flat=True))
    links = [
        SurveyLink(
            token=new_token(),
            project=project,
            participant_id=pk,
            channel=channel,
            expires_at=expires_at,
        )
        for pk in ids
    ]
    return SurveyLink.objects.bulk_create(links, batch_size=LINK_BATCH)


# --- responses ------------------------------------------------------------------------------
class SubmitOutcome(StrEnum):
    COMPLETE = "complete"  # recorded; the participant is a respondent
    PARTIAL = "partial"  # collection had stopped: what was answered is kept as partial
    CLOSED = "closed"  # collection had stopped: nothing kept
    ANSWERED = "answered"  # this link (or this very form) was answered already: refused
    EXPIRED = "expired"  # the personal link is past its expiry
    INVALID = "invalid"  # answers to correct (``errors``)
    STALE_FORM = "stale_form"  # the form's stamp is missing or too old: show a fresh form
    SAVED = "saved"  # saved to finish later (a personal link): the link resumes them


@dataclass
class SubmitResult:
    outcome: SubmitOutcome
    project: Project
    questions: list[Question] = field(default_factory=list)
    response: Response | None = None
    errors: dict[int, str] = field(default_factory=dict)


def link_scope(token: str) -> str:
    return f"s:{token}"


def anonymous_scope(project: Project) -> str:
    return f"a:{project.public_token}"


def _family_answered(link: SurveyLink) -> bool:
    if not (link.participant_id and link.distribution_id):
        return False
    root = link.distribution.parent_id or link.distribution_id
    return Response.objects.filter(
        family_answered_q(participant_ref=link.participant_id, root_ref=root),
        project_id=link.project_id,
    ).exists()


def _transaction_embedded_data(link: SurveyLink) -> dict:
    """The transaction behind a transactional link as embedded data (one query, only for
    links of a transactional distribution): its data, its id and its time."""
    if not (link.distribution_id and link.distribution.kind == "transactional"):
        return {}

    record = Transaction.objects.filter(link=link).first()
    if record is None:
        return {}
    return {
        "transaction_id": record.external_id,
        "transaction_time": record.occurred_at.isoformat(),
        **record.data,
    }


def _completed(responses: list[Response]) -> None:
    """Tell the world these responses are complete: their webhook events and
    ``response_completed`` (thank-you emails on completion), once for them all."""
    responses_completed_raised(responses=responses)
    hooks.response_completed.fire(responses=responses)


def _save_response(*, existing: Response | None = None, **values) -> Response:
    response = existing or Response()
    for name, value in values.items():
        setattr(response, name, value)
    response.save()
    return response


def _stopped(project, questions, raw, started_at, save) -> SubmitResult:
    """Collection stopped while this respondent was in the middle: keep the valid part of
    their answers as a partial response if the pause dialog said so."""
    if keeps_partial(project, started_at=started_at):
        answers, _ = answers_clean(questions, raw, partial=True)
        if answers:
            response = save(status=Response.Status.PARTIAL, answers=answers)
            return SubmitResult(SubmitOutcome.PARTIAL, project, questions, response)
    return SubmitResult(SubmitOutcome.CLOSED, project, questions)


def response_submit_link(
    *,
    token: str,
    data,
    url_params=None,
    stamp: str = "",
    finish: bool = True,
    now: datetime | None = None,
) -> SubmitResult:
    """Record the answers posted through a personal link (raises Http404 for an unknown token).

    The link row is locked for the check-then-write, so of two simultaneous submits one is
    recorded and the other is refused (``ANSWERED``); the unique ``Response.link`` backs it.
    ``finish=False`` (*Save and finish later*): what was answered is kept as the link's partial
    response (``SAVED``: nothing is required yet, invalid values are dropped); opening the link
    again resumes it, and the final submit completes that same response.
    """
    now = now or timezone.now()
    with transaction.atomic():
        link = (
            SurveyLink.objects.select_for_update(of=("self",))
            .select_related("project", "distribution")
            .filter(token=token)
            .first()
        )
        if link is None:
            raise Http404("No such link.")
        project = link.project
        questions = list(project.questions.all())
        if link.completed_at or _family_answered(link):
            return SubmitResult(SubmitOutcome.ANSWERED, project, questions)
        if link.expires_at and link.expires_at <= now:
            return SubmitResult(SubmitOutcome.EXPIRED, project, questions)
        read = form_stamp_read(stamp, link_scope(token), now=now)
        started_at = read.started_at if read else None
        raw = answers_from_form(questions, data)
        untrusted = url_embedded_data(url_params or {})
        # A transactional link's transaction data, kept on the server: trusted, and it wins.
        trusted = _transaction_embedded_data(link)
        existing = Response.objects.filter(link=link).first()  # a partial kept earlier

        def save(*, status, answers):
            return _save_response(
                existing=existing,
                project=project,
                link=link,
                participant_id=link.participant_id,
                distribution_id=link.distribution_id,
                channel=link.response_channel(
                    link.distribution.channel if link.distribution else None
                ),
                status=status,
                answers=answers,
                embedded_data={**untrusted, **trusted},
                untrusted_keys=sorted(set(untrusted) - set(trusted)),
                started_at=started_at,
                completed_at=now,
            )

        if existing is not None and existing.started_at and started_at:
            started_at = min(existing.started_at, started_at)  # when they first began

        if not may_finish(project, started_at=started_at, now=now):
            return _stopped(project, questions, raw, started_at, save)
        if not finish:
            answers, _ = answers_clean(questions, raw, partial=True)
            response = save(status=Response.Status.PARTIAL, answers=answers)
            return SubmitResult(SubmitOutcome.SAVED, project, questions, response)
        answers, errors = answers_clean(questions, raw)
        if errors:
            return SubmitResult(SubmitOutcome.INVALID, project, questions, errors=errors)
        response = save(status=Response.Status.COMPLETE, answers=answers)
        SurveyLink.objects.filter(pk=link.pk).update(completed_at=now)
        survey_link_open(link=link, now=now)
        _completed([response])
    return SubmitResult(SubmitOutcome.COMPLETE, project, questions, response)


def response_submit_anonymous(
    *,
    project: Project,
    data,
    url_params=None,
    stamp: str = "",
    channel: str = Response.Channel.ANONYMOUS,
    signed: SignedParameters | None = None,
    now: datetime | None = None,
) -> SubmitResult:
    """Record answers posted through the project's anonymous link (or its QR code).

    The form's signed one-time key is stored with the response (unique per project): posting
    the same form twice records it once and refuses the second (``ANSWERED``). ``signed``:
    the parameters of a signed URL the respondent opened (``projects.signed_links``): stored
    as trusted embedded data, and the URL answers once (its use is unique per project).
    """
    now = now or timezone.now()
    questions = list(project.questions.all())
    read = form_stamp_read(stamp, anonymous_scope(project), now=now)
    if read is None:
        return SubmitResult(SubmitOutcome.STALE_FORM, project, questions)
    raw = answers_from_form(questions, data)
    untrusted = url_embedded_data(url_params or {})
    trusted = signed.params if signed is not None else {}

    def save(*, status, answers):
        try:
            with transaction.atomic():
                response = _save_response(
                    project=project,
                    channel=channel,
                    status=status,
                    answers=answers,
                    embedded_data={**untrusted, **trusted},
                    untrusted_keys=sorted(set(untrusted) - set(trusted)),
                    submission_key=read.key,
                    started_at=read.started_at,
                    completed_at=now,
                )
                if signed is not None:
                    SignedLinkUse.objects.create(
                        project=project, digest=signed.digest, response=response
                    )
                return response
        except IntegrityError:
            return None

    if Response.objects.filter(project=project, submission_key=read.key).exists():
        return SubmitResult(SubmitOutcome.ANSWERED, project, questions)
    if signed is not None and signed_link_used(project=project, digest=signed.digest):
        return SubmitResult(SubmitOutcome.ANSWERED, project, questions)
    if not may_finish(project, started_at=read.started_at, now=now):
        result = _stopped(project, questions, raw, read.started_at, save)
        if result.outcome == SubmitOutcome.PARTIAL and result.response is None:
            return SubmitResult(SubmitOutcome.ANSWERED, project, questions)
        return result
    answers, errors = answers_clean(questions, raw)
    if errors:
        return SubmitResult(SubmitOutcome.INVALID, project, questions, errors=errors)
    response = save(status=Response.Status.COMPLETE, answers=answers)
    if response is None:  # the same form, submitted twice at once: the first one won
        return SubmitResult(SubmitOutcome.ANSWERED, project, questions)
    _completed([response])
    return SubmitResult(SubmitOutcome.COMPLETE, project, questions, response)


def response_reset(*, response: Response, actor=None, reason: str = "") -> ResponseReset:
    """Let the person answer again: the response becomes superseded (its answers kept, no
    longer counted: its participant is no longer a respondent, reminders reach them again)
    and its personal link is released (not completed: it opens the survey again). The reset
    is recorded with who, why, the previous status and the link (``ResponseReset``).

    Raises ValidationError when the response was already reset. A browser's one-answer cookie
    names the response it recorded, so after a reset that browser may answer again too.
    """
    reason = (reason or "").strip()
    if len(reason) > 200:
        raise ValidationError({"reason": "Keep the reason under 200 characters."})
    with transaction.atomic():
        locked = Response.objects.select_for_update().filter(pk=response.pk).first()
        if locked is None:
            raise Http404("No such response.")
        if locked.status == Response.Status.SUPERSEDED:
            raise ValidationError({"response": "This response was already reset."})
        reset = ResponseReset.objects.create(
            response=locked,
            link_id=locked.link_id,
            previous_status=locked.status,
            reason=reason,
            actor=actor if getattr(actor, "pk", None) else None,
        )
        if locked.link_id:
            SurveyLink.objects.filter(pk=locked.link_id).update(completed_at=None)
        Response.objects.filter(pk=locked.pk).update(status=Response.Status.SUPERSEDED, link=None)
    response.status, response.link_id = Response.Status.SUPERSEDED, None
    return reset


MAX_EMBEDDED_FIELDS = 50


def response_create(
    *,
    project: Project,
    answers,
    participant: Participant | None = None,
    embedded_data: dict | None = None,
    now: datetime | None = None,
    actor=None,
) -> Response:
    """Record a complete response sent through the API (channel ``api``); strict: any invalid
    answer raises ValidationError (``{"<question id>": message}``) and nothing is written."""
    now = now or timezone.now()
    if not project.is_collecting:
        raise ValidationError(
            {"project": f"The project is not collecting responses ({project.get_stage_display()})."}
        )
    if participant is not None and participant.project_id != project.pk:
        raise ValidationError({"participant": "This participant is not in the project."})
    embedded = embedded_data or {}
    if not isinstance(embedded, dict) or len(embedded) > MAX_EMBEDDED_FIELDS:
        raise ValidationError(
            {"embedded_data": f"An object with at most {MAX_EMBEDDED_FIELDS} fields."}
        )
    try:
        raw = answers_from_api(answers)
    except ValueError as exc:
        raise ValidationError({"answers": str(exc)}) from exc
    clean, errors = answers_clean(list(project.questions.all()), raw)
    if errors:
        raise ValidationError({str(pk): message for pk, message in errors.items()})
    response = Response.objects.create(
        project=project,
        participant=participant,
        channel=Response.Channel.API,
        status=Response.Status.COMPLETE,
        answers=clean,
        embedded_data={str(k)[:MAX_URL_KEY]: v for k, v in embedded.items()},
        started_at=now,
        completed_at=now,
    )
    _completed([response])
    return response


def response_save_sms(
    *,
    project: Project,
    answers: dict[str, Any],
    complete: bool,
    response: Response | None = None,
    participant_id: int | None = None,
    distribution_id: int | None = None,
    embedded_data: dict | None = None,
    started_at: datetime | None = None,
    now: datetime | None = None,
) -> Response:
    """Record the answers of a two-way SMS conversation (channel ``SMS (two-way)``): partial
    after each answer, complete after the last one, when it fires what every completed
    response fires (its webhook event, ``response_completed``: thank-you messages). The
    answers were cleaned one by one (``surveys.sms.sms_answer_parse``); the caller holds the
    conversation's lock, so a response completes once."""
    now = now or timezone.now()
    status = Response.Status.COMPLETE if complete else Response.Status.PARTIAL
    saved = _save_response(
        existing=response,
        project=project,
        participant_id=participant_id,
        distribution_id=distribution_id,
        channel=Response.Channel.SMS_TWO_WAY,
        status=status,
        answers=answers,
        embedded_data=embedded_data or {},
        started_at=started_at,
        completed_at=now,
    )
    if complete:
        _completed([saved])
    return saved


def responses_save_sms(*, saves: list[dict[str, Any]]) -> list[Response]:
    """``response_save_sms`` for many conversations at once, each dict its keyword
    arguments (``now`` required): the new responses in one INSERT, the others in one
    UPDATE; each completed one then fires what every completed response fires, in order.
    Returns the responses, in the order of ``saves``."""
    saved = []
    for save in saves:
        response = save.get("response") or Response()
        response.project = save["project"]
        response.participant_id = save.get("participant_id")
        response.distribution_id = save.get("distribution_id")
        response.channel = Response.Channel.SMS_TWO_WAY
        response.status = Response.Status.COMPLETE if save["complete"] else Response.Status.PARTIAL
        response.answers = save["answers"]
        response.embedded_data = save.get("embedded_data") or {}
        response.started_at = save.get("started_at")
        response.completed_at = save["now"]
        saved.append(response)
    new = [response for response in saved if response.pk is None]
    existing = [response for response in saved if response.pk is not None]
    if new:
        insert_objects(new)
    if existing:
        # Of the conversation's fields, only these change once its response exists.
        update_rows(
            Response,
            ["answers", "status", "completed_at"],
            [
                (
                    r.pk,
                    json.dumps(r.answers),
                    r.status,
                    connection.ops.adapt_datetimefield_value(r.completed_at),
                )
                for r in existing
            ],
            casts={"answers": "jsonb", "completed_at": "timestamptz"},
        )
    completed = [r for r, save in zip(saved, saves, strict=True) if save["complete"]]
    if completed:
        _completed(completed)
    return saved
