import csv

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.text import slugify
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from brands.roles import Role
from brands.views import BrandPageMixin
from participants.forms import ImportForm, ParticipantForm, PersonForm
from participants.models import ImportJob, Participant, Person
from participants.selectors import (
    export_rows,
    import_list,
    import_progress,
    metadata_keys,
    parse_metadata_filters,
    participant_list,
    person_list,
    person_page,
    project_roles,
)
from participants.services import (
    describe_size,
    import_cancel,
    import_confirm,
    import_create,
    import_max_upload_bytes,
    participant_create,
    participant_remove,
    participant_update,
    person_delete,
    person_update,
)
from participants.uploads import install as install_upload_limit
from projects.models import Project

PAGE_SIZE = 50
PERSON_FORM_FIELDS = Person.DIRECTORY_FIELDS


class _Echo:
    def write(self, value):
        return value


def csv_download(rows, filename: str) -> StreamingHttpResponse:
    """Stream ``rows`` as a UTF-8 (with BOM, for Excel) CSV attachment."""
    writer = csv.writer(_Echo())

    def lines():
        yield "\ufeff"
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _apply_service_errors(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


# --- Directory and people -------------------------------------------------------------------


class DirectoryView(BrandPageMixin, View):
    def get(self, request):
        people = person_list(
            queryset=self.scoped(Person.objects.all()),
            q=request.GET.get("q", ""),
            country=self.brand.default_country,
        )
        page = Paginator(people, PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request,
            "participants/directory.html",
            {
                "page": page,
                "q": request.GET.get("q", ""),
                "can_edit": self.can(Role.PROJECT_ADMIN),
                "recent_imports": import_list(
                    queryset=self.scoped(ImportJob.objects.filter(project__isnull=True))
                )[:3],
            },
        )


class DirectoryExportView(BrandPageMixin, View):
    """The directory as CSV (project admins: it holds everyone's contact details)."""

    read_role = Role.PROJECT_ADMIN

    def get(self, request):
        people = person_list(
            queryset=self.scoped(Person.objects.all()),
            q=request.GET.get("q", ""),
            country=self.brand.default_country,
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        return csv_download(
            export_rows(queryset=people, with_role=False),
            f"directory-{slugify(self.brand.name)}-{stamp}.csv",
        )


class PersonDetailView(BrandPageMixin, View):
    def get(self, request, pk):
        person = self.get_scoped(Person, pk=pk)
        context = person_page(person=person)
        context["can_edit"] = self.can(Role.PROJECT_ADMIN)
        return render(request, "participants/person.html", context)


class PersonFormView(BrandPageMixin, View):
    read_role = Role.PROJECT_ADMIN

    def get(self, request, pk):
        person = self.get_scoped(Person, pk=pk)
        initial = {name: getattr(person, name) for name in PERSON_FORM_FIELDS}
        initial["metadata"] = person.metadata
        return render(
            request,
            "participants/person_form.html",
            {"form": PersonForm(initial=initial), "person": person},
        )

    def post(self, request, pk):
        person = self.get_scoped(Person, pk=pk)
        form = PersonForm(request.POST)
        if form.is_valid():
            try:
                person_update(person=person, **form.cleaned_data)
                messages.success(request, "Saved.")
                return redirect("participants:person", pk=person.pk)
            except ValidationError as exc:
                _apply_service_errors(form, exc)
        return render(
            request,
            "participants/person_form.html",
            {"form": form, "person": person},
            status=400,
        )


class PersonDeleteView(BrandPageMixin, View):
    def post(self, request, pk):
        person = self.get_scoped(Person, pk=pk)
        person_delete(person=person)
        messages.success(request, f"Removed {person} from the directory and its projects.")
        return redirect("participants:directory")


# --- Project participants -------------------------------------------------------------------


def _participant_filters(request) -> dict:
    filters = parse_metadata_filters(request.GET.getlist("meta"))
    key, value = request.GET.get("meta_key", "").strip(), request.GET.get("meta_value", "").strip()
    if key:
        filters.append((key, value))
    return {
        "q": request.GET.get("q", "").strip(),
        "role": request.GET.get("role", "").strip(),
        "metadata": filters,
    }


class ProjectParticipantsView(BrandPageMixin, View):
    def get(self, request, project_pk):
        project = self.get_scoped(Project, pk=project_pk)
        filters = _participant_filters(request)
        queryset = participant_list(project=project, **filters)
        page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request,
            "participants/project_list.html",
            {
                "project": project,
                "page": page,
                "q": filters["q"],
                "role": filters["role"],
                "roles": project_roles(project=project),
                "metadata_filters": filters["metadata"],
                "meta_key": request.GET.get("meta_key", ""),
                "meta_value": request.GET.get("meta_value", ""),
                "metadata_keys": metadata_keys(queryset=project.participants.all()),
                "query": request.GET.urlencode(),
                "can_edit": self.can(Role.PROJECT_ADMIN),
                "recent_imports": import_list(
                    queryset=self.scoped(ImportJob.objects.all()), project=project
                )[:3],
            },
        )


class ProjectParticipantsExportView(BrandPageMixin, View):
    """The participants on screen (same filters) as a CSV that imports back unchanged."""

    read_role = Role.PROJECT_ADMIN

    def get(self, request, project_pk):
        project = self.get_scoped(Project, pk=project_pk)
        queryset = participant_list(project=project, **_participant_filters(request))
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        return csv_download(
            export_rows(queryset=queryset, with_role=True),
            f"participants-{slugify(project.name)}-{stamp}.csv",
        )


class ParticipantFormView(BrandPageMixin, View):
    read_role = Role.PROJECT_ADMIN

    def get_objects(self, project_pk, pk):
        project = self.get_scoped(Project, pk=project_pk)
        participant = (
            self.get_scoped(Participant.objects.filter(project=project), pk=pk) if pk else None
        )
        return project, participant

    def get(self, request, project_pk, pk=None):
        project, participant = self.get_objects(project_pk, pk)
        initial = {}
        if participant:
            person = participant.person
            initial = {name: getattr(person, name) for name in PERSON_FORM_FIELDS}
            initial["role"] = participant.role
            initial["metadata"] = person.metadata
        form = ParticipantForm(initial=initial)
        return render(
            request,
            "participants/form.html",
            {"form": form, "project": project, "participant": participant},
        )

    def post(self, request, project_pk, pk=None):
        project, participant = self.get_objects(project_pk, pk)
        form = ParticipantForm(request.POST)
        if form.is_valid():
            data = dict(form.cleaned_data)
            role = data.pop("role")
            try:
                if participant is None:
                    participant_create(project=project, role=role, actor=request.user, **data)
                    messages.success(request, "Participant added.")
                else:
                    participant_update(participant=participant, role=role, **data)
                    messages.success(request, "Participant saved.")
                return redirect("participants:project", project_pk=project.pk)
            except ValidationError as exc:
                _apply_service_errors(form, exc)
        return render(
            request,
            "participants/form.html",
            {"form": form, "project": project, "participant": participant},
            status=400,
        )


class ParticipantRemoveView(BrandPageMixin, View):
    def post(self, request, project_pk, pk):
        project = self.get_scoped(Project, pk=project_pk)
        participant = self.get_scoped(Participant.objects.filter(project=project), pk=pk)
        participant_remove(participant=participant)
        messages.success(request, f"Removed {participant.person} from the project.")
        return redirect("participants:project", project_pk=project.pk)


# --- Imports --------------------------------------------------------------------------------


@method_decorator(csrf_exempt, name="dispatch")  # checked in _post, after the size guard
class ImportUploadView(BrandPageMixin, View):
    """Upload a CSV into a project (``project_pk``) or into the directory alone."""

    read_role = Role.PROJECT_ADMIN

    def get_project(self, project_pk):
        return self.get_scoped(Project, pk=project_pk) if project_pk else None

    def render_form(self, request, form, project, status=200, upload_error=""):
        return render(
            request,
            "participants/import_form.html",
            {
                "form": form,
                "project": project,
                "limit": describe_size(import_max_upload_bytes()),
                "upload_error": upload_error,
            },
            status=status,
        )

    def get(self, request, project_pk=None):
        project = self.get_project(project_pk)
        return self.render_form(request, ImportForm(project=project), project)

    def post(self, request, project_pk=None):
        # The size guard must see the body before anything parses it (CSRF reads POST).
        install_upload_limit(request, limit=import_max_upload_bytes())
        return self._post(request, project_pk)

    @method_decorator(csrf_protect)
    def _post(self, request, project_pk=None):
        project = self.get_project(project_pk)
        request.FILES  # noqa: B018 - parse the body now, under the size guard
        too_large = getattr(request, "import_upload_too_large", None)
        if too_large:
            message = (
                f"The file is larger than {describe_size(import_max_upload_bytes())} (the upload "
                f"was about {describe_size(too_large)}). Split it into smaller files, each with "
                "the header row, and import them one after the other."
            )
            return self.render_form(
                request, ImportForm(project=project), project, status=413, upload_error=message
            )
        form = ImportForm(request.POST, request.FILES, project=project)
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = import_create(
                    brand=self.brand,
                    project=project,
                    upload=data["file"],
                    actor=request.user,
                    erase_empty=data["erase_empty"],
                    metadata_target=data.get("metadata_target") or ImportJob.MetadataTarget.PERSON,
                    required_fields=data["required_fields"],
                    source=ImportJob.Source.PAGE,
                )
                return redirect("participants:import", pk=job.pk)
            except ValidationError as exc:
                _apply_service_errors(form, exc)
        return self.render_form(request, form, project, status=400)


class ImportPageMixin(BrandPageMixin):
    read_role = Role.PROJECT_ADMIN

    def get_job(self, pk) -> ImportJob:
        return self.get_scoped(ImportJob.objects.select_related("project", "created_by"), pk=pk)

    def status_context(self, job: ImportJob) -> dict:
        return {
            "job": job,
            "progress": import_progress(job=job),
            "can_edit": self.can(Role.PROJECT_ADMIN),
            "report": job.report or {},
            "columns": job.columns or [],
        }


class ImportDetailView(ImportPageMixin, View):
    def get(self, request, pk):
        job = self.get_job(pk)
        return render(request, "participants/import_detail.html", self.status_context(job))


class ImportStatusView(ImportPageMixin, View):
    """The live part of the import page, polled by htmx while the import runs."""

    def get(self, request, pk):
        job = self.get_job(pk)
        return render(request, "participants/_import_status.html", self.status_context(job))


class ImportConfirmView(ImportPageMixin, View):
    def post(self, request, pk):
        job = self.get_job(pk)
        try:
            job = import_confirm(job=job, actor=request.user)
        except ValidationError as exc:
            for error in exc.messages:
                messages.error(request, error)
        else:
            if job.status == ImportJob.Status.DONE:
                messages.success(request, "Imported.")
            elif job.status == ImportJob.Status.FAILED:
                messages.error(request, job.failure)
        return redirect("participants:import", pk=pk)


class ImportCancelView(ImportPageMixin, View):
    def post(self, request, pk):
        job = self.get_job(pk)
        try:
            import_cancel(job=job, actor=request.user)
            messages.success(request, "Import cancelled: nothing was written.")
        except ValidationError as exc:
            for error in exc.messages:
                messages.error(request, error)
        return redirect("participants:import", pk=pk)


class ImportErrorsView(ImportPageMixin, View):
    """Every bad row with its errors, as CSV: fix them in place and upload the file again."""

    def get(self, request, pk):
        job = self.get_job(pk)
        if not job.errors_file:
            raise Http404("This import has no error file.")
        stem = slugify(job.original_name.rsplit(".", 1)[0]) or "import"
        return FileResponse(
            job.errors_file.open("rb"),
            as_attachment=True,
            filename=f"{stem}-errors.csv",
            content_type="text/csv; charset=utf-8",
        )


class ImportListView(ImportPageMixin, View):
    def get(self, request):
        project = None
        if request.GET.get("project"):
            project = self.get_scoped(Project, pk=request.GET["project"])
        jobs = import_list(queryset=self.scoped(ImportJob.objects.all()), project=project)
        page = Paginator(jobs, PAGE_SIZE).get_page(request.GET.get("page"))
        return render(request, "participants/import_list.html", {"page": page, "project": project})
