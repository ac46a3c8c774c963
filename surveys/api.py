"""REST API of a project's survey: questions, responses (list, create, CSV), personal
links (list, generate, CSV), the anonymous link's QR code.

Every view reaches its project through the caller's brand (``get_scoped``): another brand's
project, invite or series answers 404, like a missing one. Views only translate HTTP: the rules
live in ``surveys.services``.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from brands.api.base import StrictModelSerializer, StrictSerializer
from brands.api.errors import state_conflict
from core.csvio import CSV_PARAMETERS, csv_response
from participants.models import Participant
from projects.api import ProjectScopedMixin
from projects.models import Project, Question, Response, ResponseReset, SurveyLink
from surveys.qr import QR_FORMATS, qr_image
from surveys.selectors import (
    LINKS_HEADER,
    links_csv_rows,
    response_list,
    responses_csv,
    survey_links,
)
from surveys.services import (
    question_create,
    question_delete,
    question_update,
    questions_reorder,
    response_create,
    response_reset,
    survey_links_create,
)

QKind = Question.Kind


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


class ResponseResetRequestSerializer(StrictSerializer):
    reason = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Why (kept in the audit trail).",
    )


class ResponseResetSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = ResponseReset
        fields = ["id", "response", "link", "previous_status", "reason", "actor", "created_at"]
        read_only_fields = fields

    def get_actor(self, reset: ResponseReset) -> str | None:
        return reset.actor.get_username() if reset.actor_id else None


class ResponseResetView(ProjectScopedMixin, APIView):
    """``POST projects/{id}/responses/{id}/reset/``: let the person answer again. The response
    becomes ``superseded`` (its answers kept, no longer counted; its participant is no longer a
    respondent), its personal link answers again; the reset is recorded (who, when, why).
    A response already reset answers 409."""

    @extend_schema(request=ResponseResetRequestSerializer, responses={201: ResponseResetSerializer})
    def post(self, request, project_pk, pk):
        body = ResponseResetRequestSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        response = self.get_scoped(Response.objects.filter(project=self.project), pk=pk)
        try:
            reset = response_reset(
                response=response,
                actor=self.actor(),
                reason=body.validated_data.get("reason", ""),
            )
        except DjangoValidationError as exc:
            raise state_conflict(exc) from exc
        return ApiResponse(ResponseResetSerializer(reset).data, status=status.HTTP_201_CREATED)


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
