from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse, Http404
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.api.errors import Conflict, PayloadTooLarge
from brands.roles import Role
from participants.importer import REQUIRABLE
from participants.models import ImportJob, Participant, Person
from participants.selectors import (
    import_list,
    import_progress,
    parse_metadata_filters,
    participant_list,
    search_people,
)
from participants.services import (
    BULK_MAX_RECORDS,
    describe_size,
    import_cancel,
    import_confirm,
    import_create,
    import_max_upload_bytes,
    participant_create,
    participant_remove,
    participant_update,
    participants_bulk_upsert,
    person_create,
    person_delete,
    person_update,
)
from participants.uploads import install as install_upload_limit
from participants.values import METADATA_FIELDS_MAX, METADATA_KEY_MAX, METADATA_VALUE_MAX
from projects.models import Project

__all__ = ["search_people"]  # kept importable from here for older callers


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": METADATA_FIELDS_MAX,
        "additionalProperties": {
            "nullable": True,
            "oneOf": [
                {"type": "string", "maxLength": METADATA_VALUE_MAX},
                {"type": "number"},
                {"type": "boolean"},
            ],
        },
        "description": (
            f"Flat fields (one per CSV column): at most {METADATA_FIELDS_MAX}, names of 1 to "
            f"{METADATA_KEY_MAX} characters, values text (at most {METADATA_VALUE_MAX} "
            "characters), numbers, true/false or null, stored as text. Text a spreadsheet "
            "would run as a formula is refused (start it with an apostrophe to keep it)."
        ),
    }
)
class MetadataField(serializers.DictField):
    """A metadata object; ``participants.values.metadata_clean`` (in the services) decides."""


class PersonFieldsSerializer(StrictSerializer):
    person_id = serializers.CharField(required=False, allow_blank=True, max_length=128)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, max_length=254)
    username = serializers.CharField(required=False, allow_blank=True, max_length=150)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)
    time_zone = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="IANA time zone (e.g. America/New_York); empty: from the phone number.",
    )
    metadata = MetadataField(required=False)


class PersonSerializer(PersonFieldsSerializer):
    id = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class ParticipantSerializer(PersonFieldsSerializer):
    id = serializers.IntegerField(read_only=True)
    project = serializers.IntegerField(read_only=True)
    person = serializers.IntegerField(read_only=True)
    role = serializers.CharField(required=False, allow_blank=True, max_length=120)
    participant_metadata = MetadataField(required=False)
    created_at = serializers.DateTimeField(read_only=True)

    PERSON_OUTPUT = (*Person.DIRECTORY_FIELDS, "metadata")

    def to_representation(self, instance: Participant):
        person = instance.person
        data = {"id": instance.pk, "project": instance.project_id, "person": person.pk}
        data.update({name: getattr(person, name) for name in self.PERSON_OUTPUT})
        data.update(
            {
                "role": instance.role,
                "participant_metadata": instance.metadata,
                "created_at": serializers.DateTimeField().to_representation(instance.created_at),
            }
        )
        return data


@extend_schema(
    parameters=[OpenApiParameter("q", str, description="Name, email, phone or PersonID.")],
    methods=["GET"],
)
class PersonListCreate(BrandScopedAPIMixin, generics.ListCreateAPIView):
    """The brand's directory. ``?q=`` searches names, email, phone (any format), PersonID."""

    queryset = Person.objects.all()
    serializer_class = PersonSerializer

    def get_queryset(self):
        return search_people(
            super().get_queryset(),
            self.request.query_params.get("q"),
            country=self.brand.default_country if self.brand else "",
        )

    def perform_create(self, serializer):
        serializer.instance = person_create(brand=self.brand, **serializer.validated_data)


