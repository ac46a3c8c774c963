"""Base classes every API view builds on: brand scoping and strict input."""

from __future__ import annotations

from rest_framework import serializers

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

    def base_queryset(self):
        return self.queryset.all()

    def get_queryset(self):
        return self.base_queryset().for_brand(self.brand)

    def get_scoped(self, source, **lookup):
        return get_for_brand(source, brand=self.brand, **lookup)

    def actor(self):
        user = self.request.user
        return user if getattr(user, "pk", None) else None


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, instead of silently dropping them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    dict.fromkeys(unknown, "Unknown field."), code="unknown_field"
                )
        return super().to_internal_value(data)


class StrictModelSerializer(StrictSerializer, serializers.ModelSerializer):
    pass
