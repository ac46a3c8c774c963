"""REST API of outbound webhooks: ``/api/v1/webhooks/`` (endpoints), their deliveries and the
redeliver action. Brand admins write; every member may read (the secret is never read back:
it is in the create and rotate answers only)."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from brands.rotation import MAX_GRACE_HOURS
from webhooks.models import EventType, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from webhooks.services import (
    delivery_redeliver,
    endpoint_create,
    endpoint_delete,
    endpoint_disable,
    endpoint_enable,
    endpoint_rotate_secret,
    endpoint_update,
)


class EndpointSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    url = serializers.CharField(max_length=500, help_text="http(s) URL; no private addresses.")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), allow_empty=False
    )
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    enabled = serializers.BooleanField(
        required=False, help_text="false disables the endpoint; true enables it again."
    )
    secret_hint = serializers.CharField(read_only=True)
    disabled_reason = serializers.CharField(read_only=True)
    disabled_at = serializers.DateTimeField(read_only=True, allow_null=True)
    failing_since = serializers.DateTimeField(read_only=True, allow_null=True)
    previous_secret_until = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="Deliveries are also signed with the previous secret until then (rotation).",
    )
    created_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: WebhookEndpoint):
        dt = serializers.DateTimeField()
        in_grace = len(instance.signing_secrets()) > 1
        return {
            "id": instance.pk,
            "url": instance.url,
            "events": instance.events,
            "description": instance.description,
            "enabled": instance.is_enabled,
            "secret_hint": instance.secret_hint,
            "disabled_reason": instance.disabled_reason,
            "disabled_at": dt.to_representation(instance.disabled_at)
            if instance.disabled_at
            else None,
            "failing_since": dt.to_representation(instance.failing_since)
            if instance.failing_since
            else None,
            "previous_secret_until": dt.to_representation(instance.previous_secret_until)
            if in_grace
            else None,
            "created_at": dt.to_representation(instance.created_at),
        }


class RotateSecretSerializer(StrictSerializer):
    grace_hours = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_GRACE_HOURS,
        help_text="Also sign with the previous secret this many hours (default 0).",
    )


class EndpointCreatedSerializer(EndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret: shown in this answer only."
    )


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "at", "status_code", "latency_ms", "response_excerpt", "error"]


class DeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.UUIDField(source="event.event_id", read_only=True)
    event_type = serializers.CharField(source="event.type", read_only=True)
    payload = serializers.JSONField(source="event.payload", read_only=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "object_key",
            "state",
            "attempts",
            "status_code",
            "latency_ms",
            "response_excerpt",
            "error",
            "next_attempt_at",
            "last_attempt_at",
            "delivered_at",
            "created_at",
            "payload",
            "attempt_log",
        ]


def _validation(exc: ValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(
        exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    )


class WebhookEndpointViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Webhook endpoints of the brand. Each receives the chosen events, signed with its
    secret (``Relay-Signature``); see docs/webhooks.md."""

    queryset = WebhookEndpoint.objects.all()
    serializer_class = EndpointSerializer
    read_role = Role.VIEWER
    write_role = Role.BRAND_ADMIN

    @extend_schema(request=EndpointSerializer, responses={201: EndpointCreatedSerializer})
    def create(self, request):
        serializer = EndpointSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            issued = endpoint_create(
                brand=self.brand,
                url=data["url"],
                events=data["events"],
                description=data.get("description", ""),
                actor=self.actor(),
            )
        except ValidationError as exc:
            raise _validation(exc) from exc
        if data.get("enabled") is False:
            endpoint_disable(endpoint=issued.endpoint, reason="Disabled when created.")
        body = EndpointSerializer(issued.endpoint).data | {"secret": issued.secret}
        return Response(body, status=201)

    @extend_schema(request=EndpointSerializer, responses={200: EndpointSerializer})
    def partial_update(self, request, pk=None):
        endpoint = self.get_object()
        serializer = EndpointSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        enabled = data.pop("enabled", None)
        try:
            if data:
                endpoint_update(endpoint=endpoint, actor=self.actor(), **data)
        except ValidationError as exc:
            raise _validation(exc) from exc
        if enabled is True:
            endpoint_enable(endpoint=endpoint, actor=self.actor())
        elif enabled is False:
            endpoint_disable(
                endpoint=endpoint, reason="Disabled through the API.", actor=self.actor()
            )
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(request=EndpointSerializer, responses={200: EndpointSerializer})
    def update(self, request, pk=None):
        return self.partial_update(request, pk)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        endpoint_delete(endpoint=self.get_object(), actor=self.actor())
        return Response(status=204)

    @extend_schema(
        request=RotateSecretSerializer,
        responses={
            200: inline_serializer(
                "RotatedSecret",
                fields={
                    "secret": serializers.CharField(),
                    "previous_secret_until": serializers.DateTimeField(allow_null=True),
                },
            )
        },
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """A new signing secret, effective at once; in this answer only. With
        ``grace_hours`` (at most 168) deliveries also carry a signature made with the previous
        secret until then, so your receiver can switch without refusing any."""
        body = RotateSecretSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        endpoint = self.get_object()
        secret = endpoint_rotate_secret(
            endpoint=endpoint,
            actor=self.actor(),
            grace=timedelta(hours=body.validated_data.get("grace_hours", 0)),
        )
        return Response({"secret": secret, "previous_secret_until": endpoint.previous_secret_until})

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "state", str, enum=WebhookDelivery.State.values, description="Only this state."
            ),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={
            200: inline_serializer(
                "PaginatedWebhookDeliveries",
                fields={
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": DeliverySerializer(many=True),
                },
            )
        },
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        """The endpoint's delivery log, newest first, each with its attempts."""
        endpoint = self.get_object()
        queryset = (
            WebhookDelivery.objects.filter(endpoint=endpoint)
            .select_related("event")
            .prefetch_related("attempt_log")
            .order_by("-pk")
        )
        state = request.query_params.get("state")
        if state:
            queryset = queryset.filter(state=state)
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(request=None, responses={202: DeliverySerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"deliveries/(?P<delivery_pk>\d+)/redeliver",
    )
    def redeliver(self, request, pk=None, delivery_pk=None):
        """Send the delivery's event again (same event id and body), as a new delivery."""
        endpoint = self.get_object()
        delivery = self.get_scoped(
            WebhookDelivery.objects.filter(endpoint=endpoint), pk=delivery_pk
        )
        again = delivery_redeliver(delivery=delivery, actor=self.actor())
        again = WebhookDelivery.objects.select_related("event").get(pk=again.pk)
        return Response(DeliverySerializer(again).data, status=202)
