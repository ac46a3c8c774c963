"""API of keyword access (docs/two-way.md): ``/api/v1/sms-keywords/``. The rules are
``conversations.keywords``', the same as the project's keyword page."""

from __future__ import annotations

from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from conversations.keywords import MAX_KEYWORD_LENGTH, keyword_create, keyword_delete
from conversations.models import SmsKeyword
from projects.models import Project


class SmsKeywordSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    project = serializers.IntegerField(
        help_text="The project whose two-way survey the keyword starts."
    )
    sender = serializers.CharField(
        max_length=32, help_text="The brand's number (E.164) the keyword is texted to."
    )
    keyword = serializers.CharField(
        max_length=MAX_KEYWORD_LENGTH * 2,
        help_text="One word of letters and digits; stored in capitals, accents and punctuation "
        "ignored; never a STOP, START/YES or HELP word; unique per number.",
    )
    active = serializers.BooleanField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: SmsKeyword):
        return {
            "id": instance.pk,
            "project": instance.project_id,
            "sender": instance.sender,
            "keyword": instance.keyword,
            "active": instance.active,
            "created_at": serializers.DateTimeField().to_representation(instance.created_at),
        }


class SmsKeywordViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The brand's SMS keywords: a number that texts one to its sender starts the project's
    two-way survey. Everyone reads; project and brand admins add and remove them."""

    queryset = SmsKeyword.objects.order_by("sender", "keyword", "pk")
    serializer_class = SmsKeywordSerializer
    read_role = Role.VIEWER
    write_role = Role.PROJECT_ADMIN

    def create(self, request, *args, **kwargs):
        payload = SmsKeywordSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        keyword = keyword_create(
            brand=self.brand,
            project=self.get_scoped(Project, pk=data["project"]),
            sender=data["sender"],
            keyword=data["keyword"],
        )
        return Response(SmsKeywordSerializer(keyword).data, status=201)

    def perform_destroy(self, instance):
        keyword_delete(keyword=instance)
