"""REST API of a project's reminders and recurring messages (``projects/<pk>/reminders/``,
``projects/<pk>/recurrences/``, ``recurrences/<pk>/``). Another brand's project, invite or
series answers 404, like a missing one; the rules live in ``distributions.services`` and
``distributions.series``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictModelSerializer, StrictSerializer
from distributions.api import (
    ACCEPT_PARTIAL_HELP,
    REMINDER_AUDIENCE_HELP,
    ConditionSerializer,
    DistributionSerializer,
    insufficient_credits_error,
)
from distributions.models import Distribution, DistributionSeries
from distributions.series import SERIES_ACTIONS, series_create
from distributions.services import InsufficientCredits, distribution_create
from projects.api import ProjectScopedMixin


# --- reminders --------------------------------------------------------------------------------
class ReminderCreateSerializer(StrictSerializer):
    invite = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The invite whose non-respondents to remind; omit to remind every participant "
        "of the project who has not responded.",
    )
    channel = serializers.ChoiceField(choices=Distribution.Channel.choices, required=False)
    audience = serializers.ChoiceField(
        choices=[("", "not responded"), ("started", "started but not finished")],
        required=False,
        allow_blank=True,
        help_text=REMINDER_AUDIENCE_HELP,
    )
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    message = serializers.CharField(max_length=1600)
    sender = serializers.CharField(required=False, allow_blank=True, max_length=32)
    send_at = serializers.DateTimeField(required=False, allow_null=True)
    accept_partial = serializers.BooleanField(default=False, help_text=ACCEPT_PARTIAL_HELP)


class ReminderList(ProjectScopedMixin, generics.ListCreateAPIView):
    """The project's reminders; POST schedules one (after an invite, or for the project)."""

    serializer_class = DistributionSerializer

    def get_queryset(self):
        return Distribution.objects.filter(
            project=self.project, kind=Distribution.Kind.REMINDER
        ).select_related("parent")

    @extend_schema(request=ReminderCreateSerializer, responses={201: DistributionSerializer})
    def post(self, request, project_pk):
        payload = ReminderCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        invite_id = data.pop("invite", None)
        invite = self.get_scoped(Distribution, pk=invite_id) if invite_id else None
        channel = data.pop("channel", None) or (invite.channel if invite else "sms")
        try:
            reminder = distribution_create(
                project=self.project,
                kind=Distribution.Kind.REMINDER,
                parent=invite,
                channel=channel,
                actor=self.actor(),
                **data,
            )
        except InsufficientCredits as exc:
            raise insufficient_credits_error(exc) from exc
        return ApiResponse(DistributionSerializer(reminder).data, status=status.HTTP_201_CREATED)


# --- recurring messages -------------------------------------------------------------------
class SeriesSerializer(StrictModelSerializer):
    conditions = ConditionSerializer(many=True, required=False)
    weekdays = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=6), required=False, max_length=7
    )
    runs = serializers.SerializerMethodField()

    class Meta:
        model = DistributionSeries
        fields = [
            "id",
            "project",
            "name",
            "channel",
            "message",
            "sender",
            "subject",
            "text_body",
            "from_name",
            "from_address",
            "reply_to",
            "conditions",
            "frequency",
            "weekdays",
            "day_of_month",
            "time_of_day",
            "starts_on",
            "ends_on",
            "status",
            "next_run_at",
            "last_run_at",
            "last_outcome",
            "runs",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "project",
            "status",
            "next_run_at",
            "last_run_at",
            "last_outcome",
            "runs",
            "created_at",
        ]

    def get_runs(self, series) -> list[int]:
        return list(series.runs.order_by("-send_at", "-pk").values_list("pk", flat=True)[:50])


class SeriesList(ProjectScopedMixin, generics.ListCreateAPIView):
    """Recurring messages of a Lifecycle project; each run is a distribution of its own."""

    serializer_class = SeriesSerializer

    def get_queryset(self):
        return DistributionSeries.objects.filter(project=self.project)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        if "conditions" in data:
            data["conditions"] = [dict(c) for c in data["conditions"]]
        serializer.instance = series_create(project=self.project, actor=self.actor(), **data)


class SeriesDetail(BrandScopedAPIMixin, generics.RetrieveAPIView):
    queryset = DistributionSeries.objects.select_related("project__brand")
    serializer_class = SeriesSerializer


class SeriesAction(BrandScopedAPIMixin, APIView):
    @extend_schema(request=None, responses=SeriesSerializer)
    def post(self, request, pk, action):
        """Pause, resume (from the next occurrence) or end a recurring message."""
        series = self.get_scoped(DistributionSeries.objects.select_related("project__brand"), pk=pk)
        updated = SERIES_ACTIONS[action](series=series, actor=self.actor())
        return ApiResponse(SeriesSerializer(updated).data)
