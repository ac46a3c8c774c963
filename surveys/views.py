"""Project pages of the survey: the survey editor, links and QR code, signing secrets, the
summary (responses over time by channel, live). Pages translate HTTP; the rules live in
``surveys.services``."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views import View

from brands.roles import Role
from brands.rotation import grace_from_hours
from core.csvio import csv_download, csv_rows
from projects.models import Project, Response, ResponseReset
from projects.services import project_update
from projects.views import ProjectPageMixin, apply_service_errors
from surveys.api import qr_http_response
from surveys.forms import LinksGenerateForm, QuestionForm
from surveys.respondents import respondent_counts
from surveys.selectors import (
    LINKS_HEADER,
    links_csv_rows,
    question_list,
    response_list,
    responses_csv,
    responses_summary,
    survey_links,
)
from surveys.services import (
    question_create,
    question_delete,
    question_move,
    question_update,
    response_reset,
    survey_links_create,
)
from surveys.signed_links import (
    signing_secret_active,
    signing_secret_in_grace,
    signing_secret_issue,
    signing_secret_revoke,
)

Stage = Project.Stage
RECENT_RESPONSES = 20  # rows of the "latest responses" table on the summary page


# --- the survey editor ------------------------------------------------------------------------
class SurveyView(ProjectPageMixin, View):
    def get(self, request, pk, add_form=None, status=200):
        project = self.get_project(pk)
        questions = question_list(project=project)
        return self.page(
            request,
            "projects/survey.html",
            project,
            status=status,
            questions=[(q, QuestionForm.for_question(q)) for q in questions],
            add_form=add_form or QuestionForm(prefix="new"),
            answered=Response.objects.filter(project=project).exists(),
        )

    def post(self, request, pk):
        project = self.get_project(pk)
        form = QuestionForm(request.POST, prefix="new")
        if form.is_valid():
            try:
                question_create(project=project, actor=request.user, **form.service_data())
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Question added.")
                return redirect("projects:survey", pk=project.pk)
        return self.get(request, pk, add_form=form, status=400)


class QuestionView(ProjectPageMixin, View):
    """Edit (POST action=save), move (up/down) or delete one question."""

    def post(self, request, pk, question_pk):
        project = self.get_project(pk)
        question = project.questions.filter(pk=question_pk).first()
        if question is None:
            raise Http404("No such question.")
        action = request.POST.get("action", "save")
        if action in ("up", "down"):
            question_move(question=question, offset=-1 if action == "up" else 1)
        elif action == "delete":
            question_delete(question=question, actor=request.user)
            messages.success(request, "Question deleted.")
        else:
            form = QuestionForm(request.POST, prefix=f"q{question.pk}")
            if not form.is_valid():
                _report(request, question, form.errors)
            else:
                try:
                    question_update(question=question, actor=request.user, **form.service_data())
                except ValidationError as exc:
                    _report(request, question, exc.message_dict)
                else:
                    messages.success(request, "Question saved.")
        return redirect(reverse("projects:survey", args=[project.pk]) + f"#question-{question_pk}")


def _report(request, question, errors) -> None:
    for field, field_errors in errors.items():
        for error in field_errors:
            messages.error(request, f"Question {question.position}, {field}: {error}")


# --- links and QR code ------------------------------------------------------------------------
class LinksView(ProjectPageMixin, View):
    def get(self, request, pk, generate_form=None, status=200, new_secret=""):
        project = self.get_project(pk)
        links = survey_links(project=project)
        return self.page(
            request,
            "projects/links.html",
            project,
            status=status,
            signing_secret=signing_secret_active(project=project),
            previous_secret=signing_secret_in_grace(project=project),
            new_secret=new_secret,
            generate_form=generate_form or LinksGenerateForm(),
            link_counts={
                "total": links.count(),
                "opened": links.filter(opened_at__isnull=False).count(),
                "completed": links.filter(completed_at__isnull=False).count(),
            },
            zone_name=self.brand.time_zone,
        )

    def post(self, request, pk):
        """The by-invitation-only and one-answer-per-person switches."""
        project = self.get_project(pk)
        wanted = request.POST.get("by_invitation_only") == "on"
        one_answer = request.POST.get("anonymous_one_answer") == "on"
        project_update(
            project=project,
            actor=request.user,
            by_invitation_only=wanted,
            anonymous_one_answer=one_answer,
        )
        messages.success(
            request,
            "The anonymous link and QR code are disabled: by invitation only."
            if wanted
            else "The anonymous link and QR code answer"
            + (" once per browser." if one_answer else " any number of times."),
        )
        return redirect("projects:links", pk=project.pk)


class SigningSecretPageView(LinksView):
    """Issue or rotate (``action=issue``) or revoke (``action=revoke``) the project's secret
    for signed anonymous links. A new secret is shown on this answer only (no redirect: it is
    never stored in the session or a message)."""

    http_method_names = ["post"]

    def post(self, request, pk):
        project = self.get_project(pk)
        if request.POST.get("action") == "revoke":
            if signing_secret_revoke(project=project):
                messages.success(request, "Signing secret revoked: signed links stop answering.")
            return redirect("projects:links", pk=project.pk)
        try:
            _, plain = signing_secret_issue(
                project=project,
                actor=request.user,
                grace=grace_from_hours(request.POST.get("grace_hours")),
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("projects:links", pk=project.pk)
        return self.get(request, pk, new_secret=plain)


class QrCodeView(ProjectPageMixin, View):
    def get(self, request, pk, kind):
        project = self.get_project(pk)
        return qr_http_response(project, kind=kind, download="download" in request.GET)


class LinksGenerateView(LinksView):
    """Make one new personal link per participant (optionally of one role); answer the CSV."""

    http_method_names = ["post"]

    def post(self, request, pk):
        project = self.get_project(pk)
        with timezone.override(self.brand.zone):
            form = LinksGenerateForm(request.POST)
            valid = form.is_valid()
        if valid:
            participants = project.participants.all()
            if form.cleaned_data["role"]:
                participants = participants.filter(role__iexact=form.cleaned_data["role"])
            try:
                links = survey_links_create(
                    project=project,
                    participants=participants.select_related("person"),
                    channel=form.cleaned_data["channel"],
                    expires_at=form.cleaned_data["expires_at"],
                    actor=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                created = survey_links(project=project).filter(pk__in=[link.pk for link in links])
                rows = links_csv_rows(created.iterator(chunk_size=2000), zone=self.brand.zone)
                return csv_download(
                    csv_rows(LINKS_HEADER, rows), f"project-{project.pk}-personal-links.csv"
                )
        return self.get(request, pk, generate_form=form, status=400)


class LinksCsvView(ProjectPageMixin, View):
    def get(self, request, pk):
        project = self.get_project(pk)
        links = survey_links(project=project, channel=request.GET.get("channel") or None)
        rows = links_csv_rows(links.iterator(chunk_size=2000), zone=self.brand.zone)
        return csv_download(csv_rows(LINKS_HEADER, rows), f"project-{project.pk}-links.csv")


# --- distribution summary ---------------------------------------------------------------------
class ResponsesView(ProjectPageMixin, View):
    """The distribution summary: responses over time by channel (chart) and a table, live."""

    template = "projects/responses.html"

    def get(self, request, pk):
        project = self.get_project(pk)
        return self.page(
            request,
            self.template,
            project,
            summary=responses_summary(project=project, zone=self.brand.zone),
            counts=respondent_counts(project=project),
            recent=response_list(project=project)[:RECENT_RESPONSES],
            resets=ResponseReset.objects.filter(response__project=project).select_related(
                "actor", "response__participant__person"
            )[:RECENT_RESPONSES],
            zone_name=self.brand.time_zone,
        )


class ResponsesLiveView(ResponsesView):
    template = "projects/_responses_live.html"


class ResponsesCsvView(ProjectPageMixin, View):
    def get(self, request, pk):
        project = self.get_project(pk)
        status = request.GET.get("status")
        header, rows = responses_csv(
            project=project,
            zone=self.brand.zone,
            status=status if status in Response.Status.values else None,
        )
        return csv_download(csv_rows(header, rows), f"project-{project.pk}-responses.csv")


class ResponseResetPageView(ProjectPageMixin, View):
    """Reset one response so that its person can answer again (project admins): the page says
    what a reset does and asks why; the POST resets it (``surveys.services.response_reset``)."""

    read_role = Role.PROJECT_ADMIN

    def get_response(self, project: Project, response_pk: int) -> Response:
        return self.get_scoped(
            Response.objects.filter(project=project).select_related("participant__person"),
            pk=response_pk,
        )

    def get(self, request, pk, response_pk, error="", status=200):
        project = self.get_project(pk)
        return self.page(
            request,
            "projects/response_reset.html",
            project,
            status=status,
            response=self.get_response(project, response_pk),
            error=error,
        )

    def post(self, request, pk, response_pk):
        project = self.get_project(pk)
        response = self.get_response(project, response_pk)
        try:
            response_reset(
                response=response, actor=request.user, reason=request.POST.get("reason", "")
            )
        except ValidationError as exc:
            return self.get(request, pk, response_pk, error=" ".join(exc.messages), status=400)
        messages.success(
            request,
            "Response reset: the person can answer again. Their earlier answers are kept as "
            "superseded.",
        )
        return redirect("projects:responses", pk=project.pk)
