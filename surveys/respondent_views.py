"""The respondent's pages: ``/s/<token>`` (a personal link) and ``/a/<token>`` (the project's
anonymous link, also behind its QR code).

Public, so they say as little as possible: an unknown or malformed token is the same plain 404
page, with no detail. Pages are private to their reader (``no-store``, no referrer, not indexed)
and load nothing from a third party. Showing the survey costs two queries (link with project,
then questions); the first opening of a personal link adds the Opened writes. A personal
link's form can be saved to finish later (the link then resumes the saved answers); the
anonymous link can take one answer per browser (a signed cookie, when the project asks).
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import wraps

from django.core import signing
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from projects.models import Project, Question, Response
from surveys import signed_links
from surveys.answers import answers_as_form, form_stamp, form_stamp_read
from surveys.selectors import question_list, response_still_counts, survey_link_for_page
from surveys.services import (
    SubmitOutcome,
    anonymous_scope,
    link_scope,
    response_submit_anonymous,
    response_submit_link,
    survey_link_open,
)
from surveys.signed_links import SIGNATURE_PARAMETER

TOKEN = re.compile(r"^[0-9A-Za-z]{4,32}$")
Kind = Question.Kind


def respondent_page(view):
    """Headers every respondent page carries. The personal token is in the URL: the referrer
    never leaves the site ("no-referrer" would also blank the Origin of the page's own form
    post, which Django's CSRF check then refuses)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "same-origin"
        response["X-Robots-Tag"] = "noindex, nofollow"
        return response

    return wrapper


def not_found(request):
    return render(request, "survey/not_found.html", status=404)


def _closed(request, project: Project, *, reason: str, status: int = 200):
    return render(
        request, "survey/closed.html", {"project": project, "reason": reason}, status=status
    )


def _closed_reason(project: Project) -> str:
    if project.stage == Project.Stage.PAUSED:
        return "paused"
    now = timezone.now()
    if (
        project.stage == Project.Stage.ACTIVE
        and project.available_from
        and now < (project.available_from)
    ):
        return "not_yet"
    return "closed"


def _thanks(request, project: Project, *, again: bool = False, status: int = 200):
    return render(
        request, "survey/thanks.html", {"project": project, "again": again}, status=status
    )


def _items(questions: list[Question], data=None, errors: dict | None = None) -> list[dict]:
    """What the form template needs per question: its answer options (checked or not), the
    text typed, and its error."""
    errors = errors or {}
    items = []
    for question in questions:
        name = question.field_name
        if data is None:
            chosen: list[str] = []
        elif question.kind == Kind.MULTIPLE:
            chosen = data.getlist(name)
        else:
            chosen = [data.get(name, "")]
        if question.kind == Kind.RATING:
            values = [str(n) for n in question.rating_range]
        elif question.kind in Question.CHOICE_KINDS:
            values = list(question.choices)
        else:
            values = []
        items.append(
            {
                "question": question,
                "anchor": name,
                "error": errors.get(question.pk, ""),
                "text": chosen[0] if question.kind == Kind.TEXT and chosen else "",
                "options": [
                    {"id": f"{name}-{index}", "value": value, "checked": value in chosen}
                    for index, value in enumerate(values)
                ],
            }
        )
    return items


def _form(
    request,
    project,
    questions,
    *,
    scope,
    data=None,
    errors=None,
    notice="",
    status=200,
    can_save=False,
):
    # A form shown again for corrections keeps its stamp: when it was first shown still counts
    # (a pause in between lets this respondent finish) and its one-time key is still unused.
    posted = data.get("stamp", "") if data is not None else ""
    stamp = posted if form_stamp_read(posted, scope) else form_stamp(scope, now=timezone.now())
    return render(
        request,
        "survey/form.html",
        {
            "project": project,
            "items": _items(questions, data, errors),
            "errors": errors or {},
            "notice": notice,
            "stamp": stamp,
            "action": request.get_full_path(),
            "can_save": can_save,
        },
        status=status,
    )


@respondent_page
@require_http_methods(["GET", "POST"])
def personal_survey(request, token: str):
    if not TOKEN.match(token):
        return not_found(request)
    if request.method == "POST":
        return _personal_submit(request, token)
    link = survey_link_for_page(token)
    if link is None:
        return not_found(request)
    survey_link_open(link=link)
    project = link.project
    if link.completed_at or link.family_answered:
        return _thanks(request, project, again=True)
    if link.expires_at and link.expires_at <= timezone.now():
        return _closed(request, project, reason="expired")
    if not project.is_collecting:
        return _closed(request, project, reason=_closed_reason(project))
    questions = question_list(project=project)
    if link.saved_answers is not None:  # saved to finish later: resume them
        return _form(
            request,
            project,
            questions,
            scope=link_scope(token),
            data=answers_as_form(questions, link.saved_answers),
            notice=RESUMED_NOTICE,
            can_save=True,
        )
    return _form(request, project, questions, scope=link_scope(token), can_save=True)


RESUMED_NOTICE = "Welcome back: the answers you saved are filled in. Finish and submit."


def _personal_submit(request, token: str):
    result = response_submit_link(
        token=token,
        data=request.POST,
        url_params=request.GET,
        stamp=request.POST.get("stamp", ""),
        finish=request.POST.get("action") != "save",
    )
    # After a completion, the link's own page says thank you (reloading it re-posts nothing).
    return _after_submit(request, result, scope=link_scope(token), reload_when_done=True)


def _after_submit(request, result, *, scope: str, reload_when_done: bool = False):
    outcome, project = result.outcome, result.project
    if outcome == SubmitOutcome.SAVED:
        return render(
            request, "survey/saved.html", {"project": project, "url": request.get_full_path()}
        )
    if outcome == SubmitOutcome.COMPLETE:
        if reload_when_done:
            return redirect(request.get_full_path())
        return _thanks(request, project)
    if outcome == SubmitOutcome.ANSWERED:
        return _thanks(request, project, again=True, status=409)
    if outcome == SubmitOutcome.PARTIAL:
        return _closed(request, project, reason="partial_kept")
    if outcome == SubmitOutcome.CLOSED:
        return _closed(request, project, reason=_closed_reason(project))
    if outcome == SubmitOutcome.EXPIRED:
        return _closed(request, project, reason="expired")
    notice = (
        "This page was open for too long. Your answers are still here: please submit again."
        if outcome == SubmitOutcome.STALE_FORM
        else ""
    )
    return _form(
        request,
        project,
        result.questions,
        scope=scope,
        data=request.POST,
        errors=result.errors,
        notice=notice,
        status=400,
        can_save=scope.startswith("s:"),
    )


@respondent_page
@require_http_methods(["GET", "POST"])
def anonymous_survey(request, token: str):
    if not TOKEN.match(token):
        return not_found(request)
    project = Project.objects.filter(public_token=token).first()
    if project is None:
        return not_found(request)
    if project.by_invitation_only:
        return _closed(request, project, reason="invitation_only", status=403)
    if request.method == "GET" and SIGNATURE_PARAMETER in request.GET:
        return _signed_open(request, project)
    scope = anonymous_scope(project)
    signed = signed_links.session_read(request.session, project)
    if request.method == "POST":
        channel = (
            Response.Channel.QR if request.GET.get("src") == "qr" else Response.Channel.ANONYMOUS
        )
        if _answered_here(request, project):
            return _thanks(request, project, again=True, status=409)
        result = response_submit_anonymous(
            project=project,
            data=request.POST,
            url_params=request.GET,
            stamp=request.POST.get("stamp", ""),
            channel=channel,
            signed=signed,
        )
        answer = _after_submit(request, result, scope=scope)
        if project.anonymous_one_answer and result.outcome == SubmitOutcome.COMPLETE:
            _answered_here_remember(answer, project, result.response.pk, secure=request.is_secure())
        return answer
    if signed is not None and signed_links.signed_link_used(project=project, digest=signed.digest):
        return _thanks(request, project, again=True)
    if _answered_here(request, project):
        return _thanks(request, project, again=True)
    if not project.is_collecting:
        return _closed(request, project, reason=_closed_reason(project))
    return _form(request, project, question_list(project=project), scope=scope)


# "One answer per person" on the anonymous link (docs/survey.md): a signed cookie naming the
# response this browser recorded, scoped to the survey's path. It stops the honest second
# attempt, not a determined one: clearing cookies, a private window or another browser or
# device answers again. After an admin resets that response, the browser may answer again.
ANSWERED_COOKIE_SALT = "relay.survey.answered"
ANSWERED_COOKIE_AGE = timedelta(days=365)


def _answered_cookie(project: Project) -> str:
    return f"relay_answered_{project.public_token}"


def _answered_here(request, project: Project) -> bool:
    if not project.anonymous_one_answer:
        return False
    try:
        value = request.get_signed_cookie(
            _answered_cookie(project),
            salt=ANSWERED_COOKIE_SALT,
            max_age=ANSWERED_COOKIE_AGE,
        )
    except (KeyError, signing.BadSignature):
        return False
    return value.isdigit() and response_still_counts(project=project, response_id=int(value))


def _answered_here_remember(answer, project: Project, response_id: int, *, secure: bool) -> None:
    answer.set_signed_cookie(
        _answered_cookie(project),
        str(response_id),
        salt=ANSWERED_COOKIE_SALT,
        max_age=int(ANSWERED_COOKIE_AGE.total_seconds()),
        path=f"/a/{project.public_token}",
        secure=secure,
        httponly=True,
        samesite="Lax",
    )


SIGNED_REFUSALS = {"invalid": 403, "malformed": 400, "expired": 410}


def _signed_open(request, project: Project):
    """A signed URL: check it, move its parameters into the session, send the browser to the
    bare anonymous URL (the parameters leave the address bar and the history). A refused one
    answers a plain page saying why, with nothing about the survey."""
    try:
        signed = signed_links.signed_parameters_read(project=project, query=request.GET)
    except signed_links.SignedLinkRefused as exc:
        return render(
            request,
            "survey/signed_refused.html",
            {"reason": exc.reason},
            status=SIGNED_REFUSALS[exc.reason],
        )
    signed_links.session_store(request.session, project, signed)
    return redirect(reverse("survey:anonymous", args=[project.public_token]))
