from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, LocalTimeField, StrictModelSerializer
from brands.models import ApiKey, Brand
from brands.roles import Role
from brands.services import api_key_create, api_key_revoke, brand_send_policies_update


class BrandSerializer(serializers.ModelSerializer):
    class Meta:
        model = Brand
        fields = ["id", "name", "slug", "default_country", "time_zone", "integration_model"]


class BrandPoliciesSerializer(serializers.ModelSerializer):
    quiet_hours_start = LocalTimeField(required=False, help_text="Start, recipient local time.")
    quiet_hours_end = LocalTimeField(required=False, help_text="End, recipient local time.")

    class Meta:
        model = Brand
        fields = [
            "time_zone",
            "quiet_hours_start",
            "quiet_hours_end",
            "quiet_hours_sms",
            "quiet_hours_email",
        ]
        extra_kwargs = {name: {"required": False} for name in fields}


class BrandPoliciesAPIView(BrandScopedAPIMixin, APIView):
    """The brand's send policies (docs/policies.md): its time zone and default quiet hours.
    Everyone reads them; brand admins change them."""

    read_role = Role.VIEWER
    write_role = Role.BRAND_ADMIN
    serializer_class = BrandPoliciesSerializer

    def get(self, request):
        return Response(BrandPoliciesSerializer(self.brand).data)

    @extend_schema(request=BrandPoliciesSerializer, responses={200: BrandPoliciesSerializer})
    def put(self, request):
        payload = BrandPoliciesSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        brand = brand_send_policies_update(brand=self.brand, **payload.validated_data)
        return Response(BrandPoliciesSerializer(brand).data)


class MeView(BrandScopedAPIMixin, APIView):
    """The brand and role this request acts as."""

    @extend_schema(
        responses={
            200: inline_serializer(
                "Me",
                fields={
                    "brand": BrandSerializer(),
                    "role": serializers.ChoiceField(choices=Role.choices),
                    "api_key": serializers.CharField(
                        allow_null=True, help_text="The key's prefix; null for a browser session."
                    ),
                },
            )
        }
    )
    def get(self, request):
        return Response(
            {
                "brand": BrandSerializer(self.brand).data,
                "role": self.role,
                "api_key": request.auth.prefix if isinstance(request.auth, ApiKey) else None,
            }
        )


class ApiKeySerializer(StrictModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "role", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]


class ApiKeyViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """API keys of the brand (brand admins only). The key is in the create answer, once."""

    queryset = ApiKey.objects.all()
    serializer_class = ApiKeySerializer
    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        issued = api_key_create(
            brand=self.brand, created_by=self.actor(), **serializer.validated_data
        )
        data = ApiKeySerializer(issued.api_key).data | {"key": issued.key}
        return Response(data, status=201)

    def perform_destroy(self, instance):
        api_key_revoke(api_key=instance)
