from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views import View

from brands.roles import Role
from brands.views import BrandPageMixin
from projects.forms import ProjectForm
from projects.models import Project
from projects.services import (
    STAGE_TRANSITIONS,
    project_change_stage,
    project_create,
    project_update,
)


def apply_service_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


class ProjectListView(BrandPageMixin, View):
    def get(self, request):
        projects = self.scoped(Project.objects.all())
        stage = request.GET.get("stage")
        if stage in Project.Stage.values:
            projects = projects.filter(stage=stage)
        page = Paginator(projects, 25).get_page(request.GET.get("page"))
        return render(
            request,
            "projects/list.html",
            {
                "page": page,
                "stages": Project.Stage.choices,
                "stage": stage,
                "can_edit": self.can(Role.PROJECT_ADMIN),
            },
        )


class ProjectFormView(BrandPageMixin, View):
    read_role = Role.PROJECT_ADMIN

    def get_project(self, pk):
        return self.get_scoped(Project, pk=pk) if pk else None

    def get(self, request, pk=None):
        project = self.get_project(pk)
        with timezone.override(self.brand.zone):
            form = ProjectForm(instance=project)
        return render(request, "projects/form.html", {"form": form, "project": project})

    def post(self, request, pk=None):
        project = self.get_project(pk)
        with timezone.override(self.brand.zone):
            form = ProjectForm(request.POST, instance=project)
            valid = form.is_valid()
        if valid:
            try:
                if project is None:
                    project = project_create(
                        brand=self.brand, actor=request.user, **form.cleaned_data
                    )
                    messages.success(request, f"Project “{project.name}” created.")
                else:
                    project_update(project=project, actor=request.user, **form.cleaned_data)
                    messages.success(request, "Project saved.")
                return redirect("projects:detail", pk=project.pk)
            except ValidationError as exc:
                apply_service_errors(form, exc)
        return render(request, "projects/form.html", {"form": form, "project": project}, status=400)


class ProjectDetailView(BrandPageMixin, View):
    def get(self, request, pk):
        project = self.get_scoped(Project, pk=pk)
        return render(
            request,
            "projects/detail.html",
            {
                "project": project,
                "next_stages": [
                    (s, Project.Stage(s).label)
                    for s in Project.Stage.values
                    if s in STAGE_TRANSITIONS[project.stage]
                ],
                "participant_count": project.participants.count(),
                "stage_changes": project.stage_changes.select_related("actor")[:10],
                "can_edit": self.can(Role.PROJECT_ADMIN),
            },
        )


class ProjectStageView(BrandPageMixin, View):
    def post(self, request, pk):
        project = self.get_scoped(Project, pk=pk)
        try:
            project_change_stage(
                project=project,
                stage=request.POST.get("stage", ""),
                actor=request.user,
                reason=request.POST.get("reason", ""),
            )
            messages.success(request, f"Project is now {project.get_stage_display()}.")
        except ValidationError as exc:
            for errors in exc.message_dict.values():
                for error in errors:
                    messages.error(request, error)
        return redirect("projects:detail", pk=project.pk)


class ProjectPageMixin(BrandPageMixin):
    """A page of one project of the current brand, under the project's tabs."""

    def get_project(self, pk) -> Project:
        return self.get_scoped(Project.objects.select_related("brand"), pk=pk)

    def page(self, request, template: str, project: Project, status: int = 200, **context):
        base = {
            "project": project,
            "participant_count": project.participants.count(),
            "can_edit": self.can(Role.PROJECT_ADMIN),
        }
        with timezone.override(self.brand.zone):  # times on the page: the brand's clock
            return render(request, template, base | context, status=status)
