"""Keyword access: a word texted to one of the brand's numbers starts a project's two-way
survey for whoever texts it (an anonymous response; docs/two-way.md).

Rules, checked here for the page and the API alike: a keyword is one word of letters and
digits (compared like the STOP words: case, accents and punctuation ignored); unique per
sender, whatever the brand (the number routes the reply); never a STOP, START/YES or HELP
word in any language; its project's survey can be asked by text.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from brands.models import Brand
from conversations.models import SmsKeyword
from conversations.services import keyword_normalise
from optouts.keywords import Keyword, match_reply
from participants.phones import PhoneError, phone_to_e164
from projects.models import Project
from surveys.sms import sms_unsupported_errors

MAX_KEYWORD_LENGTH = 20


def keyword_errors(*, brand: Brand, project: Project, sender: str, keyword: str) -> dict:
    errors: dict[str, str] = {}
    word = keyword_normalise(keyword)
    if not word:
        errors["keyword"] = "Give a keyword of letters or digits."
    elif len(word) > MAX_KEYWORD_LENGTH:
        errors["keyword"] = f"Use at most {MAX_KEYWORD_LENGTH} letters or digits."
    elif match_reply(keyword).kind != Keyword.OTHER:
        errors["keyword"] = (
            f"'{keyword.strip()}' is a STOP, START or HELP word: recipients use it to opt "
            "out, back in or ask for help, so it cannot start a survey."
        )
    elif SmsKeyword.objects.filter(sender=sender, keyword=word).exists():
        errors["keyword"] = f"'{word}' is already a keyword on {sender}."
    if project.brand_id != brand.pk:
        errors["project"] = "No such project."
    else:
        unsupported = sms_unsupported_errors(list(project.questions.all()))
        if unsupported:
            errors["project"] = unsupported
    return errors


def keyword_create(*, brand: Brand, project: Project, sender: str, keyword: str) -> SmsKeyword:
    """A keyword on ``sender`` (an E.164 number) for ``project``; ValidationError by field."""
    try:
        sender = phone_to_e164((sender or "").strip(), default_country=brand.default_country)
    except PhoneError as exc:
        raise ValidationError({"sender": f"A phone number that can receive texts: {exc}"}) from exc
    errors = keyword_errors(brand=brand, project=project, sender=sender, keyword=keyword)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            return SmsKeyword.objects.create(
                brand=brand, project=project, sender=sender, keyword=keyword_normalise(keyword)
            )
    except IntegrityError:  # the same keyword, created at the same moment
        raise ValidationError(
            {"keyword": f"'{keyword_normalise(keyword)}' is already a keyword on {sender}."}
        ) from None


def keyword_delete(*, keyword: SmsKeyword) -> None:
    """Remove a keyword; its sessions keep their history (their keyword becomes empty)."""
    keyword.delete()
