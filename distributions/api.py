"""REST API for distributions: create (send now or schedule), list, retrieve with metrics,
edit while scheduled, cancel, bulk edit, preview, history as JSON and CSV."""

from __future__ import annotations

from datetime import date

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
from distributions.archive import (
    distribution_archive,
    distribution_delete,
    distribution_unarchive,
)
from distributions.audit import distribution_audit_list
from distributions.charging import credits_estimate
from distributions.conditions import CRITERIA, OPERATORS
from distributions.copies import (
    distribution_copy,
    distribution_resend,
    distribution_retry,
    distribution_test_send,
)
from distributions.email_services import email_estimate, email_preview
from distributions.library import library_message_fill
from distributions.models import Distribution, DistributionAudit, LibraryMessage, Message
from distributions.selectors import (
    DEFAULT_ORDERING,
    LIST_ORDERINGS,
    DistributionFilters,
    distribution_list,
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
from distributions.stalls import distribution_stalls
from participants.models import Participant
from projects.models import Project

ACCEPT_PARTIAL_HELP = (
    "SMS: schedule it even when its estimated cost exceeds the available credits (what the "
    "balance cannot cover is not sent, and it ends Interrupted). Without it, such a send "
    "answers 409 insufficient_credits; see POST /distributions/estimate/."
)


REMINDER_AUDIENCE_HELP = (
    "Reminders only: empty (the default) reminds everyone who has not responded; 'started' "
    "only those who started the survey (answers saved to finish later, or kept partial) and "
    "did not finish it."
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
        required=False,
        help_text="SMS: the text (at most 1,600 characters). Email: the HTML body (scripts are "
        "stripped); must contain ${opt_out_link}, and ${link} for invites and reminders. "
        "Required unless library_message is given.",
    )
    library_message = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The id of a message of the brand's library (GET /library-messages/) of "
        "this channel: its text (and an email's subject) is copied where message (subject) is "
        "omitted. Editing the library message later never changes this distribution.",
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
    mode = serializers.ChoiceField(
        choices=Distribution.Mode.choices,
        default=Distribution.Mode.LINK,
        help_text="SMS invites and reminders: 'two_way' asks the survey question by question "
        "by text (docs/two-way.md); refused for a survey with questions that cannot be "
        "asked by text, naming them.",
    )
    audience = serializers.ChoiceField(
        choices=[("", "not responded"), ("started", "started but not finished")],
        required=False,
        allow_blank=True,
        help_text=REMINDER_AUDIENCE_HELP,
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
    created_by = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The user who created it (null: an API key)."
    )
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)
    origin = serializers.IntegerField(
        read_only=True,
        allow_null=True,
        help_text="The distribution it was copied, tried again, resent or tested from.",
    )
    origin_kind = serializers.ChoiceField(
        choices=[("", "none"), *Distribution.Origin.choices],
        read_only=True,
        help_text="How it was made from origin: copy, retry, resend or test.",
    )
    archived_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When it was archived (null: not archived)."
    )

    def validate(self, attrs):
        if not attrs.get("message") and not attrs.get("library_message"):
            raise serializers.ValidationError(
                {"message": "Give the message, or a library_message to copy it from."}
            )
        return attrs

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
            "mode": instance.mode,
            "audience": instance.audience,
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
            "created_by": instance.created_by_id,
            "library_message": instance.library_message_id,
            "origin": instance.origin_id,
            "origin_kind": instance.origin_kind,
            "archived_at": _datetime(instance.archived_at),
            "started_at": serializers.DateTimeField().to_representation(instance.started_at)
            if instance.started_at
            else None,
            "finished_at": serializers.DateTimeField().to_representation(instance.finished_at)
            if instance.finished_at
            else None,
        }
        if self.context.get("with_metrics"):
            data["metrics"] = distribution_metrics(distribution=instance)
            stall = distribution_stalls(distributions=[instance]).get(instance.pk)
            data["stalled"] = (
                {
                    "why": str(stall.why),
                    "since": serializers.DateTimeField().to_representation(stall.since),
                    "holding": [str(h) for h in stall.holding],
                    "details": list(stall.details),
                }
                if stall
                else None
            )
            data["related"] = [
                {
                    "id": d.pk,
                    "kind": d.kind,
                    "status": d.status,
                    "send_at": serializers.DateTimeField().to_representation(d.send_at),
                    "origin": d.origin_id,
                    "origin_kind": d.origin_kind,
                }
                for d in related_distributions(distribution=instance)
            ]
        return data


def _datetime(value):
    return serializers.DateTimeField().to_representation(value) if value else None


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


