"""API of contact frequency rules (docs/policies.md): ``/api/v1/frequency-rules/``."""

from __future__ import annotations

from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from distributions.api import ConditionSerializer
from distributions.models import Distribution, FrequencyRule
from distributions.policies import frequency_rule_delete, frequency_rule_save
from projects.models import Project


class FrequencyRuleSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    project = serializers.IntegerField(
        required=False, allow_null=True, help_text="A project's custom rule; null: a brand rule."
    )
    name = serializers.CharField(max_length=100)
    channel = serializers.ChoiceField(
        choices=[("", "all channels"), *Distribution.Channel.choices],
        required=False,
        allow_blank=True,
        default="",
    )
    max_messages = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=FrequencyRule.MAX_MESSAGES,
        help_text="At most this many messages per period; null: no limit on the number.",
    )
    period_days = serializers.IntegerField(
        required=False, default=7, min_value=1, max_value=FrequencyRule.MAX_PERIOD_DAYS
    )
    min_gap_hours = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=FrequencyRule.MAX_GAP_HOURS,
        help_text="0: no minimum.",
    )
    conditions = ConditionSerializer(many=True, required=False)
    count_reminders = serializers.BooleanField(required=False, default=False)
    count_thank_you = serializers.BooleanField(required=False, default=False)
    count_transactional = serializers.BooleanField(required=False, default=False)
    active = serializers.BooleanField(required=False, default=True)
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: FrequencyRule):
        names = [name for name in self.fields if name not in ("project", "created_at")]
        data = {name: getattr(instance, name) for name in names}
        return data | {
            "project": instance.project_id,
            "created_at": serializers.DateTimeField().to_representation(instance.created_at),
        }


class FrequencyRuleViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The brand's contact frequency rules and its projects' custom rules. Everyone reads;
    brand admins manage every rule, project admins the projects' own rules."""

    queryset = FrequencyRule.objects.all()
    serializer_class = FrequencyRuleSerializer
    read_role = Role.VIEWER
    write_role = Role.PROJECT_ADMIN

    def _fields(self, *, partial: bool) -> dict:
        payload = FrequencyRuleSerializer(data=self.request.data, partial=partial)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        if "project" in data:
            project_id = data.pop("project")
            data["project"] = self.get_scoped(Project, pk=project_id) if project_id else None
        if "conditions" in data:
            data["conditions"] = [dict(c) for c in data["conditions"]]
        return data

    def create(self, request, *args, **kwargs):
        rule = frequency_rule_save(
            brand=self.brand, actor=self.actor(), role=self.role, **self._fields(partial=False)
        )
        return Response(FrequencyRuleSerializer(rule).data, status=201)

    def update(self, request, *args, **kwargs):
        rule = frequency_rule_save(
            brand=self.brand,
            role=self.role,
            rule=self.get_object(),
            **self._fields(partial=kwargs.get("partial", False)),
        )
        return Response(FrequencyRuleSerializer(rule).data)

    def perform_destroy(self, instance):
        frequency_rule_delete(rule=instance, role=self.role)
