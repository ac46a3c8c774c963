"""API of two-way SMS (docs/two-way.md): keyword access (``/api/v1/sms-keywords/``, the rules
of ``conversations.keywords``, the same as the project's keyword page) and the conversations
(``/api/v1/sms-sessions/``, read only, as the distribution's sessions page shows them)."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from conversations.keywords import MAX_KEYWORD_LENGTH, keyword_create, keyword_delete
from conversations.models import Session, SmsKeyword, Turn
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


class TurnSerializer(serializers.ModelSerializer):
    class Meta:
        model = Turn
        fields = [
            "direction",
            "kind",
            "question",
            "body",
            "segments",
            "status",
            "status_reason",
            "created_at",
            "sent_at",
        ]
        read_only_fields = fields


class SmsSessionSerializer(serializers.ModelSerializer):
    turns = TurnSerializer(many=True, read_only=True)

    class Meta:
        model = Session
        fields = [
            "id",
            "project",
            "distribution",
            "origin",
            "keyword",
            "participant",
            "address",
            "sender",
            "status",
            "question",
            "position",
            "invalid_count",
            "response",
            "opened_at",
            "asked_at",
            "expires_at",
            "closed_at",
            "turns",
        ]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("distribution", int, description="The invite that opened them."),
            OpenApiParameter("project", int),
            OpenApiParameter("status", str, enum=Session.Status.values),
        ]
    )
)
class SmsSessionViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The brand's two-way conversations, newest first, each with every text sent and
    received (``?distribution=``, ``?project=``, ``?status=`` filter the list)."""

    queryset = Session.objects.order_by("-opened_at", "-pk")
    serializer_class = SmsSessionSerializer
    read_role = Role.VIEWER

    def get_queryset(self):
        queryset = (
            super()
            .get_queryset()
            .prefetch_related(Prefetch("turns", queryset=Turn.objects.order_by("created_at", "pk")))
        )
        if self.action != "list":
            return queryset
        params = self.request.query_params
        for name in ("distribution", "project", "status"):
            if params.get(name):
                queryset = queryset.filter(**{name: params[name]})
        return queryset
