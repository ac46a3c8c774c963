"""``POST /api/v1/projects/{id}/links/`` with a contact and a transaction: one call makes a
transactional personal link (or up to ``MAX_BULK_ITEMS`` of them, item by item).

The other bodies of this route (links for existing participants) and its GET stay with
``surveys.api.LinkList``; this view only recognises its own body and translates HTTP:
the rules live in ``transactional.services``.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.api.errors import Conflict, PayloadTooLarge, exception_handler
from core.csvio import CSV_PARAMETERS, csv_response
from distributions.models import Distribution
from participants.api import MetadataField
from surveys.answers import MAX_URL_KEY
from surveys.api import LinkGenerateSerializer, LinkList
from transactional.selectors import (
    TRANSACTIONS_HEADER,
    transaction_history_rows,
    transactional_invite_metrics,
)
from transactional.services import (
    MAX_BULK_ITEMS,
    MAX_DATA_FIELDS,
    IdempotencyConflict,
    LinkRequest,
    LinkResult,
    ProjectNotCollecting,
    StaleProject,
    forget_project,
    keep_project,
    kept_project,
    transactional_links_create,
)

CLOSED_MESSAGES = {
    "paused": "The project is paused: it makes no links until it is resumed.",
    "closed": "The project is closed.",
    "not_started": "The project is not active yet.",
    "not_yet": "The project's availability window has not opened yet.",
}


class ContactSerializer(StrictSerializer):
    person_id = serializers.CharField(max_length=128, required=False, allow_blank=True)
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=40, required=False, allow_blank=True)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    username = serializers.CharField(max_length=150, required=False, allow_blank=True)
    metadata = MetadataField(required=False, help_text="Directory metadata to merge.")

    def validate(self, attrs):
        if not any((attrs.get(k) or "").strip() for k in ("person_id", "email", "phone")):
            raise serializers.ValidationError("Give a person_id, an email or a phone.")
        return attrs


class TransactionSerializer(StrictSerializer):
    id = serializers.CharField(max_length=128, help_text="Your system's id of the event.")
    occurred_at = serializers.DateTimeField(required=False, help_text="Default: now.")
    data = serializers.DictField(
        required=False,
        help_text="Typed fields (text, number, true/false, null), attached to the response "
        "as embedded data.",
    )

    def validate_data(self, value):
        return check_transaction_data(value)


def check_transaction_data(value: dict) -> dict:
    """A transaction's ``data``: at most ``MAX_DATA_FIELDS`` named fields of plain values."""
    if len(value) > MAX_DATA_FIELDS:
        raise serializers.ValidationError(f"At most {MAX_DATA_FIELDS} fields.")
    for key, item in value.items():
        if not key.strip() or len(key) > MAX_URL_KEY:
            raise serializers.ValidationError(f"Field names are 1 to {MAX_URL_KEY} long.")
        if item is not None and not isinstance(item, str | int | float | bool):
            raise serializers.ValidationError(f"'{key}': text, number, true/false or null.")
    return value


