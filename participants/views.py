from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views import View

from brands.roles import Role
from brands.views import BrandPageMixin
from participants.api import search_people
from participants.forms import ParticipantForm
from participants.models import Participant, Person
from participants.services import participant_create, participant_remove, participant_update
from projects.models import Project

PAGE_SIZE = 50


class DirectoryView(BrandPageMixin, View):
    def get(self, request):
        people = search_people(self.scoped(Person.objects.all()), request.GET.get("q"))
        page = Paginator(people, PAGE_SIZE).get_page(request.GET.get("page"))
        return render(
            request, "participants/directory.html", {"page": page, "q": request.GET.get("q", "")}
        )


class PersonDetailView(BrandPageMixin, View):
    def get(self, request, pk):
        person = self.get_scoped(Person, pk=pk)
        participations = person.participations.select_related("project")
        return render(
            request,
            "participants/person.html",
            {"person": person, "participations": participations},
        )


class ProjectParticipantsView(BrandPageMixin, View):
    def get(self, request, project_pk):
        project = self.get_scoped(Project, pk=project_pk)
        queryset = search_people(
            project.participants.select_related("person"), request.GET.get("q"), "person__"
        )
        role = request.GET.get("role")
        if role:
            queryset = queryset.filter(role__iexact=role)
        page = Paginator(queryset, PAGE_SIZE).get_page(request.GET.get("page"))
        roles = project.participants.exclude(role="").values_list("role", flat=True).distinct()
        return render(
            request,
            "participants/project_list.html",
            {
                "project": project,
                "page": page,
                "q": request.GET.get("q", ""),
                "role": role or "",
                "roles": sorted(set(roles)),
                "can_edit": self.can(Role.PROJECT_ADMIN),
            },
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
            initial = {
                name: getattr(person, name)
                for name in ("person_id", "first_name", "last_name", "email", "username", "phone")
            }
            initial["role"] = participant.role
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
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
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
