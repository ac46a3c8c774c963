"""The OpenAPI schema says what the API does: its authentication and, once for every operation,
the errors it can answer (``{"error": {"code", "message", "fields"}}``, brands.api.errors)."""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import force_instance

from brands.api.base import StrictSerializer
from brands.api.pagination import Pagination

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error of the API.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "description": "invalid, not_found, permission_denied, not_authenticated, "
                    "authentication_failed, throttled, conflict, too_large, …",
                },
                "message": {"type": "string", "description": "The first problem, in words."},
                "fields": {
                    "type": "object",
                    "additionalProperties": True,
                    "description": "The offending fields (a path inside a JSON body: "
                    "metadata.Team, records[3].email) and what is wrong with each.",
                },
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}
# Answers any operation may give, and those of operations that take a body.
ANY_OPERATION = {
    "400": "Invalid input (a query parameter, the body): `fields` names each problem.",
    "401": "No API key, or an invalid or revoked one.",
    "403": "The key's role may not do this.",
    "404": "No such object in the key's brand (another brand's answers the same).",
    "406": "The Accept header asks for a format this operation does not produce.",
    "429": "Too many calls for this key: `Retry-After` says when to try again.",
}
WITH_BODY = {
    "409": "The request conflicts with the object's state (see `message`).",
    "413": "The body is larger than the API takes (see docs/api.md, Limits).",
    "415": "The body is not in a format this operation reads.",
}
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
PAGE_BOUNDS = {
    "page": {"type": "integer", "minimum": 1},
    "page_size": {"type": "integer", "minimum": 1, "maximum": Pagination.max_page_size},
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, saying what StrictSerializer does: a request body with a field it
    does not know is refused (``additionalProperties: false``)."""

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        from rest_framework import serializers

        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (
            isinstance(schema, dict)
            and direction == "request"
            and isinstance(field, serializers.CharField)
            and not field.allow_blank
            and field.trim_whitespace
            and "pattern" not in schema
        ):
            schema["pattern"] = r"\S"  # spaces are trimmed: something else must remain
        if (
            isinstance(schema, dict)
            and isinstance(field, serializers.ListField | serializers.ListSerializer)
            and not field.allow_empty
        ):
            schema["minItems"] = max(schema.get("minItems", 0), 1)
        return schema

    def _map_basic_serializer(self, serializer, direction):

        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(force_instance(serializer), StrictSerializer):
            schema["additionalProperties"] = False
        return schema


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """``Authorization: Bearer rly_<prefix>_<secret>`` (brands.authentication)."""

    target_class = "brands.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "rly_<prefix>_<secret>",
            "description": "An API key of the brand, made on the Settings page or with "
            "POST /api/v1/api-keys/.",
        }


def document_errors(result, generator, request, public):
    """Postprocessing hook: the error shape as a component, and the error answers of every
    operation (those it already documents, such as the bulk upsert's 400 report, are kept)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter["name"] in PAGE_BOUNDS:
                    # Pagination's parameters, also where a view declares them by hand.
                    parameter.setdefault("schema", {}).update(PAGE_BOUNDS[parameter["name"]])
                _bound_integer(parameter.get("schema", {}))
                _bound_integer(parameter.get("schema", {}).get("items", {}))
            answers = dict(ANY_OPERATION)
            if method in WRITE_METHODS:
                answers.update(WITH_BODY)
            responses = operation["responses"]
            for status, description in answers.items():
                responses.setdefault(status, {"description": description, "content": content})
    return result


def _bound_integer(schema: dict) -> None:
    """Integer parameters (ids) are 64-bit: larger ones name nothing (the API answers 404 or
    400), and the schema says so."""
    if schema.get("type") == "integer":
        schema.setdefault("maximum", 2**63 - 1)
        schema.setdefault("minimum", -(2**63))