class TransactionalLinkSerializer(StrictSerializer):
    contact = ContactSerializer()
    transaction = TransactionSerializer()
    channel = serializers.RegexField(
        r"^[a-z0-9_-]{1,40}$",
        default="api",
        help_text="Channel label, e.g. push: one transactional distribution per label.",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


_CONTACT_TEXTS = {
    name: field.max_length
    for name, field in ContactSerializer._declared_fields.items()
    if isinstance(field, serializers.CharField)
}
_IDENTITIES = ("person_id", "email", "phone")
_CHANNEL = TransactionalLinkSerializer._declared_fields["channel"]
_CHANNEL_PATTERN = re.compile(_CHANNEL.validators[-1].regex.pattern)
_TRANSACTION_ID = TransactionSerializer._declared_fields["id"]
_DATETIME = serializers.DateTimeField()
_DEFAULT_ZONE = timezone.get_default_timezone()
_EXPIRES_AT = TransactionalLinkSerializer._declared_fields["expires_at"]
# What DRF's CharField refuses in a string: NUL and surrogate characters.
_REFUSED_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


class _NotPlain(Exception):
    """Not a plainly valid body: the serializer decides, and words the error."""


def _plain_text(value, max_length: int, *, blank: bool = True) -> str:
    if type(value) is not str:
        raise _NotPlain
    value = value.strip()
    if not value:
        if blank:
            return ""
        raise _NotPlain
    if len(value) > max_length or _REFUSED_CHARACTERS.search(value):
        raise _NotPlain
    return value


def _plain_dict(value) -> dict:
    if type(value) is not dict:
        raise _NotPlain
    return dict(value)


def _plain_datetime(value):
    if type(value) is not str:
        raise _NotPlain
    try:
        parsed = parse_datetime(value)  # what DRF's ISO 8601 input does first
    except ValueError as exc:
        raise _NotPlain from exc
    if parsed is None or parsed.tzinfo is None:  # another format, or naive: the field decides
        return _DATETIME.to_internal_value(value)
    # DRF moves an aware time to the current time zone. No request activates one (the API
    # speaks UTC): it is the default zone, without the per-call lookup of the active one.
    try:
        return parsed.astimezone(_DEFAULT_ZONE)
    except OverflowError as exc:
        raise _NotPlain from exc


def plain_link_data(body) -> dict | None:
    """What ``TransactionalLinkSerializer`` validates ``body`` to, written out for the bodies
    it plainly accepts: JSON strings, objects and values of the right types within their
    limits. None for anything else (a number where a string goes, an unknown field, a bad
    email...): the serializer then decides and words the error, so the answers are the
    serializer's, at a fraction of its cost (it deep-copies its nested fields per call)."""
    try:
        if type(body) is not dict or not body.keys() <= _LINK_FIELDS:
            raise _NotPlain
        given, wanted = body.get("contact"), body.get("transaction")
        if type(given) is not dict or not given.keys() <= _CONTACT_FIELDS:
            raise _NotPlain
        if type(wanted) is not dict or not wanted.keys() <= _TRANSACTION_FIELDS:
            raise _NotPlain
        contact = {}
        for name, value in given.items():
            if name == "metadata":
                contact[name] = _plain_dict(value)
            else:
                contact[name] = _plain_text(value, _CONTACT_TEXTS[name])
        if not any(contact.get(name) for name in _IDENTITIES):
            raise _NotPlain
        if "email" in contact and contact["email"]:
            validate_email(contact["email"])
        transaction = {"id": _plain_text(wanted.get("id"), _TRANSACTION_ID.max_length, blank=False)}
        if "occurred_at" in wanted:
            transaction["occurred_at"] = _plain_datetime(wanted["occurred_at"])
        if "data" in wanted:
            transaction["data"] = _plain_dict(wanted["data"])
            check_transaction_data(transaction["data"])
        data = {"contact": contact, "transaction": transaction}
        channel = _plain_text(body.get("channel", "api"), 40, blank=False)
        if not _CHANNEL_PATTERN.search(channel):
            raise _NotPlain
        data["channel"] = channel
        if "expires_at" in body:
            expires = body["expires_at"]
            data["expires_at"] = None if expires is None else _plain_datetime(expires)
    except (_NotPlain, serializers.ValidationError, DjangoValidationError):
        return None
    return data


def link_data(body, *, serializer: TransactionalLinkSerializer | None = None) -> dict:
    """``body`` validated as ``TransactionalLinkSerializer`` does (raises its errors)."""
    data = plain_link_data(body)
    if data is not None:
        return data
    if serializer is not None:  # a bulk call's one serializer for all its items
        return serializer.run_validation(body)
    payload = TransactionalLinkSerializer(data=body)
    payload.is_valid(raise_exception=True)
    return payload.validated_data


_LINK_FIELDS = set(TransactionalLinkSerializer._declared_fields)
_CONTACT_FIELDS = set(ContactSerializer._declared_fields)
_TRANSACTION_FIELDS = set(TransactionSerializer._declared_fields)


class TransactionalLinkResultSerializer(serializers.Serializer):
    link_id = serializers.IntegerField()
    token = serializers.CharField()
    url = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    person = serializers.IntegerField()
    person_id = serializers.CharField()
    participant = serializers.IntegerField()
    transaction = serializers.IntegerField()
    transaction_id = serializers.CharField()
    distribution = serializers.IntegerField()
    created = serializers.BooleanField()


class TransactionalBulkItemSerializer(TransactionalLinkResultSerializer):
    index = serializers.IntegerField()
    error = serializers.DictField(required=False, help_text="The item's error, if any.")


class TransactionalBulkSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    replayed = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = TransactionalBulkItemSerializer(many=True)


def _result(result: LinkResult) -> dict:
    return {
        "link_id": result.link_id,
        "token": result.token,
        "url": result.url,
        "expires_at": result.expires_at,
        "person": result.person,
        "person_id": result.person_id,
        "participant": result.participant,
        "transaction": result.transaction,
        "transaction_id": result.transaction_id,
        "distribution": result.distribution_id,
        "created": result.created,
    }


def is_transactional_body(data) -> bool:
    return isinstance(data, list) or (
        isinstance(data, dict) and ("contact" in data or "transaction" in data)
    )


class TransactionalLinkList(LinkList):
    """Personal links. POST with ``contact`` and ``transaction`` (or a list of such items)
    makes transactional links; other bodies make links for existing participants."""

    @extend_schema(
        request=PolymorphicProxySerializer(
            component_name="LinkCreateRequest",
            serializers=[
                TransactionalLinkSerializer,
                TransactionalLinkSerializer(many=True),
                LinkGenerateSerializer,
            ],
            resource_type_field_name=None,
        ),
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                location="header",
                required=False,
                description="Makes a retry answer the same link (default: transaction.id).",
            )
        ],
        responses={
            201: {
                "oneOf": [
                    {"$ref": "#/components/schemas/TransactionalLinkResult"},
                    {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Link"},
                        "description": "A body with participants: one new link each.",
                    },
                ]
            },
            200: PolymorphicProxySerializer(
                component_name="LinkReplayOrBulkAnswer",
                serializers=[TransactionalLinkResultSerializer, TransactionalBulkSerializer],
                resource_type_field_name=None,
            ),
        },
        description="One call: upsert the contact, store the transaction, make the link. "
        "A list body (at most 1,000 items) answers item by item. See docs/links.md.",
    )
    def post(self, request, project_pk):
        if not is_transactional_body(request.data):
            return super().post(request, project_pk)
        if isinstance(request.data, list):
            self.project  # noqa: B018  (another brand's project: 404 before anything else)
            return self._bulk(request)
        key = request.headers.get("Idempotency-Key", "").strip()[:255]
        result = self._one(request.data, key=key)
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return ApiResponse(_result(result), status=code)

    def _one(self, body, *, key: str) -> LinkResult:
        kept = kept_project(self.brand, self.kwargs["project_pk"])
        if kept is not None:
            # The write checks that the kept project's fields are still the project's. Any
            # other outcome (an error, a changed project) is decided again with a fresh read,
            # so every answer is the one a fresh read gives.
            try:
                request = _link_request(link_data(body), key=key, body=body)
                (answer,) = transactional_links_create(
                    project=kept, requests=[request], verify_project=True
                )
            except (StaleProject, exceptions.ValidationError, IntegrityError):
                # IntegrityError: a deleted project's first link of a new label.
                answer = None
            if isinstance(answer, LinkResult):
                return answer
            forget_project(kept)
        project = self.project  # 404 for a missing project or another brand's
        request = _link_request(link_data(body), key=key, body=body)
        (answer,) = transactional_links_create(project=project, requests=[request])
        if isinstance(answer, Exception):
            raise _api_error(answer) from answer
        keep_project(project)
        return answer

    def _bulk(self, request):
        items = request.data
        if len(items) > MAX_BULK_ITEMS:
            raise PayloadTooLarge(f"At most {MAX_BULK_ITEMS} items per call.")
        if not items:
            raise exceptions.ValidationError({"non_field_errors": "No items."})
        key = request.headers.get("Idempotency-Key", "").strip()[:240]
        # Every item is validated first; the valid ones are written together (a constant
        # number of statements) and each answers its link or its error at its index.
        results: list[dict | None] = [None] * len(items)
        valid: list[tuple[int, LinkRequest]] = []
        # One serializer for all items: DRF deep-copies a serializer's fields per instance,
        # which would cost more than the writes.
        validator = TransactionalLinkSerializer()
        for index, item in enumerate(items):
            try:
                data = link_data(item, serializer=validator)
            except exceptions.ValidationError as exc:
                results[index] = {"index": index, "error": _error_body(exc)}
            else:
                item_key = f"{key}:{index}" if key else ""
                valid.append((index, _link_request(data, key=item_key, body=item)))
        answers = transactional_links_create(
            project=self.project, requests=[request for _, request in valid]
        )
        for (index, _), answer in zip(valid, answers, strict=True):
            if isinstance(answer, Exception):
                results[index] = {"index": index, "error": _error_body(_api_error(answer))}
            else:
                results[index] = {"index": index, **_result(answer)}
        created = sum(1 for r in results if r.get("created"))
        failed = sum(1 for r in results if "error" in r)
        return ApiResponse(
            {
                "created": created,
                "replayed": len(results) - created - failed,
                "failed": failed,
                "results": results,
            },
            status=status.HTTP_200_OK,
        )