class TwoWayEstimateSerializer(serializers.Serializer):
    questions = serializers.IntegerField()
    outbound_texts = serializers.IntegerField(help_text="Later questions and the thank-you.")
    outbound_segments = serializers.IntegerField()
    inbound_replies = serializers.IntegerField()


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
    two_way = TwoWayEstimateSerializer(
        allow_null=True,
        help_text="A two-way distribution: what each respondent who answers every question "
        "adds (follow-up texts and their segments, inbound replies); null otherwise.",
    )


def estimate_answer(estimate: dict) -> dict:
    """``distributions.charging.credits_estimate``'s answer in the API's words."""
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
        "two_way": estimate.get("two_way"),
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


LIST_PARAMETERS = [
    OpenApiParameter(
        "search", str, description="Words in the name, message text or email subject (any case)."
    ),
    OpenApiParameter("project", int, description="A project id."),
    OpenApiParameter("channel", str, enum=Distribution.Channel.values),
    OpenApiParameter("kind", str, enum=Distribution.Kind.values, description="The type."),
    OpenApiParameter("status", str, enum=Distribution.Status.values),
    OpenApiParameter("created_by", int, description="The id of the user who created it."),
    OpenApiParameter(
        "date_from",
        OpenApiTypes.DATE,
        description="Send date on or after (YYYY-MM-DD, the brand's time zone).",
    ),
    OpenApiParameter(
        "date_to",
        OpenApiTypes.DATE,
        description="Send date on or before (YYYY-MM-DD, the brand's time zone).",
    ),
    OpenApiParameter(
        "archived",
        bool,
        description="true: only archived distributions; false or omitted: only the others.",
    ),
    OpenApiParameter(
        "ordering",
        str,
        enum=list(LIST_ORDERINGS),
        description="Sort order (a leading - is descending); default -send_at.",
    ),
]


def filters_from_query(params) -> DistributionFilters:
    """The list filters of a query string the schema already checked (``query_check``)."""
    archived = params.get("archived")
    return DistributionFilters(
        search=(params.get("search") or "").strip(),
        project=int(params["project"]) if params.get("project") else None,
        channel=params.get("channel") or "",
        kind=params.get("kind") or "",
        status=params.get("status") or "",
        created_by=int(params["created_by"]) if params.get("created_by") else None,
        date_from=date.fromisoformat(params["date_from"]) if params.get("date_from") else None,
        date_to=date.fromisoformat(params["date_to"]) if params.get("date_to") else None,
        archived=archived == "true",
        ordering=params.get("ordering") or DEFAULT_ORDERING,
    )


class CopySerializer(StrictSerializer):
    project = serializers.IntegerField(
        required=False, help_text="A project of the brand; default: the original's."
    )
    send_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="In the future; default: the original's send time while it is ahead.",
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)


class ResendSerializer(StrictSerializer):
    send_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Omit or null to send now."
    )


class TestMessageSerializer(StrictSerializer):
    address = serializers.CharField(
        max_length=254,
        help_text="SMS: the phone number to text (read in the brand's country without a "
        "+country code). Email: the email address.",
    )
    participant = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The participant whose fields the message is rendered with; default: the "
        "project's first.",
    )


class TestMessageAnswerSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The test's own distribution (origin_kind test).")
    origin = serializers.IntegerField(help_text="The distribution tested.")
    test = serializers.BooleanField(help_text="Always true.")
    address = serializers.CharField()
    participant = serializers.IntegerField()
    status = serializers.CharField(help_text="The test message's recipient status.")
    status_reason = serializers.CharField()
    body = serializers.CharField(help_text="The text sent (empty until sent).")
    segments = serializers.IntegerField()


class AuditSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    distribution = serializers.IntegerField(source="distribution_ref")
    distribution_name = serializers.CharField()
    action = serializers.ChoiceField(choices=DistributionAudit.Action.choices)
    actor = serializers.IntegerField(source="actor_id", allow_null=True)
    detail = serializers.CharField()
    at = serializers.DateTimeField()


def _state_or_invalid(exc: DjangoValidationError):
    """A service refusal because of the distribution's state answers 409, others 400."""
    if "status" in getattr(exc, "error_dict", {}):
        return state_conflict(exc)
    return exc


