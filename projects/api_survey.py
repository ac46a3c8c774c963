"""REST API of a project's survey loop: questions, responses (list, create, CSV), personal
links (list, generate, CSV), the anonymous link's QR code, reminders and recurring messages.

Every view reaches its project through the caller's brand (``get_scoped``): another brand's
project, invite or series answers 404, like a missing one. Views only translate HTTP: the rules
live in ``projects.services`` and ``distributions.series``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse, StreamingHttpResponse
from django.utils.functional import cached_property
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictModelSerializer, StrictSerializer
from brands.scoping import get_for_brand_by_pk
from distributions.api import (
    ACCEPT_PARTIAL_HELP,
    ConditionSerializer,
    DistributionSerializer,
    insufficient_credits_error,
)
from distributions.csvio import DELIMITERS, ENCLOSURES, csv_rows
from distributions.models import Distribution, DistributionSeries
from distributions.series import SERIES_ACTIONS, series_create
from distributions.services import InsufficientCredits, distribution_create
from participants.models import Participant
from projects.models import Project, Question, Response, SurveyLink
from projects.qr import QR_FORMATS, qr_image
from projects.selectors import (
    LINKS_HEADER,
    links_csv_rows,
    response_list,
    responses_csv,
    survey_links,
)
from projects.services import (
    question_create,
    question_delete,
    question_update,
    questions_reorder,
    response_create,
    survey_links_create,
)

CSV_PARAMETERS = [
    OpenApiParameter("delimiter", enum=list(DELIMITERS), default="comma"),
    OpenApiParameter("enclosure", enum=list(ENCLOSURES), default="double"),
]


class ProjectScopedMixin(BrandScopedAPIMixin):
    """Views under ``projects/<project_pk>/``: the project is looked up in the caller's brand."""

    @cached_property
    def project(self) -> Project:
        brand = self.brand
        project = get_for_brand_by_pk(Project, brand=brand, pk=self.kwargs["project_pk"])
        project.brand = brand  # the caller's brand: the lookup is scoped to it
        return project


def csv_response(request, *, header, rows, filename: str) -> StreamingHttpResponse:
    """Stream ``rows`` as CSV in the caller's ``?delimiter=`` and ``?enclosure=``."""
    lines = csv_rows(
        header,
        rows,
        delimiter=request.query_params.get("delimiter", "comma"),
        enclosure=request.query_params.get("enclosure", "double"),
    )
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- questions ------------------------------------------------------------------------------
class QuestionSerializer(StrictModelSerializer):
    choices = serializers.ListField(
        child=serializers.CharField(allow_blank=True, max_length=200),
        required=False,
        max_length=Question.MAX_CHOICES,
    )

    class Meta:
        model = Question
        fields = ["id", "position", "kind", "text", "help_text", "choices", "required"]
        read_only_fields = ["id", "position"]
        extra_kwargs = {"kind": {"required": True}, "text": {"required": True}}


class QuestionList(ProjectScopedMixin, generics.ListCreateAPIView):
    """The survey's questions in order; POST adds one at the end."""

    serializer_class = QuestionSerializer
    pagination_class = None

    def get_queryset(self):
        return self.project.questions.all()

    def perform_create(self, serializer):
        serializer.instance = question_create(
            project=self.project, actor=self.actor(), **serializer.validated_data
        )


class QuestionDetail(ProjectScopedMixin, generics.RetrieveUpdateDestroyAPIView):
    serializer_class = QuestionSerializer

    def get_queryset(self):
        return self.project.questions.all()

    def perform_update(self, serializer):
        question_update(
            question=serializer.instance, actor=self.actor(), **serializer.validated_data
        )

    def perform_destroy(self, instance):
        question_delete(question=instance, actor=self.actor())


class ReorderSerializer(StrictSerializer):
    order = serializers.ListField(child=serializers.IntegerField(), max_length=500)


class QuestionReorder(ProjectScopedMixin, APIView):
    @extend_schema(request=ReorderSerializer, responses=QuestionSerializer(many=True))
    def post(self, request, project_pk):
        """Put the questions in this order (every question id exactly once)."""
        payload = ReorderSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        questions = questions_reorder(
            project=self.project, order=payload.validated_data["order"], actor=self.actor()
        )
        return ApiResponse(QuestionSerializer(questions, many=True).data)


# --- responses ------------------------------------------------------------------------------
class ResponseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = [
            "id",
            "status",
            "channel",
            "participant",
            "link",
            "distribution",
            "answers",
            "embedded_data",
            "untrusted_keys",
            "started_at",
            "completed_at",
        ]
        read_only_fields = fields


class ResponseCreateSerializer(StrictSerializer):
    participant = serializers.IntegerField(required=False, allow_null=True)
    answers = serializers.JSONField(help_text='{"<question id>": answer}')
    embedded_data = serializers.DictField(required=False)


