"""One error shape for the whole API: ``{"error": {"code", "message", "fields"}}``."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is larger than the API takes."


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


def state_conflict(exc: DjangoValidationError) -> Conflict:
    """A service's ValidationError that is about the object's state, not the request (already
    cancelled, already opted in): the same request is valid once the state allows it, so 409,
    with the service's message and fields."""
    fields = _flatten(exc.message_dict) if hasattr(exc, "error_dict") else {}
    return Conflict({"detail": _first_message(fields) or exc.messages[0], **fields})


def _flatten(detail) -> str | list | dict:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        flat = [_flatten(item) for item in detail]
        return flat[0] if len(flat) == 1 and isinstance(flat[0], str) else flat
    return str(detail)


def _first_message(fields) -> str:
    if isinstance(fields, str):
        return fields
    if isinstance(fields, list) and fields:
        return _first_message(fields[0])
    if isinstance(fields, dict) and fields:
        key, value = next(iter(fields.items()))
        inner = _first_message(value)
        return inner if key == "non_field_errors" else f"{key}: {inner}"
    return "Invalid input."


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        detail = (
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, RequestDataTooBig):  # a form body over DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge()
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ValidationError({"non_field_errors": str(exc)})
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        if not isinstance(fields, dict):
            fields = {"non_field_errors": fields}
        body = {"code": "invalid", "message": _first_message(fields), "fields": fields}
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        extra_fields = {}
        if isinstance(detail, dict):
            extra_fields = _flatten({k: v for k, v in detail.items() if k != "detail"})
            detail = detail.get("detail", next(iter(detail.values()), ""))
            codes = codes.get("detail", "error") if isinstance(codes, dict) else codes
        body = {
            "code": codes if isinstance(codes, str) else "error",
            "message": str(detail),
            "fields": extra_fields,
        }
    return Response({"error": body}, status=response.status_code, headers=_keep_headers(response))


def _keep_headers(response) -> dict:
    return {k: v for k, v in response.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")}
