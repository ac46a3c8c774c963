"""The survey asked by text message, one question at a time (two-way SMS): how each question
reads, how a reply becomes an answer, and which questions cannot be asked this way.

No database here: the conversation (``conversations``) keeps the session and calls these;
the distribution spec calls ``sms_unsupported_errors`` so that a two-way distribution of a
survey that cannot be texted is refused on every path (page, API, series). An answer is
checked by the same rules as the web survey's (``answers.answers_clean``).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Any

from projects.models import Question
from surveys.answers import answers_clean

Kind = Question.Kind

# Single choice (a code per choice), a rating (the number) and free text can be answered
# in one text; a multiple-choice question (several answers) cannot, unambiguously.
TEXTABLE_KINDS = (Kind.SINGLE, Kind.RATING, Kind.TEXT)
OPT_OUT_LINE = "Reply STOP to opt out."
MAX_CODED_CHOICES = 26  # 1-26 or a-z


def sms_unsupported(questions: Iterable[Question]) -> list[Question]:
    """The questions that cannot be asked by text, in survey order."""
    return [question for question in questions if question.kind not in TEXTABLE_KINDS]


def sms_unsupported_errors(questions: Sequence[Question]) -> str:
    """The error a two-way distribution of this survey gets ("" when it can be texted),
    naming each question that cannot be asked by text."""
    if not questions:
        return "The survey has no questions to ask by text."
    named = []
    for number, question in enumerate(questions, start=1):
        if question.kind not in TEXTABLE_KINDS:
            named.append(f'{number}. "{question.text[:60]}" ({question.get_kind_display()})')
        elif question.kind == Kind.SINGLE and len(question.choices) > MAX_CODED_CHOICES:
            named.append(f'{number}. "{question.text[:60]}" (more than 26 choices)')
    if not named:
        return ""
    return "These questions cannot be asked by text: " + "; ".join(named) + "."


def sms_question_text(question: Question, *, number: int, total: int) -> str:
    """The text that asks ``question`` (``number`` of ``total``): the question, then how to
    answer it (a code per choice, the rating's range, or free text)."""
    lines = [f"({number}/{total}) {question.text}"]
    if question.kind == Kind.SINGLE:
        lines += [f"{code}) {choice}" for code, choice in enumerate(question.choices, start=1)]
        lines.append(f"Reply with a number from 1 to {len(question.choices)}.")
    elif question.kind == Kind.RATING:
        lines.append(f"Reply with a number from {Question.RATING_MIN} to {Question.RATING_MAX}.")
    else:
        lines.append("Reply with your answer.")
    return "\n".join(lines)


def sms_correction_text(question: Question) -> str:
    """What an invalid answer gets back, before the question is asked again."""
    if question.kind == Kind.SINGLE:
        return f"Sorry, please reply with a number from 1 to {len(question.choices)}."
    if question.kind == Kind.RATING:
        return (
            f"Sorry, please reply with a whole number from {Question.RATING_MIN} "
            f"to {Question.RATING_MAX}."
        )
    return "Sorry, we could not read that answer."


def _choice_of(question: Question, text: str) -> Any:
    """A single-choice reply: its code (1, 2… or a, b…), or the choice itself (any case)."""
    value = text.strip().rstrip(".)").strip()
    if value.isdigit() and 1 <= int(value) <= len(question.choices):
        return question.choices[int(value) - 1]
    letters = string.ascii_lowercase[: len(question.choices)]
    if len(value) == 1 and value.casefold() in letters:
        return question.choices[letters.index(value.casefold())]
    for choice in question.choices:
        if choice.casefold() == value.casefold():
            return choice
    return value


def sms_answer_parse(question: Question, text: str) -> Any:
    """The clean answer a reply gives to ``question``; ValueError (with the correction to
    send) when it is not a valid answer. Checked by the web survey's own rules."""
    text = (text or "").strip()
    if not text:
        raise ValueError(sms_correction_text(question))
    raw = _choice_of(question, text) if question.kind == Kind.SINGLE else text
    if question.kind == Kind.RATING:
        raw = raw.rstrip(".!")
    answers, errors = answers_clean([question], {question.pk: raw})
    if errors or str(question.pk) not in answers:
        raise ValueError(sms_correction_text(question))
    return answers[str(question.pk)]


def sms_invite_text(intro: str, questions: Sequence[Question]) -> str:
    """A two-way invite: the distribution's own text, then the first question and the line
    that tells how to opt out (every first text carries it, whatever the sender)."""
    if not questions:
        return intro
    first = sms_question_text(questions[0], number=1, total=len(questions))
    return f"{intro}\n\n{first}\n{OPT_OUT_LINE}" if intro else f"{first}\n{OPT_OUT_LINE}"


THANK_YOU_TEXT = "Thank you! Your answers are recorded."
CLOSED_TEXT = "Sorry, this survey is closed: your answer was not recorded."
GAVE_UP_TEXT = (
    "Sorry, we could not understand your answers. The survey is closed; "
    "what you answered before is kept."
)


def sms_followup_texts(questions: Sequence[Question]) -> list[str]:
    """The texts a respondent who answers every question receives after the invite: each
    later question, then the thank-you (what the estimate counts)."""
    total = len(questions)
    asked = [
        sms_question_text(question, number=number, total=total)
        for number, question in enumerate(questions, start=1)
        if number > 1
    ]
    return [*asked, THANK_YOU_TEXT] if questions else []