@extend_schema(
    parameters=[
        OpenApiParameter("status", str, enum=Response.Status.values),
        OpenApiParameter("channel", str),
        OpenApiParameter("since", OpenApiTypes.DATETIME),
    ],
    methods=["GET"],
)
class ResponseList(ProjectScopedMixin, generics.ListCreateAPIView):
    """Responses, newest first (``?status=``, ``?channel=``, ``?since=`` ISO time filter).
    POST records a complete response through the API (channel ``api``)."""

    serializer_class = ResponseSerializer

    def get_queryset(self):
        params = self.request.query_params
        since = None
        if params.get("since"):
            since = serializers.DateTimeField().to_internal_value(params["since"])
        return response_list(
            project=self.project,
            status=params.get("status"),
            channel=params.get("channel"),
            since=since,
        )

    @extend_schema(request=ResponseCreateSerializer, responses={201: ResponseSerializer})
    def post(self, request, project_pk):
        payload = ResponseCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        participant = None
        if data.get("participant"):
            participant = self.get_scoped(Participant, pk=data["participant"])
        try:
            response = response_create(
                project=self.project,
                answers=data["answers"],
                participant=participant,
                embedded_data=data.get("embedded_data"),
                actor=self.actor(),
            )
        except DjangoValidationError as exc:
            # The service names a bad answer by its question id: nest those under "answers".
            fields = exc.message_dict
            answers = {key: value for key, value in fields.items() if key.isdigit()}
            others = {key: value for key, value in fields.items() if not key.isdigit()}
            raise ValidationError(others | ({"answers": answers} if answers else {})) from exc
        return ApiResponse(ResponseSerializer(response).data, status=status.HTTP_201_CREATED)


class ResponseDetail(ProjectScopedMixin, generics.RetrieveAPIView):
    serializer_class = ResponseSerializer

    def get_queryset(self):
        return Response.objects.filter(project=self.project)


class ResponsesCsv(ProjectScopedMixin, APIView):
    @extend_schema(
        parameters=[*CSV_PARAMETERS, OpenApiParameter("status", enum=Response.Status.values)],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, project_pk):
        """Every response as CSV: one column per question, embedded data as JSON."""
        header, rows = responses_csv(
            project=self.project,
            zone=self.project.brand.zone,
            status=request.query_params.get("status") or None,
        )
        return csv_response(
            request, header=header, rows=rows, filename=f"project-{project_pk}-responses.csv"
        )


# --- personal links and the anonymous link --------------------------------------------------
class LinkSerializer(serializers.ModelSerializer):
    url = serializers.CharField(read_only=True)

    class Meta:
        model = SurveyLink
        fields = [
            "id",
            "token",
            "url",
            "participant",
            "distribution",
            "channel",
            "expires_at",
            "opened_at",
            "completed_at",
            "created_at",
        ]
        read_only_fields = fields


class LinkGenerateSerializer(StrictSerializer):
    participants = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        allow_null=True,
        max_length=100_000,
        help_text="Participant ids; omit for every participant of the project.",
    )
    channel = serializers.ChoiceField(choices=["email", "sms", "api"], default="email")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


@extend_schema(
    parameters=[OpenApiParameter("channel", str), OpenApiParameter("distribution", int)],
    methods=["GET"],
)
class LinkList(ProjectScopedMixin, generics.ListCreateAPIView):
    """Personal links (``?channel=``, ``?distribution=``). POST makes one new link per
    participant (e.g. for a third-party mailer) and answers them."""

    serializer_class = LinkSerializer

    def get_queryset(self):
        params = self.request.query_params
        distribution = params.get("distribution")
        if distribution and not distribution.isdigit():
            return SurveyLink.objects.none()
        return survey_links(
            project=self.project, channel=params.get("channel"), distribution_id=distribution
        )

    @extend_schema(request=LinkGenerateSerializer, responses={201: LinkSerializer(many=True)})
    def post(self, request, project_pk):
        payload = LinkGenerateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        participants = None
        if data.get("participants") is not None:
            wanted = set(data["participants"])
            participants = self.project.participants.filter(pk__in=wanted)
            missing = wanted - set(participants.values_list("pk", flat=True))
            if missing:
                listed = ", ".join(map(str, sorted(missing)))
                raise ValidationError({"participants": f"Not in this project: {listed}."})
        links = survey_links_create(
            project=self.project,
            participants=participants,
            channel=data["channel"],
            expires_at=data.get("expires_at"),
            actor=self.actor(),
        )
        return ApiResponse(LinkSerializer(links, many=True).data, status=status.HTTP_201_CREATED)


class LinksCsv(ProjectScopedMixin, APIView):
    @extend_schema(
        parameters=[*CSV_PARAMETERS, OpenApiParameter("channel", str)],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request, project_pk):
        """Personal links as CSV, to merge into a mailing list (``?channel=``)."""
        links = survey_links(project=self.project, channel=request.query_params.get("channel"))
        rows = links_csv_rows(links.iterator(chunk_size=2000), zone=self.project.brand.zone)
        return csv_response(
            request, header=LINKS_HEADER, rows=rows, filename=f"project-{project_pk}-links.csv"
        )


class AnonymousQrCode(ProjectScopedMixin, APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request, project_pk, kind):
        """The anonymous link's QR code, as ``qr.png`` or ``qr.svg``."""
        return qr_http_response(self.project, kind=kind, download=True)


def qr_http_response(project: Project, *, kind: str, download: bool) -> HttpResponse:
    response = HttpResponse(
        qr_image(f"{project.anonymous_url}?src=qr", kind=kind), content_type=QR_FORMATS[kind]
    )
    if download:
        response["Content-Disposition"] = f'attachment; filename="survey-{project.pk}-qr.{kind}"'
    return response


# --- reminders --------------------------------------------------------------------------------
class ReminderCreateSerializer(StrictSerializer):
    invite = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="The invite whose non-respondents to remind; omit to remind every participant "
        "of the project who has not responded.",
    )
    channel = serializers.ChoiceField(choices=Distribution.Channel.choices, required=False)
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
