"""Project pages of distributions: the pause and resume dialogs (what is scheduled; which
distributions failed while the project was paused, resent on request) and recurring messages
(Lifecycle projects)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.utils import timezone
from django.views import View

from brands.roles import Role
from distributions.forms import ResumeForm, SeriesForm
from distributions.models import Distribution, DistributionSeries
from distributions.selectors import missed_while_paused
from distributions.series import SERIES_ACTIONS, series_create
from projects.forms import PauseForm
from projects.models import Project
from projects.services import (
    STAGE_TRANSITIONS,
    project_change_stage,
)
from projects.views import ProjectPageMixin, apply_service_errors

Stage = Project.Stage


class ResumeView(ProjectPageMixin, View):
    read_role = Role.PROJECT_ADMIN

    def get(self, request, pk):
        project = self.get_project(pk)
        return self.page(
            request,
            "projects/resume.html",
            project,
            form=ResumeForm(),
            missed=missed_while_paused(project=project, since=project.collection_stopped_at)
            if project.stage == Stage.PAUSED and project.collection_stopped_at
            else [],
            allowed=project.stage == Stage.PAUSED,
        )

    def post(self, request, pk):
        project = self.get_project(pk)
        form = ResumeForm(request.POST)
        form.is_valid()
        try:
            project_change_stage(
                project=project,
                stage=Stage.ACTIVE,
                actor=request.user,
                resend_missed=form.cleaned_data.get("resend_missed", False),
            )
        except ValidationError as exc:
            for errors in exc.message_dict.values():
                for error in errors:
                    messages.error(request, error)
        else:
            messages.success(request, "Response collection resumed.")
        return redirect("projects:detail", pk=project.pk)


# --- recurring messages -----------------------------------------------------------------------
class SeriesView(ProjectPageMixin, View):
    def get(self, request, pk, form=None, status=200):
        project = self.get_project(pk)
        return self.page(
            request,
            "projects/series.html",
            project,
            status=status,
            form=form or SeriesForm(initial={"starts_on": timezone.localdate()}),
            series_list=DistributionSeries.objects.filter(project=project).prefetch_related("runs"),
            zone_name=self.brand.time_zone,
        )

    def post(self, request, pk):
        project = self.get_project(pk)
        form = SeriesForm(request.POST)
        if form.is_valid():
            try:
                series_create(project=project, actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Recurring message scheduled.")
                return redirect("projects:series", pk=project.pk)
        return self.get(request, pk, form=form, status=400)


class SeriesActionView(ProjectPageMixin, View):
    def post(self, request, pk, series_pk, action):
        project = self.get_project(pk)
        series = DistributionSeries.objects.filter(project=project, pk=series_pk).first()
        if series is None or action not in SERIES_ACTIONS:
            raise Http404("No such recurring message.")
        try:
            updated = SERIES_ACTIONS[action](series=series, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"Recurring message {updated.get_status_display().lower()}.")
        return redirect("projects:series", pk=project.pk)


# --- pause and resume -------------------------------------------------------------------------
class PauseView(ProjectPageMixin, View):
    """The pause dialog. Pausing also stops the project's scheduled sends and links."""

    read_role = Role.PROJECT_ADMIN

    def get(self, request, pk, form=None, status=200):
        project = self.get_project(pk)
        return self.page(
            request,
            "projects/pause.html",
            project,
            status=status,
            form=form or PauseForm(),
            allowed=Stage.PAUSED in STAGE_TRANSITIONS[project.stage],
            scheduled=project.distributions.filter(status=Distribution.Status.SCHEDULED).count(),
        )

    def post(self, request, pk):
        project = self.get_project(pk)
        form = PauseForm(request.POST)
        if not form.is_valid():
            return self.get(request, pk, form=form, status=400)
        try:
            project_change_stage(
                project=project,
                stage=Stage.PAUSED,
                actor=request.user,
                reason=form.cleaned_data["reason"],
                let_in_progress_finish=form.cleaned_data["in_progress"] == "finish",
                keep_partial_responses=form.cleaned_data["partial"] == "keep",
            )
        except ValidationError as exc:
            for errors in exc.message_dict.values():
                for error in errors:
                    messages.error(request, error)
        else:
            messages.success(request, "Response collection is paused.")
        return redirect("projects:detail", pk=project.pk)
