"""The survey's rules that need no database: cleaning answers, the form's signed stamp, and
whether a submission is still accepted once collection has stopped.

Answers are keyed by question id. ``answers_clean`` is strict for a submission (every value
valid, required questions answered) and lenient for a partial response (invalid values are
dropped, nothing is required).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core import signing
from django.db.models import Q
from django.http import QueryDict

from projects.models import Project, Question, Response

Kind = Question.Kind

REQUIRED_MESSAGE = "This question needs an answer."
RATING_MESSAGE = f"Choose a whole number from {Question.RATING_MIN} to {Question.RATING_MAX}."
CHOICE_MESSAGE = "Choose one of the listed answers."
TEXT_MESSAGE = f"Keep the answer under {Question.MAX_TEXT_ANSWER} characters."

# A survey page may stay open this long and still be submitted (and prove when it was opened).
FORM_MAX_AGE = timedelta(days=7)
STAMP_SALT = "relay.survey.form"


@dataclass(frozen=True)
class FormStamp:
    """What the survey form carries, signed: when it was shown, for which link or project,
    and a one-time key that makes a second submit of the same form a no-op."""

    scope: str
    started_at: datetime
    key: str


def form_stamp(scope: str, *, now: datetime) -> str:
    return signing.dumps(
        {"s": scope, "t": round(now.timestamp() * 1_000_000), "k": secrets.token_urlsafe(16)},
        salt=STAMP_SALT,
    )


def form_stamp_read(value: str, scope: str, *, now: datetime | None = None) -> FormStamp | None:
    """The stamp, or None when it is missing, tampered with, too old or for another survey."""
    now = now or datetime.now(tz=UTC)
    try:
        data = signing.loads(value or "", salt=STAMP_SALT, max_age=FORM_MAX_AGE)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(data, dict) or data.get("s") != scope:
        return None
    try:
        started = datetime.fromtimestamp(int(data["t"]) / 1_000_000, tz=UTC)
        key = str(data["k"])[:40]
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if started < now - FORM_MAX_AGE:
        return None
    return FormStamp(scope=scope, started_at=started, key=key)


def may_finish(project: Project, *, started_at: datetime | None, now: datetime) -> bool:
    """May a survey shown at ``started_at`` be submitted now?

    Yes while the project collects. Once it is paused, only if the pause dialog chose to let
    respondents in the middle of the survey finish and this one opened it before the pause.
    """
    if project.stage == Project.Stage.ACTIVE and project.is_within_availability(now):
        return True
    stopped = project.collection_stopped_at
    return bool(
        project.stage == Project.Stage.PAUSED
        and project.stop_lets_in_progress_finish
        and stopped
        and started_at
        and started_at < stopped
        and project.is_within_availability(now)
    )


def keeps_partial(project: Project, *, started_at: datetime | None) -> bool:
    """Is the partial response of someone cut off by a stop kept? Only for a survey opened
    before collection stopped (by the dialog's choice, or by the availability window)."""
    stopped = project.collection_stopped_at or project.available_until
    return bool(
        project.stop_keeps_partial_responses and stopped and started_at and started_at < stopped
    )


def family_answered_q(*, participant_ref, root_ref) -> Q:
    """Complete responses of a participant to one invite or any of its reminders (a reminder
    carries its own link, yet the participant answers once per invite). A transactional
    distribution is no family: each of its links (one per transaction) answers once."""
    return (
        Q(status=Response.Status.COMPLETE, participant_id=participant_ref)
        & (Q(distribution_id=root_ref) | Q(distribution__parent_id=root_ref))
        & ~Q(distribution__kind="transactional")
    )


# --- answers -------------------------------------------------------------------------------
def _is_blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or value == []


def _clean_one(question: Question, value: Any) -> Any:
    """The clean answer, or raise ValueError with the message for the respondent."""
    if question.kind == Kind.RATING:
        if isinstance(value, bool):
            raise ValueError(RATING_MESSAGE)
        if isinstance(value, str):
            value = value.strip()
            if not value.lstrip("-").isdigit():
                raise ValueError(RATING_MESSAGE)
            value = int(value)
        if not isinstance(value, int) or not (Question.RATING_MIN <= value <= Question.RATING_MAX):
            raise ValueError(RATING_MESSAGE)
        return value
    if question.kind == Kind.SINGLE:
        if not isinstance(value, str) or value not in question.choices:
            raise ValueError(CHOICE_MESSAGE)
        return value
    if question.kind == Kind.MULTIPLE:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(CHOICE_MESSAGE)
        chosen = set(values)
        if not chosen <= set(question.choices):
            raise ValueError(CHOICE_MESSAGE)
        return [choice for choice in question.choices if choice in chosen]
    if not isinstance(value, str):
        raise ValueError("Write the answer as text.")
    value = value.strip()
    if len(value) > Question.MAX_TEXT_ANSWER:
        raise ValueError(TEXT_MESSAGE)
    return value


def answers_clean(
    questions: Iterable[Question], raw: Mapping[int, Any], *, partial: bool = False
) -> tuple[dict[str, Any], dict[int, str]]:
    """Return (answers keyed by question id as text, errors keyed by question id).

    ``raw`` maps question ids to submitted values; a value for an unknown id is an error
    (under that id) unless ``partial``.
    """
    answers: dict[str, Any] = {}
    errors: dict[int, str] = {}
    by_id = {question.pk: question for question in questions}
    for question_id in raw:
        if question_id not in by_id and not partial:
            errors[question_id] = "There is no such question in this survey."
    for question in by_id.values():
        value = raw.get(question.pk)
        if _is_blank(value):
            if question.required and not partial:
                errors[question.pk] = REQUIRED_MESSAGE
            continue
        try:
            answers[str(question.pk)] = _clean_one(question, value)
        except ValueError as exc:
            if not partial:
                errors[question.pk] = str(exc)
    return answers, errors


def answers_from_form(questions: Iterable[Question], data) -> dict[int, Any]:
    """Read a posted survey form (``q<id>`` fields) into ``{question id: value}``."""
    raw: dict[int, Any] = {}
    for question in questions:
        if question.kind == Kind.MULTIPLE:
            raw[question.pk] = data.getlist(question.field_name)
        else:
            raw[question.pk] = data.get(question.field_name)
    return raw


def answers_from_api(data: Any) -> dict[int, Any]:
    """Read ``{"<question id>": value}``; raise ValueError naming a key that is not an id."""
    if not isinstance(data, dict):
        raise ValueError("Must be an object mapping question ids to answers.")
    raw: dict[int, Any] = {}
    for key, value in data.items():
        text = str(key)
        if not text.isdigit():
            raise ValueError(f"'{text}' is not a question id.")
        raw[int(text)] = value
    return raw


def answers_as_form(questions: Iterable[Question], answers: Mapping[str, Any]) -> QueryDict:
    """Saved answers (keyed by question id as text) as a posted form (``q<id>`` fields), to
    show them again in the survey form: the inverse of ``answers_from_form``."""
    data = QueryDict(mutable=True)
    for question in questions:
        value = answers.get(str(question.pk))
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        data.setlist(question.field_name, [str(v) for v in values])
    return data


# --- embedded data from the URL (untrusted) ------------------------------------------------
MAX_URL_FIELDS = 20
MAX_URL_KEY = 64
MAX_URL_VALUE = 500
RESERVED_PARAMETERS = frozenset({"src"})


def url_embedded_data(params) -> dict[str, str]:
    """Query parameters as embedded data: bounded in number and size, never trusted."""
    data: dict[str, str] = {}
    for key in params:
        if key in RESERVED_PARAMETERS or len(data) >= MAX_URL_FIELDS:
            continue
        name = str(key).strip()[:MAX_URL_KEY]
        if name:
            data[name] = str(params.get(key, ""))[:MAX_URL_VALUE]
    return data
