"""REST API of the message library: a brand's saved SMS and email messages, each with its
segment counter (SMS). Creating a distribution with ``library_message`` copies the text."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from distributions.library import (
    library_list,
    library_message_create,
    library_message_delete,
    library_message_update,
    library_segments,
)
from distributions.models import Distribution, LibraryMessage


class SegmentsSerializer(serializers.Serializer):
    segments = serializers.IntegerField(help_text="SMS segments the text is billed as.")
    encoding = serializers.CharField(help_text="GSM-7 or UCS-2.")
    units = serializers.IntegerField(help_text="Characters as the encoding counts them.")


class LibraryMessageSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(max_length=200)
    channel = serializers.ChoiceField(choices=Distribution.Channel.choices, default="sms")
    type = serializers.ChoiceField(choices=LibraryMessage.Type.choices, default="invite")
    message = serializers.CharField(
        max_length=200_000, help_text="SMS: the text (at most 1,600 characters). Email: HTML."
    )
    subject = serializers.CharField(
        required=False, allow_blank=True, max_length=300, help_text="Email only."
    )
    segments = SegmentsSerializer(
        read_only=True, allow_null=True, help_text="The segment counter (null for email)."
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: LibraryMessage):
        data = super().to_representation(instance)
        data["segments"] = library_segments(instance)
        return data


class LibraryMessageUpdateSerializer(StrictSerializer):
    name = serializers.CharField(required=False, max_length=200)
    type = serializers.ChoiceField(choices=LibraryMessage.Type.choices, required=False)
    message = serializers.CharField(required=False, max_length=200_000)
    subject = serializers.CharField(required=False, allow_blank=True, max_length=300)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("channel", str, enum=Distribution.Channel.values),
            OpenApiParameter("type", str, enum=LibraryMessage.Type.values),
        ]
    )
)
class LibraryMessageViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The brand's message library (``?channel=``, ``?type=`` filter the list)."""

    queryset = LibraryMessage.objects.all()
    serializer_class = LibraryMessageSerializer
    read_role = Role.VIEWER
    write_role = Role.PROJECT_ADMIN

    def get_queryset(self):
        if self.action != "list":
            return super().get_queryset()
        params = self.request.query_params
        return library_list(
            brand=self.brand, channel=params.get("channel"), type=params.get("type")
        )

    @extend_schema(request=LibraryMessageSerializer, responses={201: LibraryMessageSerializer})
    def create(self, request):
        payload = LibraryMessageSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        saved = library_message_create(
            brand=self.brand, actor=self.actor(), **payload.validated_data
        )
        return Response(LibraryMessageSerializer(saved).data, status=201)

    @extend_schema(request=LibraryMessageUpdateSerializer, responses=LibraryMessageSerializer)
    def partial_update(self, request, pk=None):
        """Edit a library message: distributions made from it keep the text they copied."""
        library_message = self.get_object()
        payload = LibraryMessageUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        saved = library_message_update(
            library_message=library_message, actor=self.actor(), **payload.validated_data
        )
        return Response(LibraryMessageSerializer(saved).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        """Delete a library message: distributions made from it keep their text."""
        library_message_delete(library_message=self.get_object(), actor=self.actor())
        return Response(status=204)