def _link_request(data: dict, *, key: str, body) -> LinkRequest:
    return LinkRequest(
        contact=data["contact"],
        transaction_id=data["transaction"]["id"],
        occurred_at=data["transaction"].get("occurred_at"),
        data=data["transaction"].get("data"),
        channel_label=data["channel"],
        expires_at=data.get("expires_at"),
        idempotency_key=key,
        body=body,
    )


def _api_error(exc: Exception) -> Exception:
    """The HTTP error of a service error (a Django ValidationError passes as it is)."""
    if isinstance(exc, ProjectNotCollecting):
        return Conflict(
            {"detail": CLOSED_MESSAGES.get(exc.reason, exc.reason), "reason": exc.reason}
        )
    if isinstance(exc, IdempotencyConflict):
        named = ", ".join(exc.differences)
        return Conflict(
            {
                "detail": f"This key was used with other data: {named} differ(s).",
                "differences": exc.differences,
            },
            code="idempotency_conflict",
        )
    return exc


def _error_body(exc) -> dict:
    """The API's one error shape, for one item of a bulk call."""

    response = exception_handler(exc, {})
    error = dict(response.data["error"]) if response is not None else {"message": str(exc)}
    error["status"] = response.status_code if response is not None else 400
    return error


# --- a transactional distribution's invites and transactions ------------------------------
class TransactionalDistributionMixin(BrandScopedAPIMixin):
    def distribution(self) -> Distribution:
        return self.get_scoped(
            Distribution.objects.select_related("project__brand"),
            pk=self.kwargs["pk"],
            kind=Distribution.Kind.TRANSACTIONAL,
        )


