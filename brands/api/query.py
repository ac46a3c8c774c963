"""Query strings are checked against the OpenAPI schema's own parameters, so that the two
cannot drift: an unknown parameter or a value outside its declared type, enum or bounds answers
400 naming the parameter, as an unknown body field does.

The table of parameters is built once per process, from drf-spectacular's generator (about
1.5 s), and only when a request first has a query string.
"""

from __future__ import annotations

import functools
import re
from datetime import date
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import ValidationError

from brands.api.parsers import shown


@functools.cache
def _parameters() -> dict[tuple[Any, str], dict[str, dict]]:
    """``{(view callback, METHOD): {name: schema}}`` for every operation of the schema."""
    from drf_spectacular.generators import SchemaGenerator

    generator = SchemaGenerator()
    schema = generator.get_schema(request=None, public=True)
    # The schema names path parameters its own way ({pk} becomes {id}): match without names.
    paths = {_unnamed(path): item for path, item in schema["paths"].items()}
    table: dict[tuple[Any, str], dict[str, dict]] = {}
    for path, _regex, method, callback in generator.endpoints:
        operation = paths.get(_unnamed(path), {}).get(method.lower())
        if operation is None:
            continue
        table[(callback, method)] = {
            parameter["name"]: parameter.get("schema", {})
            for parameter in operation.get("parameters", [])
            if parameter.get("in") == "query"
        }
    return table


def _unnamed(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def query_check(request) -> None:
    """Raise ValidationError naming each query parameter the operation does not declare or
    whose value its schema refuses. Requests without a query string cost nothing."""
    if not request.query_params:
        return
    match = getattr(request, "resolver_match", None)
    declared = _parameters().get((getattr(match, "func", None), request.method))
    if declared is None:  # not an operation of the schema (HEAD, OPTIONS)
        return
    errors: dict[str, str] = {}
    for name in request.query_params:
        schema = declared.get(name)
        if schema is None:
            known = ", ".join(sorted(declared)) or "none"
            errors[name] = f"Unknown query parameter. This operation takes: {known}."
            continue
        values = request.query_params.getlist(name)
        if schema.get("type") != "array" and len(values) > 1:
            errors[name] = "Give this parameter once."
            continue
        item_schema = schema.get("items", {}) if schema.get("type") == "array" else schema
        for value in values:
            problem = _refusal(value, item_schema)
            if problem:
                errors[name] = problem
                break
    if errors:
        raise ValidationError(errors)


NUMBERS = {"integer": (int, "a whole number"), "number": (float, "a number")}


def _refusal(value: str, schema: dict) -> str | None:
    kind = schema.get("type")
    if "enum" in schema and value not in [str(choice) for choice in schema["enum"]]:
        return f"'{shown(value)}' is not one of: {', '.join(map(str, schema['enum']))}."
    if kind in NUMBERS:
        parse, words = NUMBERS[kind]
        try:
            number = parse(value)
        except ValueError:
            return f"'{shown(value)}' is not {words}."
        return _bounds(number, schema)
    if kind == "boolean" and value not in ("true", "false"):
        return "Must be true or false."
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date":
            try:
                date.fromisoformat(value)
            except ValueError:
                return f"'{shown(value)}' is not a date (YYYY-MM-DD)."
        elif fmt == "date-time":
            try:
                parsed = parse_datetime(value)
            except ValueError:
                parsed = None
            if parsed is None:
                return f"'{shown(value)}' is not a date and time (ISO 8601)."
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"At most {schema['maxLength']} characters."
    return None


def _bounds(number: float, schema: dict) -> str | None:
    if "minimum" in schema and number < schema["minimum"]:
        return f"Must be at least {schema['minimum']}."
    if "maximum" in schema and number > schema["maximum"]:
        return f"Must be at most {schema['maximum']}."
    return None
