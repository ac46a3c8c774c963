"""Reads of the two-way pages and API: how each question reads as a text, a distribution's
sessions with their history."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet

from conversations.models import Session, Turn
from credits.segments import segment_info
from distributions.models import Distribution
from projects.models import Project
from surveys.sms import (
    OPT_OUT_LINE,
    sms_followup_texts,
    sms_question_text,
    sms_unsupported_errors,
)


@dataclass(frozen=True)
class TextPreview:
    label: str
    body: str
    segments: int
    encoding: str
    characters: int


def _preview(label: str, body: str) -> TextPreview:
    info = segment_info(body)
    return TextPreview(label, body, info.segments, info.encoding, len(body))


def sms_preview(*, project: Project) -> dict:
    """Each text of the project's survey as a two-way conversation sends it (the first one
    as a keyword starts it: an invite adds its own message before it), with its segments,
    and what cannot be asked by text."""
    questions = list(project.questions.all())
    texts = []
    if questions:
        first = sms_question_text(questions[0], number=1, total=len(questions))
        texts.append(_preview("Question 1 (with the opt-out line)", f"{first}\n{OPT_OUT_LINE}"))
        followups = sms_followup_texts(questions)
        for number, body in enumerate(followups[:-1], start=2):
            texts.append(_preview(f"Question {number}", body))
        texts.append(_preview("Thank you", followups[-1]))
    return {
        "texts": texts,
        "error": sms_unsupported_errors(questions),
        "segments": sum(text.segments for text in texts),
        "questions": len(questions),
    }


def distribution_sessions(*, distribution: Distribution) -> QuerySet:
    """The sessions a two-way distribution opened, newest first, with their texts."""
    return (
        Session.objects.filter(distribution=distribution)
        .select_related("participant__person", "question", "message")
        .prefetch_related(Prefetch("turns", queryset=Turn.objects.order_by("created_at", "pk")))
        .order_by("-opened_at", "-pk")
    )


def session_counts(*, distribution: Distribution) -> dict[str, int]:
    counts = dict.fromkeys(Session.Status.values, 0)
    for status in Session.objects.filter(distribution=distribution).values_list(
        "status", flat=True
    ):
        counts[status] += 1
    return counts
