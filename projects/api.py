from django.utils.functional import cached_property
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brands.api.base import (
    BrandScopedAPIMixin,
    LocalTimeField,
    StrictModelSerializer,
    StrictSerializer,
)
from brands.roles import Role
from brands.scoping import get_for_brand_by_pk
from projects.models import Project
from projects.services import (
    POLICY_FIELDS,
    project_change_stage,
    project_create,
    project_update,
)


class ProjectSerializer(StrictModelSerializer):
    anonymous_url = serializers.CharField(read_only=True)
    quiet_hours_start = LocalTimeField(required=False)
    quiet_hours_end = LocalTimeField(required=False)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "kind",
            "stage",
            "available_from",
            "available_until",
            "default_country",
            "by_invitation_only",
            *POLICY_FIELDS,
            "anonymous_one_answer",
            "closed_message",
            "anonymous_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "stage", "created_at", "updated_at"]


class StageChangeSerializer(StrictSerializer):
    stage = serializers.ChoiceField(choices=Project.Stage.choices)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200)
    let_in_progress_finish = serializers.BooleanField(
        default=True,
        help_text="Pausing: respondents in the middle of the survey may still finish it.",
    )
    keep_partial_responses = serializers.BooleanField(
        default=True, help_text="Pausing: keep what cut-off respondents answered, as partial."
    )
    resend_missed = serializers.BooleanField(
        default=True,
        help_text="Resuming: send again, now, the distributions that failed while paused.",
    )


class ProjectViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Projects of the caller's brand. Deleting one needs a brand admin."""

    queryset = Project.objects.select_related("brand")
    serializer_class = ProjectSerializer
    role_for_method = {"DELETE": Role.BRAND_ADMIN}

    def perform_create(self, serializer):
        serializer.instance = project_create(
            brand=self.brand, actor=self.actor(), **serializer.validated_data
        )

    def perform_update(self, serializer):
        project_update(project=serializer.instance, actor=self.actor(), **serializer.validated_data)

    @extend_schema(request=StageChangeSerializer, responses=ProjectSerializer)
    @action(detail=True, methods=["post"])
    def stage(self, request, pk=None):
        """Change the project's stage (new, active, paused, closed); invalid moves answer 400."""
        project = self.get_object()
        payload = StageChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        project_change_stage(project=project, actor=self.actor(), **payload.validated_data)
        return Response(ProjectSerializer(project).data, status=status.HTTP_200_OK)


class ProjectScopedMixin(BrandScopedAPIMixin):
    """Views under ``projects/<project_pk>/``: the project is looked up in the caller's brand."""

    @cached_property
    def project(self) -> Project:
        brand = self.brand
        project = get_for_brand_by_pk(Project, brand=brand, pk=self.kwargs["project_pk"])
        project.brand = brand  # the caller's brand: the lookup is scoped to it
        return project