@extend_schema_view(list=extend_schema(parameters=LIST_PARAMETERS))
class DistributionViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Distributions of the caller's brand (never test messages). The list filters by
    ``search``, ``project``, ``channel``, ``kind``, ``status``, ``created_by``, ``date_from``,
    ``date_to`` and ``archived``, sorted by ``ordering``; an unknown parameter answers 400."""

    queryset = Distribution.objects.select_related("project", "parent")
    serializer_class = DistributionSerializer

    def get_queryset(self):
        if self.action == "list":
            return distribution_list(
                brand=self.brand, filters=filters_from_query(self.request.query_params)
            )
        return super().get_queryset()

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
        library_id = data.pop("library_message", None)
        library_message = self.get_scoped(LibraryMessage, pk=library_id) if library_id else None
        data["message"], data["subject"] = library_message_fill(
            library_message=library_message,
            channel=data["channel"],
            message=data.get("message", ""),
            subject=data.get("subject", ""),
        )
        data["library_message"] = library_message
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
        data.pop("library_message")
        if data["channel"] == Distribution.Channel.SMS:
            estimate = credits_estimate(
                project=project,
                message=data["message"],
                conditions=data["conditions"],
                kind=data["kind"],
                parent=parent,
                mode=data["mode"],
                audience=data.get("audience", ""),
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

    @extend_schema(request=CopySerializer, responses={201: DistributionSerializer})
    @action(detail=True, methods=["post"])
    def copy(self, request, pk=None):
        """Copy a distribution, to its project or another of the brand's, as a new Scheduled
        one with its message, conditions and schedule (checked as a new one is). Its
        ``origin`` is the original (copy)."""
        original = self.get_object()
        payload = CopySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        project = self._project(data["project"]) if data.get("project") else None
        try:
            copy = distribution_copy(
                original=original,
                project=project,
                send_at=data.get("send_at"),
                name=data.get("name", ""),
                actor=self.actor(),
            )
        except DjangoValidationError as exc:
            raise _state_or_invalid(exc) from exc
        return Response(DistributionSerializer(copy).data, status=201)

    @extend_schema(request=ResendSerializer, responses={201: DistributionSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Try a Failed distribution again (after fixing what made it fail): a new one with
        the same settings, sent to whom the original did not reach; 409 unless Failed."""
        return self._derive(request, distribution_retry)

    @extend_schema(request=ResendSerializer, responses={201: DistributionSerializer})
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        """Resend a Sent distribution to its Failed, Bounced and Blocked recipients only: a
        new distribution (origin_kind resend); 409 unless Sent with such recipients."""
        return self._derive(request, distribution_resend)

    def _derive(self, request, service):
        original = self.get_object()
        payload = ResendSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            made = service(
                original=original,
                send_at=payload.validated_data.get("send_at"),
                actor=self.actor(),
            )
        except DjangoValidationError as exc:
            raise _state_or_invalid(exc) from exc
        return Response(DistributionSerializer(made).data, status=201)

    @extend_schema(request=TestMessageSerializer, responses={201: TestMessageAnswerSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send this distribution's message once to ``address`` (a phone for SMS, an email
        address for email), rendered with a participant's fields. It is charged like any
        message, marked as a test, and never counted in this distribution's metrics."""
        original = self.get_object()
        payload = TestMessageSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        participant = (
            self.get_scoped(
                Participant.objects.filter(project_id=original.project_id),
                pk=data["participant"],
            )
            if data.get("participant")
            else None
        )
        test = distribution_test_send(
            original=original,
            address=data["address"],
            participant=participant,
            actor=self.actor(),
        )
        row = test.messages.get()
        answer = {
            "id": test.pk,
            "origin": original.pk,
            "test": True,
            "address": row.address,
            "participant": row.participant_id,
            "status": row.status,
            "status_reason": row.status_reason,
            "body": row.body,
            "segments": row.segments,
        }
        return Response(TestMessageAnswerSerializer(answer).data, status=201)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, pk=None):
        """Delete a Scheduled distribution (recorded in the audit trail); 409 once it started:
        archive a finished one instead."""
        try:
            distribution_delete(distribution=self.get_object(), actor=self.actor())
        except DjangoValidationError as exc:
            raise state_conflict(exc) from exc
        return Response(status=204)

    @extend_schema(request=None, responses=DistributionSerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request, pk=None):
        """Archive a finished distribution: hidden from lists (``?archived=true`` shows it),
        its history, ledger and usage kept and still downloadable."""
        try:
            distribution = distribution_archive(distribution=self.get_object(), actor=self.actor())
        except DjangoValidationError as exc:
            raise state_conflict(exc) from exc
        return Response(DistributionSerializer(distribution).data)

    @extend_schema(request=None, responses=DistributionSerializer)
    @action(detail=True, methods=["post"])
    def unarchive(self, request, pk=None):
        """Show an archived distribution in lists again."""
        distribution = distribution_unarchive(distribution=self.get_object(), actor=self.actor())
        return Response(DistributionSerializer(distribution).data)

    @extend_schema(
        parameters=[OpenApiParameter("distribution", int, description="A distribution id.")],
        responses=AuditSerializer(many=True),
    )
    @action(detail=False, methods=["get"])
    def audit(self, request):
        """The audit trail of the brand's distributions, newest first: copies, tries again,
        resends, test messages, deletes, archives (deleted distributions included)."""
        wanted = request.query_params.get("distribution")
        queryset = distribution_audit_list(
            brand=self.brand, distribution_id=int(wanted) if wanted else None
        )
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(AuditSerializer(page, many=True).data)

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
