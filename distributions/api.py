"""REST API for distributions: create (send now or schedule), list, retrieve with metrics,
edit while scheduled, cancel, bulk edit, preview, history as JSON and CSV."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from brands.api.base import BrandScopedAPIMixin, LocalTimeField, StrictSerializer
from brands.api.errors import Conflict, state_conflict
from brands.roles import Role, role_allows
from core.csvio import DELIMITERS, ENCLOSURES, csv_rows
from distributions.charging import credits_estimate
from distributions.conditions import CRITERIA, OPERATORS
from distributions.email_services import email_estimate, email_preview
from distributions.models import Distribution, Message
from distributions.selectors import (
    distribution_metrics,
    history_header,
    history_queryset,
    history_rows,
    related_distributions,
)
from distributions.services import (
    InsufficientCredits,
    distribution_cancel,
    distribution_create,
    distribution_policy_preview,
    distribution_preview_count,
    distribution_update,
    distributions_bulk_update,
)
from projects.models import Project

ACCEPT_PARTIAL_HELP = (
    "SMS: schedule it even when its estimated cost exceeds the available credits (what the "
    "balance cannot cover is not sent, and it ends Interrupted). Without it, such a send "
    "answers 409 insufficient_credits; see POST /distributions/estimate/."
)


class ConditionSerializer(StrictSerializer):
    criterion = serializers.ChoiceField(choices=CRITERIA)
    operator = serializers.ChoiceField(choices=OPERATORS, default="is")
    value = serializers.CharField(required=False, allow_blank=True, default="")
    field = serializers.CharField(required=False, allow_blank=True, default="")


class DistributionSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    project = serializers.IntegerField()
    channel = serializers.ChoiceField(choices=Distribution.Channel.choices, default="sms")
    kind = serializers.ChoiceField(choices=Distribution.Kind.choices, default="invite")
    parent = serializers.IntegerField(required=False, allow_null=True)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    message = serializers.CharField(
        max_length=200_000,
        help_text="SMS: the text (at most 1,600 characters). Email: the HTML body (scripts are "
        "stripped); must contain ${opt_out_link}, and ${link} for invites and reminders.",
    )
    sender = serializers.CharField(required=False, allow_blank=True, max_length=32)
    subject = serializers.CharField(
        required=False, allow_blank=True, max_length=300, help_text="Email: the subject."
    )
    text_body = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200_000,
        help_text="Email: the plain-text part; generated from the HTML body when empty.",
    )
    from_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    from_address = serializers.EmailField(
        required=False,
        allow_blank=True,
        help_text="Email: on a verified domain of the brand or the platform's; default: the "
        "brand's email settings, else the platform's address.",
    )
    reply_to = serializers.EmailField(required=False, allow_blank=True)
    trigger = serializers.ChoiceField(
        choices=[("", "scheduled"), ("completion", "on survey completion")],
        required=False,
        allow_blank=True,
        help_text="Email thank-you only: 'completion' sends to each recipient as they complete "
        "the survey, until cancelled.",
    )
    conditions = ConditionSerializer(many=True, required=False)
    window_start = LocalTimeField(
        required=False,
        allow_null=True,
        help_text="Send window: recipients receive it only from this local time (their zone).",
    )
    window_end = LocalTimeField(
        required=False,
        allow_null=True,
        help_text="Send window end, recipient local time; before the start: crosses midnight.",
    )
    window_days = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6),
        required=False,
        max_length=7,
        help_text="Send window days, 0 = Monday … 6 = Sunday; empty: every day.",
    )
    send_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Omit or null to send now."
    )
    accept_partial = serializers.BooleanField(
        default=False, write_only=True, help_text=ACCEPT_PARTIAL_HELP
    )
    link_expiry_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=3650,
        help_text="Days its personal links stay valid after the send; null: the project's "
        "setting. Reminders share their invite's links.",
    )
    ignore_frequency_rules = serializers.BooleanField(
        default=False,
        help_text="Brand admins only: send to every recipient whatever the contact frequency "
        "rules say (recorded: who and when).",
    )
    frequency_rules_ignored_at = serializers.DateTimeField(read_only=True, allow_null=True)
    status = serializers.CharField(read_only=True)
    status_reason = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def to_representation(self, instance: Distribution):
        data = {
            "id": instance.pk,
            "project": instance.project_id,
            "channel": instance.channel,
            "kind": instance.kind,
            "parent": instance.parent_id,
            "name": instance.name,
            "message": instance.message,
            "sender": instance.sender,
            "subject": instance.subject,
            "text_body": instance.text_body,
            "from_name": instance.from_name,
            "from_address": instance.from_address,
            "reply_to": instance.reply_to,
            "trigger": instance.trigger,
            "conditions": instance.conditions,
            "ignore_frequency_rules": instance.ignore_frequency_rules,
            "link_expiry_days": instance.link_expiry_days,
            "frequency_rules_ignored_at": serializers.DateTimeField().to_representation(
                instance.frequency_rules_ignored_at
            )
            if instance.frequency_rules_ignored_at
            else None,
            "window_start": _time(instance.window_start),
            "window_end": _time(instance.window_end),
            "window_days": instance.window_days,
            "send_at": serializers.DateTimeField().to_representation(instance.send_at),
            "status": instance.status,
            "status_reason": instance.status_reason,
            "created_at": serializers.DateTimeField().to_representation(instance.created_at),
            "started_at": serializers.DateTimeField().to_representation(instance.started_at)
            if instance.started_at
            else None,
            "finished_at": serializers.DateTimeField().to_representation(instance.finished_at)
            if instance.finished_at
            else None,
        }
        if self.context.get("with_metrics"):
            data["metrics"] = distribution_metrics(distribution=instance)
            data["related"] = [
                {
                    "id": d.pk,
                    "kind": d.kind,
                    "status": d.status,
                    "send_at": serializers.DateTimeField().to_representation(d.send_at),
                }
                for d in related_distributions(distribution=instance)
            ]
        return data


class DistributionUpdateSerializer(StrictSerializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    message = serializers.CharField(required=False, max_length=200_000)
    sender = serializers.CharField(required=False, allow_blank=True, max_length=32)
    subject = serializers.CharField(required=False, allow_blank=True, max_length=300)
    text_body = serializers.CharField(required=False, allow_blank=True, max_length=200_000)
    from_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    from_address = serializers.EmailField(required=False, allow_blank=True)
    reply_to = serializers.EmailField(required=False, allow_blank=True)
    conditions = ConditionSerializer(many=True, required=False)
    window_start = LocalTimeField(required=False, allow_null=True)
    window_end = LocalTimeField(required=False, allow_null=True)
    link_expiry_days = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=3650
    )
    window_days = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6), required=False, max_length=7
    )
    send_at = serializers.DateTimeField(required=False)


class BulkUpdateSerializer(DistributionUpdateSerializer):
    ids = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=500)


class PreviewSerializer(StrictSerializer):
    project = serializers.IntegerField()
    conditions = ConditionSerializer(many=True, required=False)
    channel = serializers.ChoiceField(choices=Distribution.Channel.choices, default="sms")
    subject = serializers.CharField(required=False, allow_blank=True, max_length=300)
    message = serializers.CharField(required=False, allow_blank=True, max_length=200_000)
    text_body = serializers.CharField(required=False, allow_blank=True, max_length=200_000)


def _time(value):
    return serializers.TimeField().to_representation(value) if value is not None else None


class HeldUntilSerializer(serializers.Serializer):
    due = serializers.DateTimeField(help_text="When these recipients would receive it.")
    label = serializers.CharField(help_text="Why, and the planned time in their zone.")
    recipients = serializers.IntegerField()


class CountryEstimateSerializer(serializers.Serializer):
    country = serializers.CharField()
    recipients = serializers.IntegerField()
    segments = serializers.IntegerField()
    credits = serializers.DecimalField(max_digits=14, decimal_places=4)
    rate = serializers.DecimalField(max_digits=14, decimal_places=4)
    enabled = serializers.BooleanField()


class EstimateSerializer(serializers.Serializer):
    recipients = serializers.IntegerField(help_text="Recipients it would be sent to now.")
    segments = serializers.IntegerField(help_text="SMS segments in all.")
    segments_per_message = serializers.IntegerField(help_text="The longest message's segments.")
    credits_needed = serializers.DecimalField(max_digits=14, decimal_places=4)
    credits_available = serializers.DecimalField(
        max_digits=14,
        decimal_places=4,
        allow_null=True,
        help_text="Null for a self-service brand (its provider bills it).",
    )
    affordable = serializers.BooleanField(help_text="The available credits cover it.")
    shortfall = serializers.DecimalField(max_digits=14, decimal_places=4)
    skipped = serializers.IntegerField(help_text="Recipients in countries not enabled.")
    by_country = CountryEstimateSerializer(many=True)
    self_service = serializers.BooleanField()
    held = serializers.IntegerField(
        help_text="Recipients that quiet hours or the send window hold back if it went now."
    )
    held_until = HeldUntilSerializer(many=True, help_text="When the held recipients receive it.")
    frequency_skipped = serializers.IntegerField(
        help_text="Recipients a contact frequency rule would skip if it went now."
    )


def estimate_answer(estimate: dict) -> dict:
    """``credits.estimate.schedule_estimate``'s answer in the API's words."""
    return {
        "recipients": estimate["recipients"],
        "segments": estimate["segments"],
        "segments_per_message": estimate["segments_per_message"],
        "credits_needed": estimate["credits"],
        "credits_available": estimate["available"],
        "affordable": estimate["covered"],
        "shortfall": estimate["shortfall"],
        "skipped": estimate["skipped"],
        "by_country": estimate["by_country"],
        "self_service": estimate["self_service"],
        "held": estimate.get("held", 0),
        "held_until": estimate.get("held_until", []),
        "frequency_skipped": estimate.get("frequency_skipped", 0),
    }


def insufficient_credits_error(exc: InsufficientCredits) -> Conflict:
    """The API's 409 for a send the balance does not cover, with the estimate."""
    return Conflict(
        {
            "detail": str(exc),
            "accept_partial": "Send true to schedule it anyway: what the balance cannot cover "
            "is not sent.",
            "estimate": estimate_answer(exc.estimate),
        },
        code="insufficient_credits",
    )


class HistoryRowSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    person_id = serializers.CharField(source="person.person_id", default="")
    first_name = serializers.CharField(source="person.first_name", default="")
    last_name = serializers.CharField(source="person.last_name", default="")
    address = serializers.CharField(help_text="The phone number (SMS) or email address (email).")
    email = serializers.CharField(source="person.email", default="")
    username = serializers.CharField(source="person.username", default="")
    respondent = serializers.BooleanField()
    status = serializers.CharField()
    status_label = serializers.CharField(source="get_status_display")
    status_reason = serializers.CharField()
    timestamp = serializers.DateTimeField(source="status_changed_at")
    segments = serializers.IntegerField()
    error_code = serializers.CharField()


def _conditions(data):
    return [dict(c) for c in data] if data is not None else None


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("project", int),
            OpenApiParameter("channel", str, enum=Distribution.Channel.values),
            OpenApiParameter("status", str, enum=Distribution.Status.values),
        ]
    )
)
class DistributionViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Distributions of the caller's brand. ``?project=``, ``?channel=``, ``?status=`` filter."""

    queryset = Distribution.objects.select_related("project", "parent")
    serializer_class = DistributionSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        params = self.request.query_params
        if params.get("project"):
            queryset = (
                queryset.filter(project_id=params["project"])
                if params["project"].isdigit()
                else queryset.none()
            )
        if params.get("channel"):
            queryset = queryset.filter(channel=params["channel"])
        if params.get("status"):
            queryset = queryset.filter(status=params["status"])
        return queryset

    def get_serializer_context(self):
        return super().get_serializer_context() | {"with_metrics": self.action == "retrieve"}

    def _project(self, project_id) -> Project:
        return self.get_scoped(Project, pk=project_id)

    def _create_payload(self, request) -> tuple[dict, Project, Distribution | None]:
        payload = DistributionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        project = self._project(data.pop("project"))
        parent_id = data.pop("parent", None)
        parent = self.get_scoped(Distribution, pk=parent_id) if parent_id else None
        data["conditions"] = _conditions(data.pop("conditions", None))
        if data.get("ignore_frequency_rules") and not role_allows(self.role, Role.BRAND_ADMIN):
            raise PermissionDenied("Only brand admins may ignore the contact frequency rules.")
        return data, project, parent

    def create(self, request):
        data, project, parent = self._create_payload(request)
        try:
            distribution = distribution_create(
                project=project, parent=parent, actor=self.actor(), **data
            )
        except InsufficientCredits as exc:
            raise insufficient_credits_error(exc) from exc
        return Response(DistributionSerializer(distribution).data, status=201)

    @extend_schema(request=DistributionSerializer, responses=EstimateSerializer)
    @action(detail=False, methods=["post"])
    def estimate(self, request):
        """What creating this distribution would cost now (the body is the create call's):
        recipients, segments, credits needed and available, and whether they cover it, as the
        schedule page shows them. Nothing is written. Email costs no credits."""
        data, project, parent = self._create_payload(request)
        if data["channel"] == Distribution.Channel.SMS:
            estimate = credits_estimate(
                project=project,
                message=data["message"],
                conditions=data["conditions"],
                kind=data["kind"],
                parent=parent,
            )
        else:
            estimate = email_estimate(
                project=project, conditions=data["conditions"], kind=data["kind"], parent=parent
            )
        estimate = {
            **estimate,
            **distribution_policy_preview(project=project, parent=parent, **data),
        }
        return Response(EstimateSerializer(estimate_answer(estimate)).data)

    @extend_schema(request=DistributionUpdateSerializer, responses=DistributionSerializer)
    def partial_update(self, request, pk=None):
        distribution = self.get_object()
        payload = DistributionUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        if "conditions" in data:
            data["conditions"] = _conditions(data["conditions"])
        distribution = distribution_update(distribution=distribution, actor=self.actor(), **data)
        return Response(DistributionSerializer(distribution).data)

    @extend_schema(request=None, responses=DistributionSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a scheduled distribution, or stop one in progress."""
        distribution = self.get_object()
        try:
            distribution = distribution_cancel(distribution=distribution, actor=self.actor())
        except DjangoValidationError as exc:
            if "status" in getattr(exc, "error_dict", {}):  # already sent, cancelled: its state
                raise state_conflict(exc) from exc
            raise
        return Response(DistributionSerializer(distribution).data)

    @extend_schema(request=BulkUpdateSerializer, responses=DistributionSerializer(many=True))
    @action(detail=False, methods=["post"], url_path="bulk-edit")
    def bulk_edit(self, request):
        """Edit several scheduled distributions at once: all of them or none."""
        payload = BulkUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        ids = data.pop("ids")
        found = list(self.get_queryset().filter(pk__in=ids))
        missing = sorted(set(ids) - {d.pk for d in found})
        if missing:
            from rest_framework.exceptions import NotFound

            raise NotFound(f"No distribution {', '.join(map(str, missing))}.")
        if "conditions" in data:
            data["conditions"] = _conditions(data["conditions"])
        updated = distributions_bulk_update(distributions=found, actor=self.actor(), **data)
        return Response(DistributionSerializer(updated, many=True).data)

    @extend_schema(request=PreviewSerializer, responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["post"])
    def preview(self, request):
        """How many participants the conditions select, before scheduling; for an email with a
        ``message``, also the first recipient's rendered email (``email``: subject, html, text;
        scripts stripped, sample links)."""
        payload = PreviewSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        project = self._project(data["project"])
        count = distribution_preview_count(
            project=project, conditions=_conditions(data.get("conditions", []))
        )
        answer = {"participants": count}
        if data["channel"] == Distribution.Channel.EMAIL and data.get("message"):
            rendered = email_preview(
                project=project,
                message=data["message"],
                subject=data.get("subject", ""),
                text_body=data.get("text_body", ""),
            )
            answer["email"] = {
                "subject": rendered.subject,
                "html": rendered.html,
                "text": rendered.text,
            }
        return Response(answer)

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=Message.Status.values)],
        responses=HistoryRowSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        """Per-recipient history, paginated (``?status=`` filters)."""
        distribution = self.get_object()
        queryset = history_queryset(distribution=distribution).select_related("person")
        if request.query_params.get("status"):
            queryset = queryset.filter(status=request.query_params["status"])
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(HistoryRowSerializer(page, many=True).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("delimiter", enum=list(DELIMITERS), default="comma"),
            OpenApiParameter("enclosure", enum=list(ENCLOSURES), default="double"),
        ],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"], url_path="history.csv")
    def history_csv(self, request, pk=None):
        """The history CSV (streamed; formula-looking cells neutralised)."""
        return history_csv_response(
            distribution=self.get_object(),
            zone=self.brand.zone,
            delimiter=request.query_params.get("delimiter", "comma"),
            enclosure=request.query_params.get("enclosure", "double"),
        )


def history_csv_response(*, distribution, zone, delimiter: str, enclosure: str):
    """The streamed history CSV; unknown options raise ValidationError before it starts."""
    lines = csv_rows(
        history_header(distribution),
        history_rows(distribution=distribution, zone=zone),
        delimiter=delimiter,
        enclosure=enclosure,
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    filename = f"distribution-{distribution.pk}-history.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


__all__ = ["DistributionViewSet", "Message", "history_csv_response"]
