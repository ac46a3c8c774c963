from django.db.models import Q
from rest_framework import generics, serializers

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from participants.models import Participant, Person
from participants.services import (
    participant_create,
    participant_remove,
    participant_update,
    person_create,
    person_update,
)
from projects.models import Project


class PersonFieldsSerializer(StrictSerializer):
    person_id = serializers.CharField(required=False, allow_blank=True, max_length=128)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    username = serializers.CharField(required=False, allow_blank=True, max_length=150)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    metadata = serializers.DictField(required=False)


class PersonSerializer(PersonFieldsSerializer):
    id = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class ParticipantSerializer(PersonFieldsSerializer):
    id = serializers.IntegerField(read_only=True)
    project = serializers.IntegerField(read_only=True)
    person = serializers.IntegerField(read_only=True)
    role = serializers.CharField(required=False, allow_blank=True, max_length=120)
    participant_metadata = serializers.DictField(required=False)
    created_at = serializers.DateTimeField(read_only=True)

    PERSON_OUTPUT = (
        "person_id",
        "first_name",
        "last_name",
        "email",
        "username",
        "phone",
        "metadata",
    )

    def to_representation(self, instance: Participant):
        person = instance.person
        data = {"id": instance.pk, "project": instance.project_id, "person": person.pk}
        data.update({name: getattr(person, name) for name in self.PERSON_OUTPUT})
        data.update(
            {
                "role": instance.role,
                "participant_metadata": instance.metadata,
                "created_at": serializers.DateTimeField().to_representation(instance.created_at),
            }
        )
        return data


def search_people(queryset, term: str, prefix: str = ""):
    term = (term or "").strip()
    if not term:
        return queryset
    fields = ("first_name", "last_name", "email", "phone", "person_id", "username")
    condition = Q()
    for name in fields:
        condition |= Q(**{f"{prefix}{name}__icontains": term})
    return queryset.filter(condition)


class PersonListCreate(BrandScopedAPIMixin, generics.ListCreateAPIView):
    """The brand's directory. ``?q=`` searches names, email, phone, PersonID."""

    queryset = Person.objects.all()
    serializer_class = PersonSerializer

    def get_queryset(self):
        return search_people(super().get_queryset(), self.request.query_params.get("q"))

    def perform_create(self, serializer):
        serializer.instance = person_create(brand=self.brand, **serializer.validated_data)


class PersonDetail(BrandScopedAPIMixin, generics.RetrieveUpdateAPIView):
    queryset = Person.objects.all()
    serializer_class = PersonSerializer

    def perform_update(self, serializer):
        person_update(person=serializer.instance, **serializer.validated_data)


class ProjectParticipantsMixin(BrandScopedAPIMixin):
    def get_project(self) -> Project:
        if not hasattr(self, "_project"):
            self._project = self.get_scoped(Project, pk=self.kwargs["project_pk"])
        return self._project

    def base_queryset(self):
        return Participant.objects.filter(project=self.get_project()).select_related("person")


class ParticipantListCreate(ProjectParticipantsMixin, generics.ListCreateAPIView):
    """Participants of a project. ``?q=`` searches people, ``?role=`` filters by role."""

    serializer_class = ParticipantSerializer

    def get_queryset(self):
        queryset = search_people(
            super().get_queryset(), self.request.query_params.get("q"), "person__"
        )
        role = self.request.query_params.get("role")
        if role:
            queryset = queryset.filter(role__iexact=role)
        return queryset

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = participant_create(
            project=self.get_project(),
            role=data.pop("role", ""),
            participant_metadata=data.pop("participant_metadata", None),
            actor=self.actor(),
            **data,
        )


class ParticipantDetail(ProjectParticipantsMixin, generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ParticipantSerializer

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        participant_update(
            participant=serializer.instance,
            role=data.pop("role", None),
            participant_metadata=data.pop("participant_metadata", None),
            **data,
        )

    def perform_destroy(self, instance):
        participant_remove(participant=instance)