class PersonDetail(BrandScopedAPIMixin, generics.RetrieveUpdateDestroyAPIView):
    """One person of the directory. DELETE removes them from every project too."""

    queryset = Person.objects.all()
    serializer_class = PersonSerializer

    def perform_update(self, serializer):
        person_update(person=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        person_delete(person=instance)


class ProjectParticipantsMixin(BrandScopedAPIMixin):
    def get_project(self) -> Project:
        if not hasattr(self, "_project"):
            self._project = self.get_scoped(Project, pk=self.kwargs["project_pk"])
        return self._project

    def base_queryset(self):
        return Participant.objects.filter(project=self.get_project()).select_related("person")


PARTICIPANT_FILTERS = [
    OpenApiParameter("q", str, description="Name, email, PersonID, user name or phone."),
    OpenApiParameter("role", str, description="Project role (any case)."),
    OpenApiParameter(
        "metadata",
        str,
        many=True,
        description="`Field:value`, repeatable. Values of one field are ORed, fields ANDed.",
    ),
]


@extend_schema(parameters=PARTICIPANT_FILTERS, methods=["GET"])
class ParticipantListCreate(ProjectParticipantsMixin, generics.ListCreateAPIView):
    """Participants of a project, searchable and filterable like the page."""

    serializer_class = ParticipantSerializer

    def get_queryset(self):
        project = self.get_project()
        params = self.request.query_params
        return participant_list(
            project=project,
            q=params.get("q", ""),
            role=params.get("role", ""),
            metadata=parse_metadata_filters(params.getlist("metadata")),
        ).for_brand(self.brand)

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = participant_create(
            project=self.get_project(),
            role=data.pop("role", ""),
            participant_metadata=data.pop("participant_metadata", None),
            actor=self.actor(),
            **data,
        )


class ParticipantDetail(ProjectParticipantsMixin, generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ParticipantSerializer

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        participant_update(
            participant=serializer.instance,
            role=data.pop("role", None),
            participant_metadata=data.pop("participant_metadata", None),
            **data,
        )

    def perform_destroy(self, instance):
        participant_remove(participant=instance)


# --- Bulk upsert ------------------------------------------------------------------------------


class BulkUpsertSerializer(StrictSerializer):
    records = serializers.ListField(
        child=serializers.JSONField(),
        allow_empty=False,
        help_text=(
            f"Up to {BULK_MAX_RECORDS:,} objects with person_id, first_name, last_name, email, "
            "username, phone, role (projects only) and metadata (an object)."
        ),
    )
    erase_empty = serializers.BooleanField(default=False)
    metadata_target = serializers.ChoiceField(
        choices=ImportJob.MetadataTarget.choices, default=ImportJob.MetadataTarget.PERSON
    )
    required_fields = serializers.ListField(
        child=serializers.ChoiceField(choices=list(REQUIRABLE)), required=False, default=list
    )
    dry_run = serializers.BooleanField(default=False)
    on_error = serializers.ChoiceField(choices=["abort", "skip"], default="abort")


BULK_REPORT = inline_serializer(
    "BulkUpsertReport",
    fields={
        "records": serializers.IntegerField(),
        "to_create": serializers.IntegerField(),
        "to_update": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
        "new_participants": serializers.IntegerField(),
        "error_rows": serializers.IntegerField(),
        "errors": serializers.ListField(child=serializers.DictField()),
        "dry_run": serializers.BooleanField(),
        "written": serializers.BooleanField(),
    },
)


class BulkUpsertView(BrandScopedAPIMixin, APIView):
    """Create or update up to 10,000 people (and participants) in one call.

    Same matching, validation and report as a CSV import. ``dry_run`` only reports. Otherwise
    the valid records are written in one transaction; if any record is invalid and
    ``on_error`` is ``abort`` (the default), nothing is written and the answer is 400 with the
    report, each error naming the record's 0-based ``index`` and its ``field``.
    """

    write_role = Role.PROJECT_ADMIN

    @extend_schema(
        request=BulkUpsertSerializer,
        responses={
            200: BULK_REPORT,
            400: inline_serializer(
                "BulkUpsertRefusal",
                fields={
                    "error": serializers.DictField(
                        help_text="The API's error: code, message, fields (per record index)."
                    ),
                    "report": inline_serializer(
                        "BulkUpsertRefusedReport",
                        fields=dict(BULK_REPORT.fields),
                        required=False,
                        help_text="With invalid records: the report (nothing was written).",
                    ),
                },
            ),
        },
    )
    def post(self, request, project_pk=None):
        project = self.get_scoped(Project, pk=project_pk) if project_pk else None
        payload = BulkUpsertSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        report = participants_bulk_upsert(
            brand=self.brand,
            project=project,
            records=data["records"],
            actor=self.actor(),
            erase_empty=data["erase_empty"],
            metadata_target=data["metadata_target"],
            required_fields=data["required_fields"],
            dry_run=data["dry_run"],
            on_error=data["on_error"],
        )
        if report["error_rows"] and not report["written"] and not report["dry_run"]:
            fields: dict[str, dict[str, str]] = {}
            for error in report["errors"]:
                fields.setdefault(str(error["index"]), {})[error["field"] or "record"] = error[
                    "message"
                ]
            body = {
                "error": {
                    "code": "invalid",
                    "message": f"{report['error_rows']} of {report['records']} records are "
                    "invalid; nothing was written.",
                    "fields": {"records": fields},
                },
                "report": report,
            }
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        return Response(report)


# --- Imports ----------------------------------------------------------------------------------


class ImportJobSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "status",
            "project",
            "source",
            "original_name",
            "size",
            "erase_empty",
            "metadata_target",
            "required_fields",
            "auto_commit",
            "encoding",
            "delimiter",
            "columns",
            "total_rows",
            "to_create",
            "to_update",
            "unchanged",
            "error_rows",
            "created_count",
            "updated_count",
            "unchanged_count",
            "added_count",
            "progress",
            "report",
            "failure",
            "created_at",
            "validated_at",
            "started_at",
            "finished_at",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_progress(self, job: ImportJob) -> dict:
        return import_progress(job=job)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_links(self, job: ImportJob) -> dict:
        from django.urls import reverse

        links = {
            "self": reverse("api:import-detail", args=[job.pk]),
            "confirm": reverse("api:import-confirm", args=[job.pk]),
            "cancel": reverse("api:import-cancel", args=[job.pk]),
        }
        if job.errors_file:
            links["errors_csv"] = reverse("api:import-errors", args=[job.pk])
        return links


class ImportUploadSerializer(StrictSerializer):
    file = serializers.FileField(help_text="A CSV file (UTF-8 or Windows-1252; , ; or TAB).")
    project = serializers.IntegerField(
        required=False, allow_null=True, help_text="Omit to import into the directory alone."
    )
    erase_empty = serializers.BooleanField(default=False)
    metadata_target = serializers.ChoiceField(
        choices=ImportJob.MetadataTarget.choices, default=ImportJob.MetadataTarget.PERSON
    )
    required_fields = serializers.MultipleChoiceField(
        choices=list(REQUIRABLE), required=False, default=list
    )
    auto_commit = serializers.BooleanField(
        default=False, help_text="Import at once if the check finds no bad row."
    )


@extend_schema(parameters=[OpenApiParameter("project", int)], methods=["GET"])
class ImportListCreate(BrandScopedAPIMixin, generics.ListCreateAPIView):
    """Upload a CSV (multipart) to check it, then poll the import and confirm it.

    The answer is 202 with the import's id; ``GET /imports/{id}/`` shows its status, progress
    and report. Nothing is written before ``POST /imports/{id}/confirm/`` (or ``auto_commit``
    with a clean file). Uploads above the limit (50 MB by default) answer 413.
    """

    queryset = ImportJob.objects.all()
    serializer_class = ImportJobSerializer
    parser_classes = [MultiPartParser]  # a file: multipart only
    write_role = Role.PROJECT_ADMIN
    read_role = Role.PROJECT_ADMIN
    enforces_own_body_limit = True  # RELAY_IMPORT_MAX_UPLOAD_BYTES, answered with the size

    def initial(self, request, *args, **kwargs):
        if request.method == "POST":  # before anything parses the body
            install_upload_limit(request._request, limit=import_max_upload_bytes())
        super().initial(request, *args, **kwargs)

    def get_queryset(self):
        queryset = import_list(queryset=super().get_queryset())
        project = self.request.query_params.get("project")
        if project:
            queryset = queryset.filter(project_id=project) if project.isdigit() else queryset.none()
        return queryset

    @extend_schema(request=ImportUploadSerializer, responses={202: ImportJobSerializer})
    def post(self, request, *args, **kwargs):
        data = request.data  # parses the body, under the size guard
        too_large = getattr(request._request, "import_upload_too_large", None)
        if too_large:
            limit = describe_size(import_max_upload_bytes())
            raise PayloadTooLarge(
                {
                    "detail": f"The upload is about {describe_size(too_large)}; the limit is "
                    f"{limit}. Split the file into smaller ones, each with the header row.",
                    "file": f"Larger than {limit}.",
                }
            )
        payload = ImportUploadSerializer(data=data)
        payload.is_valid(raise_exception=True)
        values = dict(payload.validated_data)
        project_id = values.pop("project", None)
        project = self.get_scoped(Project, pk=project_id) if project_id else None
        try:
            job = import_create(
                brand=self.brand,
                project=project,
                upload=values.pop("file"),
                actor=self.actor(),
                required_fields=sorted(values.pop("required_fields", []) or []),
                source=ImportJob.Source.API,
                **values,
            )
        except DjangoValidationError:
            raise
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetail(BrandScopedAPIMixin, generics.RetrieveAPIView):
    """Status, progress (``progress.percent``), counts and report of one import."""

    queryset = ImportJob.objects.select_related("project")
    serializer_class = ImportJobSerializer
    read_role = Role.PROJECT_ADMIN


class ImportActionView(BrandScopedAPIMixin, APIView):
    read_role = Role.PROJECT_ADMIN
    write_role = Role.PROJECT_ADMIN
    action_name = ""

    def job(self, pk) -> ImportJob:
        return self.get_scoped(ImportJob, pk=pk)

    @extend_schema(request=None, responses={202: ImportJobSerializer, 409: OpenApiTypes.OBJECT})
    def post(self, request, pk):
        job = self.job(pk)
        try:
            if self.action_name == "confirm":
                job = import_confirm(job=job, actor=self.actor())
            else:
                job = import_cancel(job=job, actor=self.actor())
        except DjangoValidationError as exc:
            raise Conflict(" ".join(exc.messages)) from exc
        return Response(ImportJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ImportConfirm(ImportActionView):
    """Write the valid rows (one transaction, usually by a worker: poll the import)."""

    action_name = "confirm"


class ImportCancel(ImportActionView):
    """Drop an import that is not being written; nothing of it reaches the directory."""

    action_name = "cancel"


class ImportErrors(BrandScopedAPIMixin, APIView):
    """Every bad row of the file with its errors, as CSV."""

    read_role = Role.PROJECT_ADMIN

    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.BINARY})
    def get(self, request, pk):
        job = self.get_scoped(ImportJob, pk=pk)
        if not job.errors_file:
            raise Http404("This import has no error file.")
        stem = slugify(job.original_name.rsplit(".", 1)[0]) or "import"
        return FileResponse(
            job.errors_file.open("rb"),
            as_attachment=True,
            filename=f"{stem}-errors.csv",
            content_type="text/csv; charset=utf-8",
        )
