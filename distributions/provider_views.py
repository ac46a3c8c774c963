"""The brand's SMS provider settings: a page and an API, brand admins only."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.views import View
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from brands.api.base import BrandScopedAPIMixin, StrictSerializer
from brands.roles import Role
from brands.views import BrandPageMixin
from distributions.provider_services import (
    MAX_MESSAGES_PER_SECOND,
    provider_account_get,
    provider_account_update,
    provider_subaccount_provision,
)
from distributions.providers.registry import provider_choices


class ProviderForm(forms.Form):
    provider = forms.ChoiceField(choices=())
    account_sid = forms.CharField(label="Account SID", max_length=64, required=False)
    auth_token = forms.CharField(
        label="Auth token",
        max_length=128,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the stored token. It is encrypted and never shown again.",
    )
    messaging_service_sid = forms.CharField(
        label="Messaging Service SID", max_length=64, required=False
    )
    default_sender = forms.CharField(
        label="Sender",
        max_length=32,
        required=False,
        help_text="E.164 number, short code or alphanumeric sender ID.",
    )
    messages_per_second = forms.IntegerField(
        label="Messages per second", min_value=1, max_value=MAX_MESSAGES_PER_SECOND
    )
    help_text = forms.CharField(label="Answer to HELP", max_length=300, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = provider_choices()


class ProviderSettingsView(BrandPageMixin, View):
    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN

    def get(self, request, form=None, status=200):
        account = provider_account_get(brand=self.brand)
        form = form or ProviderForm(
            initial={
                "provider": account.provider,
                "account_sid": account.account_sid,
                "messaging_service_sid": account.messaging_service_sid,
                "default_sender": account.default_sender,
                "messages_per_second": account.messages_per_second,
                "help_text": account.help_text,
            }
        )
        return render(
            request,
            "distributions/provider_settings.html",
            {
                "form": form,
                "account": account,
                "brand": self.brand,
            },
            status=status,
        )

    def post(self, request):
        if request.POST.get("action") == "provision":
            try:
                provider_subaccount_provision(brand=self.brand, actor=request.user)
                messages.success(request, "Twilio sub-account created for this brand.")
            except ValidationError as exc:
                for error in exc.messages:
                    messages.error(request, error)
            return redirect("distributions:provider")
        form = ProviderForm(request.POST)
        if form.is_valid():
            try:
                provider_account_update(brand=self.brand, actor=request.user, **form.cleaned_data)
                messages.success(request, "SMS provider settings saved.")
                return redirect("distributions:provider")
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
        return self.get(request, form=form, status=400)


class ProviderSerializer(StrictSerializer):
    provider = serializers.ChoiceField(choices=provider_choices())
    account_sid = serializers.CharField(max_length=64, required=False, allow_blank=True)
    auth_token = serializers.CharField(
        max_length=128,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text="Write only; empty keeps the stored token.",
    )
    auth_token_redacted = serializers.CharField(read_only=True)
    messaging_service_sid = serializers.CharField(max_length=64, required=False, allow_blank=True)
    default_sender = serializers.CharField(max_length=32, required=False, allow_blank=True)
    messages_per_second = serializers.IntegerField(
        min_value=1, max_value=MAX_MESSAGES_PER_SECOND, required=False
    )
    help_text = serializers.CharField(max_length=300, required=False, allow_blank=True)


class ProviderAPIView(BrandScopedAPIMixin, APIView):
    """The brand's SMS provider (brand admins). The auth token is never returned."""

    read_role = Role.BRAND_ADMIN
    write_role = Role.BRAND_ADMIN
    serializer_class = ProviderSerializer

    def get(self, request):
        return Response(ProviderSerializer(provider_account_get(brand=self.brand)).data)

    def put(self, request):
        payload = ProviderSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        account = provider_account_update(
            brand=self.brand, actor=self.actor(), **payload.validated_data
        )
        return Response(ProviderSerializer(account).data)
