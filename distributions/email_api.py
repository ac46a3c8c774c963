"""REST API for a brand's email settings (brand admins): the transport (platform mailer or own
SMTP relay), default sender, and the From domains with their DKIM keys. Secrets are write-only
and answered redacted. The weekly limit is shown, never changed here (the platform operator's).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.fields import redact
from brands.roles import Role
from distributions.email_services import (
    email_account_for,
    email_account_update,
    email_domain_create,
    email_domain_update,
    weekly_limit_for,
)
from distributions.models import EmailAccount, EmailDomain
from distributions.providers.base import ProviderError
from distributions.providers.registry import channel_provider_for


class EmailSettingsSerializer(StrictSerializer):
    transport = serializers.ChoiceField(choices=EmailAccount.Transport.choices, required=False)
    smtp_host = serializers.CharField(max_length=255, required=False, allow_blank=True)
    smtp_port = serializers.IntegerField(min_value=1, max_value=65535, required=False)
    smtp_security = serializers.ChoiceField(choices=EmailAccount.Security.choices, required=False)
    smtp_username = serializers.CharField(max_length=255, required=False, allow_blank=True)
    smtp_password = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Write only; empty keeps the stored password.",
    )
    smtp_password_redacted = serializers.CharField(read_only=True)
    default_from_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    default_from_address = serializers.EmailField(required=False, allow_blank=True)
    default_reply_to = serializers.EmailField(required=False, allow_blank=True)
    messages_per_second = serializers.IntegerField(min_value=1, max_value=10_000, required=False)
    weekly_limit = serializers.IntegerField(
        read_only=True, help_text="Emails per 7 days, set by the platform operator."
    )

    def to_representation(self, instance: EmailAccount):
        data = super().to_representation(instance)
        data["weekly_limit"] = weekly_limit_for(instance.brand)
        return data


class EmailSettingsAPIView(BrandScopedAPIMixin, APIView):
    """The brand's email settings (brand admins). The SMTP password is never returned."""

    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN
    serializer_class = EmailSettingsSerializer

    def get(self, request):
        return Response(EmailSettingsSerializer(email_account_for(self.brand)).data)

    def put(self, request):
        payload = EmailSettingsSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        account = email_account_update(
            brand=self.brand, actor=self.actor(), **payload.validated_data
        )
        return Response(EmailSettingsSerializer(account).data)


class EmailSettingsCheckAPIView(BrandScopedAPIMixin, APIView):
    """Connect (and log in) to the brand's mail server now: ``{"ok": true}`` or the reply."""

    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        provider = channel_provider_for(email_account_for(self.brand), "email")
        try:
            provider.check_credentials()
        except ProviderError as exc:
            return Response({"ok": False, "error": str(exc)})
        return Response({"ok": True, "error": ""})


class EmailDomainSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    domain = serializers.CharField(max_length=253)
    verified = serializers.BooleanField(read_only=True)
    verified_at = serializers.DateTimeField(read_only=True, allow_null=True)
    dkim_selector = serializers.CharField(max_length=63, required=False, allow_blank=True)
    dkim_private_key = serializers.CharField(
        max_length=10_000,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Unencrypted PEM RSA key. Write only; encrypted at rest.",
    )
    dkim_private_key_redacted = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)

    def get_dkim_private_key_redacted(self, instance) -> str:
        return redact(instance.dkim_private_key)


class EmailDomainUpdateSerializer(StrictSerializer):
    dkim_selector = serializers.CharField(max_length=63, required=False, allow_blank=True)
    dkim_private_key = serializers.CharField(
        max_length=10_000, required=False, allow_blank=True, write_only=True
    )


class EmailDomainViewSet(
    BrandScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """From domains of the brand. Verified by the platform operator; DKIM keys write-only."""

    queryset = EmailDomain.objects.all()
    serializer_class = EmailDomainSerializer
    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def create(self, request):
        payload = EmailDomainSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        domain = email_domain_create(brand=self.brand, actor=self.actor(), **payload.validated_data)
        return Response(EmailDomainSerializer(domain).data, status=201)

    @extend_schema(request=EmailDomainUpdateSerializer, responses=EmailDomainSerializer)
    def partial_update(self, request, pk=None):
        payload = EmailDomainUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        domain = email_domain_update(
            domain=self.get_object(), actor=self.actor(), **payload.validated_data
        )
        return Response(EmailDomainSerializer(domain).data)
