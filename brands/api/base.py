"""Base classes every API view builds on: brand scoping and strict input."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import QueryDict
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from brands.api.query import query_check
from brands.permissions import resolve_api_context
from brands.scoping import get_for_brand


class BrandScopedAPIMixin:
    """Scopes ``get_queryset`` to the caller's brand; object lookups 404 across brands.

    Subclasses set ``queryset`` (or override ``base_queryset``) and, if needed, ``read_role``,
    ``write_role`` or ``role_for_method``.
    """

    @property
    def brand(self):
        return resolve_api_context(self.request).brand

    @property
    def role(self):
        return resolve_api_context(self.request).role

    # Ids are 64-bit: a longer number in a path names nothing (and overflows the database).
    MAX_ID = 2**63 - 1

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        query_check(request)  # after authentication: a caller without a key gets 401 first
        for value in kwargs.values():
            if isinstance(value, int | str) and _is_number(value) and int(value) > self.MAX_ID:
                raise NotFound()

    def base_queryset(self):
        return self.queryset.all()

    def get_queryset(self):
        return self.base_queryset().for_brand(self.brand)

    def get_scoped(self, source, **lookup):
        return get_for_brand(source, brand=self.brand, **lookup)

    def actor(self):
        user = self.request.user
        return user if getattr(user, "pk", None) else None


# JSON types a field takes, as the schema says: DRF would also read 12 as "12", "12" as 12 and
# "yes" as true, which makes the schema a lie. (bool is an int in Python: refused apart.)
_JSON_TYPES: tuple[tuple[type, tuple[type, ...], str], ...] = (
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.CharField, (str,), "a string"),
    (serializers.IntegerField, (int,), "a whole number"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.DateTimeField, (str,), "a date and time string (ISO 8601)"),
    (serializers.DateField, (str,), "a date string (YYYY-MM-DD)"),
    (serializers.ListField, (list,), "a list"),
)


def _json_type_refusal(field, value) -> str | None:
    if value is None:
        return None  # the field's own allow_null decides
    for field_class, types, words in _JSON_TYPES:
        if isinstance(field, field_class):
            wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
            return f"Must be {words}." if wrong else None
    return None


INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _bound_integers(field) -> None:
    """Whole numbers the database can hold (64-bit) unless the field says less: a larger one
    is refused naming the field (it overflowed the query: 500), and the schema says so."""
    if isinstance(field, serializers.ListField):
        _bound_integers(field.child)
    if not isinstance(field, serializers.IntegerField):
        return
    if field.max_value is None:
        field.max_value = INT64_MAX
        field.validators.append(MaxValueValidator(INT64_MAX))
    if field.min_value is None:
        field.min_value = INT64_MIN
        field.validators.append(MinValueValidator(INT64_MIN))


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, instead of silently dropping them, and values of
    another JSON type than the field's (the string "12" for a number, 12 for a string)."""

    def get_fields(self):
        fields = super().get_fields()
        for field in fields.values():
            _bound_integers(field)
        return fields

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    dict.fromkeys(unknown, "Unknown field."), code="unknown_field"
                )
            # Form fields are all text (the import upload is multipart): JSON types only.
            typed = not isinstance(data, QueryDict)
            mistyped = typed and {
                name: refusal
                for name, field in self.fields.items()
                if name in data
                and not field.read_only
                and (refusal := _json_type_refusal(field, data[name]))
            }
            if mistyped:
                raise serializers.ValidationError(mistyped, code="invalid")
        if isinstance(data, QueryDict):
            # DRF reads an empty form value as "not given" (the default applies); the schema
            # says the value must be one of the field's: refuse it, as JSON's "" is refused.
            blank = {
                name: "This field may not be blank."
                for name, field in self.fields.items()
                if data.get(name) == ""
                and not field.read_only
                and not getattr(field, "allow_blank", False)
            }
            if blank:
                raise serializers.ValidationError(blank, code="blank")
        return super().to_internal_value(data)


class StrictModelSerializer(StrictSerializer, serializers.ModelSerializer):
    pass


def _is_number(value) -> bool:
    text = str(value)
    return text.isascii() and text.isdigit()


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?$",
        "example": "21:00",
        "description": "A local wall-clock time, HH:MM or HH:MM:SS, without a zone.",
    }
)
class LocalTimeField(serializers.TimeField):
    """A time of day in someone's local time (quiet hours, send windows): no zone, so the
    schema says so instead of JSON Schema's "time" format, which requires an offset."""