class TransactionalInviteMetricsSerializer(serializers.Serializer):
    distribution = serializers.IntegerField()
    label = serializers.CharField()
    created = serializers.IntegerField()
    opened = serializers.IntegerField()
    started = serializers.IntegerField()
    completed = serializers.IntegerField()
    expired = serializers.IntegerField()


class TransactionalInvites(TransactionalDistributionMixin, APIView):
    @extend_schema(responses=TransactionalInviteMetricsSerializer)
    def get(self, request, pk):
        """Invites of a transactional distribution: created, opened, started, completed,
        expired (another brand's or a non-transactional distribution answers 404)."""
        return ApiResponse(transactional_invite_metrics(distribution=self.distribution()))


class TransactionsCsv(TransactionalDistributionMixin, APIView):
    @extend_schema(parameters=CSV_PARAMETERS, responses={(200, "text/csv"): OpenApiTypes.STR})
    def get(self, request, pk):
        """A transactional distribution's history: one row per transaction, as CSV."""
        distribution = self.distribution()
        rows = transaction_history_rows(
            distribution=distribution, zone=distribution.project.brand.zone
        )
        return csv_response(
            request,
            header=TRANSACTIONS_HEADER,
            rows=rows,
            filename=f"distribution-{pk}-transactions.csv",
        )
