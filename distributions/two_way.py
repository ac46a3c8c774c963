"""The text a two-way SMS distribution sends: its message, then the survey's first question
and the opt-out line (``surveys.sms.sms_invite_text``); a consent request's: its message and
how to answer it. Every path that renders or prices a
distribution's text asks ``sms_template`` (sending, the cover, the reservation), so what is
charged is what is sent."""

from __future__ import annotations

from distributions.models import Distribution
from surveys.sms import sms_invite_text

CONSENT_LINE = "Reply YES to agree. Reply STOP to opt out."


def sms_template(distribution: Distribution) -> str:
    """The template the rows of ``distribution`` are rendered from (its message, for a
    link distribution); read once per distribution object."""
    if distribution.mode == Distribution.Mode.CONSENT:
        return f"{distribution.message}\n{CONSENT_LINE}"
    if distribution.mode != Distribution.Mode.TWO_WAY:
        return distribution.message
    cached = getattr(distribution, "_two_way_template", None)
    if cached is None:
        questions = list(distribution.project.questions.all())
        cached = sms_invite_text(distribution.message, questions)
        distribution._two_way_template = cached
    return cached
