"""REST API: opt-outs (list, retrieve, record, opt-in), their audit trail, inbound replies,
and consents to a project's SMS invites (list, retrieve, withdraw: docs/two-way.md)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.api.errors import state_conflict
from brands.models import ApiKey
from brands.roles import Role, role_allows
from optouts.models import Channel, Consent, InboundMessage, OptOut, OptOutEvent, Scope, Source
from optouts.selectors import consent_list, inbound_list, optout_events_for, optout_list
from optouts.services import consent_withdraw, optout_create_by_admin, optout_opt_in


class OptOutEventSerializer(serializers.ModelSerializer):
    who = serializers.CharField(source="actor_label", read_only=True)
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    api_key = serializers.SlugRelatedField(slug_field="prefix", read_only=True)

    class Meta:
        model = OptOutEvent
        fields = [
            "id",
            "created_at",
            "action",
            "channel",
            "address",
            "source",
            "scope",
            "who",
            "actor",
            "api_key",
            "reason",
            "message",
            "inbound",
            "inbound_text",
            "person",
            "optout",
            "consent",
        ]
        read_only_fields = fields


class OptOutSerializer(serializers.ModelSerializer):
    person_id = serializers.CharField(
        source="person.person_id", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = OptOut
        fields = [
            "id",
            "channel",
            "address",
            "person",
            "person_id",
            "source",
            "scope",
            "active",
            "created_at",
            "opted_in_at",
        ]
        read_only_fields = fields


class OptOutDetailSerializer(OptOutSerializer):
    events = serializers.SerializerMethodField()

    class Meta(OptOutSerializer.Meta):
        fields = [*OptOutSerializer.Meta.fields, "events"]
        read_only_fields = fields

    @extend_schema(responses=OptOutEventSerializer(many=True))
    def get_events(self, optout: OptOut) -> list[dict]:
        events = optout_events_for(
            brand=optout.brand, channel=optout.channel, address=optout.address
        )
        return OptOutEventSerializer(events[:500], many=True).data


class OptOutCreateSerializer(StrictSerializer):
    channel = serializers.ChoiceField(choices=Channel.choices, default=Channel.SMS)
    address = serializers.CharField(max_length=254)
    reason = serializers.CharField(max_length=500)


class OptInSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500, allow_blank=True)


def _state_change(change, *, state_field: str):
    """Run a service that moves an object to another state: its PermissionDenied answers 403,
    a ValidationError on ``state_field`` (the object is in that state already) 409 with the
    state, any other ValidationError 400."""
    try:
        return change()
    except DjangoPermissionDenied as exc:
        raise PermissionDenied(str(exc)) from exc
    except DjangoValidationError as exc:
        if state_field in getattr(exc, "error_dict", {}):
            raise state_conflict(exc) from exc
        raise


def _api_key(request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


STATE_PARAMETER = OpenApiParameter(
    "state", str, enum=["active", "opted_in", "all"], description="Default: active."
)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Address, name, PersonID or email contains."),
            OpenApiParameter("source", str, enum=Source.values),
            OpenApiParameter("scope", str, enum=Scope.values),
            OpenApiParameter("channel", str, enum=Channel.values),
            STATE_PARAMETER,
        ]
    )
)
class OptOutViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """The brand's opt-outs. An opt-out in one brand never silences another brand.

    ``POST`` records an opt-out the person asked for another way (project admins and up);
    ``POST /{id}/opt-in/`` opts the person back in (brand admins only, with a reason).
    """

    queryset = OptOut.objects.all()
    serializer_class = OptOutSerializer
    role_for_method = {"POST": Role.PROJECT_ADMIN}

    def get_queryset(self):
        params = self.request.query_params
        if self.action != "list":
            return super().get_queryset().select_related("person", "brand")

        def choice(name, allowed, default=""):
            value = params.get(name, "")
            return value if value in allowed else default

        return optout_list(
            brand=self.brand,
            q=params.get("q", ""),
            source=choice("source", Source.values),
            scope=choice("scope", Scope.values),
            channel=choice("channel", Channel.values),
            state=choice("state", ("active", "opted_in", "all"), "active"),
        )

    def get_serializer_class(self):
        if self.action == "retrieve":
            return OptOutDetailSerializer
        if self.action == "create":
            return OptOutCreateSerializer
        if self.action == "opt_in":
            return OptInSerializer
        return OptOutSerializer

    @extend_schema(request=OptOutCreateSerializer, responses={201: OptOutDetailSerializer})
    def create(self, request, *args, **kwargs):
        serializer = OptOutCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        optout = optout_create_by_admin(
            brand=self.brand,
            actor=self.actor(),
            api_key=_api_key(request),
            **serializer.validated_data,
        )
        return Response(OptOutDetailSerializer(optout).data, status=201)

    @extend_schema(request=OptInSerializer, responses={200: OptOutDetailSerializer})
    @action(detail=True, methods=["post"], url_path="opt-in")
    def opt_in(self, request, pk=None):
        """Opt the person back in (brand admins only); ``reason`` is required."""
        if not role_allows(self.role, Role.BRAND_ADMIN):
            raise PermissionDenied("Only a brand admin can opt a person back in.")
        optout = self.get_object()
        serializer = OptInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        optout = _state_change(
            lambda: optout_opt_in(
                optout=optout,
                reason=serializer.validated_data["reason"],
                role=self.role,
                actor=self.actor(),
                api_key=_api_key(request),
            ),
            state_field="optout",  # already opted back in
        )
        return Response(OptOutDetailSerializer(optout).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("address", str),
            OpenApiParameter("action", str, enum=OptOutEvent.Action.values),
            OpenApiParameter("source", str, enum=Source.values),
        ]
    )
)
class OptOutEventViewSet(BrandScopedAPIMixin, viewsets.ReadOnlyModelViewSet):
    """The audit trail: every opt-out, opt-in, provider re-subscribe, consent given and
    consent withdrawn, newest first."""

    queryset = OptOutEvent.objects.select_related("actor", "api_key")
    serializer_class = OptOutEventSerializer

    def get_queryset(self):
        queryset = super().get_queryset().order_by("-created_at", "-pk")
        params = self.request.query_params
        if params.get("address"):
            queryset = queryset.filter(address=params["address"].strip())
        if params.get("action") in OptOutEvent.Action.values:
            queryset = queryset.filter(action=params["action"])
        if params.get("source") in Source.values:
            queryset = queryset.filter(source=params["source"])
        return queryset


class InboundMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = InboundMessage
        fields = [
            "id",
            "received_at",
            "from_number",
            "to_number",
            "body",
            "kind",
            "keyword",
            "language",
            "approximate",
            "action",
            "message",
            "person",
            "optout",
            "reply",
            "provider_sid",
        ]
        read_only_fields = fields


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Number, text or name contains."),
            OpenApiParameter("kind", str, enum=["STOP", "START", "HELP", "OTHER"]),
            OpenApiParameter("action", str, enum=InboundMessage.Action.values),
        ]
    )
)
class InboundMessageViewSet(BrandScopedAPIMixin, viewsets.ReadOnlyModelViewSet):
    """Replies received from recipients, with what was done about each."""

    queryset = InboundMessage.objects.all()
    serializer_class = InboundMessageSerializer

    def get_queryset(self):
        if self.action != "list":
            return super().get_queryset()
        params = self.request.query_params
        kind = params.get("kind", "")
        action_ = params.get("action", "")
        return inbound_list(
            brand=self.brand,
            q=params.get("q", ""),
            kind=kind if kind in ("STOP", "START", "HELP", "OTHER") else "",
            action=action_ if action_ in InboundMessage.Action.values else "",
        )


class ConsentSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(
        choices=Consent.Status.choices,
        read_only=True,
        help_text="given (invites go to the number) or withdrawn.",
    )
    inbound_text = serializers.CharField(
        source="inbound.body",
        read_only=True,
        default=None,
        allow_null=True,
        help_text="The yes, as the number texted it.",
    )
    request = serializers.IntegerField(
        source="inbound.message_id",
        read_only=True,
        default=None,
        allow_null=True,
        help_text="The consent request (the recipient row of its distribution) it answered.",
    )
    events = OptOutEventSerializer(many=True, read_only=True)

    class Meta:
        model = Consent
        fields = [
            "id",
            "project",
            "address",
            "status",
            "granted_at",
            "withdrawn_at",
            "inbound",
            "inbound_text",
            "request",
            "events",
        ]
        read_only_fields = fields
        extra_kwargs = {"inbound": {"help_text": "The inbound message of the yes."}}


class ConsentWithdrawSerializer(StrictSerializer):
    reason = serializers.CharField(
        max_length=400, help_text="How the person withdrew their consent (in the audit trail)."
    )


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("project", int),
            OpenApiParameter("status", str, enum=Consent.Status.values),
            OpenApiParameter("address", str, description="The number, E.164 (+14155550101)."),
        ]
    )
)
class ConsentViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The numbers that replied yes to a project's consent request, newest first, given or
    withdrawn, each with its audit events. Everyone reads; ``POST /{id}/withdraw/`` (project
    and brand admins) withdraws one. A consent is only ever given by the number's own yes."""

    queryset = Consent.objects.all()
    serializer_class = ConsentSerializer
    read_role = Role.VIEWER
    role_for_method = {"POST": Role.PROJECT_ADMIN}

    def get_queryset(self):
        params = self.request.query_params
        if self.action == "list":
            queryset = consent_list(
                brand=self.brand,
                project_id=int(params["project"]) if params.get("project") else None,
                status=params.get("status", ""),
                address=params.get("address", ""),
            )
        else:
            queryset = super().get_queryset().select_related("inbound")
        events = OptOutEvent.objects.select_related("actor", "api_key").order_by("created_at", "pk")
        return queryset.prefetch_related(Prefetch("events", queryset=events))

    def get_serializer_class(self):
        return ConsentWithdrawSerializer if self.action == "withdraw" else ConsentSerializer

    @extend_schema(request=ConsentWithdrawSerializer, responses={200: ConsentSerializer})
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        """Withdraw the consent (the person asked another way than STOP): the project's SMS
        invites no longer go to the number until it says yes to a new consent request.
        ``reason`` is required; 409 when it is already withdrawn."""
        consent = self.get_object()
        payload = ConsentWithdrawSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        consent = _state_change(
            lambda: consent_withdraw(
                consent=consent,
                reason=payload.validated_data["reason"],
                role=self.role,
                actor=self.actor(),
                api_key=_api_key(request),
            ),
            state_field="consent",  # already withdrawn
        )
        return Response(ConsentSerializer(self.get_queryset().get(pk=consent.pk)).data)
