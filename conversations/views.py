"""Two-way pages: the survey as texts (preview, settings), keywords, and the sessions of a
two-way distribution. Scoped to the current brand by the page mixins (another brand's
project or distribution answers 404); changes need a project admin."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.views import View

from brands.roles import Role
from conversations.forms import ConsentPolicyForm, KeywordForm, TwoWaySettingsForm
from conversations.keywords import keyword_create, keyword_delete
from conversations.models import Session, SmsKeyword
from conversations.selectors import distribution_sessions, session_counts, sms_preview
from conversations.services import settings_for
from distributions.models import Distribution
from optouts.models import ConsentPolicy
from projects.views import ProjectPageMixin, apply_service_errors


def consent_policy_for(project) -> ConsentPolicy:
    return ConsentPolicy.objects.filter(project=project).first() or ConsentPolicy(project=project)


class SmsPreviewView(ProjectPageMixin, View):
    """How each question reads as a text, with its segments; the project's two-way
    settings."""

    def get(self, request, pk, form=None, consent_form=None, status=200):
        project = self.get_project(pk)
        return self.page(
            request,
            "conversations/preview.html",
            project,
            status=status,
            preview=sms_preview(project=project),
            form=form or TwoWaySettingsForm(instance=settings_for(project)),
            consent_form=consent_form or ConsentPolicyForm(instance=consent_policy_for(project)),
        )

    def post(self, request, pk):
        project = self.get_project(pk)
        if request.POST.get("form") == "consent":
            consent_form = ConsentPolicyForm(request.POST, instance=consent_policy_for(project))
            if not consent_form.is_valid():
                return self.get(request, pk, consent_form=consent_form, status=400)
            consent_form.save()
            messages.success(request, "Consent settings saved.")
            return redirect("conversations:sms_preview", pk=project.pk)
        form = TwoWaySettingsForm(request.POST, instance=settings_for(project))
        if not form.is_valid():
            return self.get(request, pk, form=form, status=400)
        form.save()
        messages.success(request, "Two-way settings saved.")
        return redirect("conversations:sms_preview", pk=project.pk)


class KeywordsView(ProjectPageMixin, View):
    def get(self, request, pk, form=None, status=200):
        project = self.get_project(pk)
        keywords = self.scoped(SmsKeyword.objects.filter(project=project))
        return self.page(
            request,
            "conversations/keywords.html",
            project,
            status=status,
            keywords=keywords,
            form=form or KeywordForm(),
        )

    def post(self, request, pk):
        project = self.get_project(pk)
        if request.POST.get("delete"):
            keyword = self.get_scoped(
                SmsKeyword.objects.filter(project=project), pk=request.POST["delete"]
            )
            keyword_delete(keyword=keyword)
            messages.success(request, f"Keyword {keyword.keyword} removed.")
            return redirect("conversations:keywords", pk=project.pk)
        form = KeywordForm(request.POST)
        if form.is_valid():
            try:
                keyword = keyword_create(brand=self.brand, project=project, **form.cleaned_data)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(
                    request, f"Texting {keyword.keyword} to {keyword.sender} starts the survey."
                )
                return redirect("conversations:keywords", pk=project.pk)
        return self.get(request, pk, form=form, status=400)


class SessionsView(ProjectPageMixin, View):
    """The conversations a two-way distribution opened: where each stands, and every text
    sent and received with its time."""

    PAGE = 200

    def get(self, request, pk):
        distribution = self.get_scoped(Distribution.objects.select_related("project__brand"), pk=pk)
        project = distribution.project
        sessions = distribution_sessions(distribution=distribution)
        return self.page(
            request,
            "conversations/sessions.html",
            project,
            distribution=distribution,
            sessions=sessions[: self.PAGE],
            total=sessions.count(),
            counts=[
                (label, n)
                for (value, label), n in zip(
                    Session.Status.choices,
                    session_counts(distribution=distribution).values(),
                    strict=True,
                )
                if n
            ],
            questions=project.questions.count(),
            can_edit=self.can(Role.PROJECT_ADMIN),
        )
