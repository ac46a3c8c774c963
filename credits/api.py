"""REST API for credits: the balance, the ledger, grants and the licence usage report.

Brand admins only, except the balance (any member: the schedule page shows it to everyone who
can send). Every query is scoped to the caller's brand.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from credits.models import CreditEntry
from credits.selectors import credits_balance, ledger_list, usage_period, usage_report
from credits.services import credits_grant

Kind = CreditEntry.Kind
IDEMPOTENCY_HEADER = "HTTP_IDEMPOTENCY_KEY"


class BalanceSerializer(serializers.Serializer):
    balance = serializers.DecimalField(max_digits=18, decimal_places=4)
    reserved = serializers.DecimalField(max_digits=18, decimal_places=4)
    available = serializers.DecimalField(max_digits=18, decimal_places=4)
    self_service = serializers.BooleanField()


class CreditEntrySerializer(serializers.ModelSerializer):
    distribution = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    project = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    message = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = CreditEntry
        fields = [
            "id",
            "kind",
            "amount",
            "held",
            "distribution",
            "project",
            "message",
            "country",
            "segments",
            "rate",
            "actor",
            "note",
            "created_at",
        ]


class GrantSerializer(StrictSerializer):
    # A string, so that "abc" or "1e400" reach the service and get its clear message.
    amount = serializers.CharField(max_length=40, help_text='Credits to add, e.g. "500".')
    kind = serializers.ChoiceField(
        choices=[Kind.GRANT, Kind.PURCHASE], default=Kind.PURCHASE, required=False
    )
    note = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class CreditBalanceView(BrandScopedAPIMixin, APIView):
    """The brand's credits: balance (owned), reserved (held by sending distributions) and
    available (what new distributions can use). Derived from the ledger."""

    read_role = Role.VIEWER

    @extend_schema(responses={200: BalanceSerializer})
    def get(self, request):
        return Response(BalanceSerializer(credits_balance(brand=self.brand).as_dict()).data)


class CreditEntryList(BrandScopedAPIMixin, generics.ListAPIView):
    """The ledger, newest first. Filters: ``kind`` (repeatable), ``distribution``, ``start``
    and ``end`` (dates, brand's time zone)."""

    serializer_class = CreditEntrySerializer
    read_role = Role.BRAND_ADMIN
    queryset = CreditEntry.objects.all()

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, many=True, enum=Kind.values),
            OpenApiParameter("distribution", int),
            OpenApiParameter("start", OpenApiTypes.DATE, description="YYYY-MM-DD"),
            OpenApiParameter("end", OpenApiTypes.DATE, description="YYYY-MM-DD"),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        params = self.request.query_params
        kinds = params.getlist("kind")
        unknown = [kind for kind in kinds if kind not in Kind.values]
        if unknown:
            raise serializers.ValidationError({"kind": f"Unknown kind '{unknown[0]}'."})
        distribution = params.get("distribution") or None
        if distribution is not None and not distribution.isdigit():
            raise serializers.ValidationError({"distribution": "Give a distribution id."})
        start = end = None
        if params.get("start") or params.get("end"):
            start, end = usage_period(
                brand=self.brand, start=params.get("start"), end=params.get("end")
            )
        return ledger_list(
            brand=self.brand,
            kinds=kinds,
            distribution_id=int(distribution) if distribution else None,
            start=start,
            end=end,
        )


class CreditGrantCreate(BrandScopedAPIMixin, APIView):
    """Add credits (a purchase or a grant). Send an ``Idempotency-Key`` header to retry
    safely: the same key answers the first grant (200) instead of adding credits twice."""

    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    @extend_schema(
        request=GrantSerializer,
        responses={201: CreditEntrySerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, location=OpenApiParameter.HEADER)],
    )
    def post(self, request):
        serializer = GrantSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = request.META.get(IDEMPOTENCY_HEADER, "")
        before = CreditEntry.objects.filter(brand=self.brand, idempotency_key=key).exists()
        entry = credits_grant(
            brand=self.brand,
            actor=self.actor(),
            idempotency_key=key,
            **serializer.validated_data,
        )
        data = CreditEntrySerializer(entry).data
        data["balance"] = BalanceSerializer(credits_balance(brand=self.brand).as_dict()).data
        return Response(data, status=200 if key and before else 201)


class CreditUsageView(BrandScopedAPIMixin, APIView):
    """The licence usage report: credits consumed over a period (default: this month), what
    remains, by day, by project and by country. ``start``/``end``: YYYY-MM-DD, inclusive."""

    read_role = Role.BRAND_ADMIN

    @extend_schema(
        parameters=[
            OpenApiParameter("start", OpenApiTypes.DATE, description="YYYY-MM-DD"),
            OpenApiParameter("end", OpenApiTypes.DATE, description="YYYY-MM-DD"),
        ],
        responses={200: dict},
    )
    def get(self, request):
        try:
            start, end = usage_period(
                brand=self.brand,
                start=request.query_params.get("start"),
                end=request.query_params.get("end"),
            )
        except ValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        report = usage_report(brand=self.brand, start=start, end=end)
        return Response(_jsonable(report))


def _jsonable(value):
    """Dates as ISO strings and Decimals as strings (like DRF's DecimalField)."""
    from datetime import date
    from decimal import Decimal

    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, Decimal):
        return str(value.quantize(Decimal("0.0001")))
    if isinstance(value, date):
        return value.isoformat()
    return value
