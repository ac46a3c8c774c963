"""Writes for a brand's SMS provider settings (brand admins).

Credentials are checked with the provider before they are stored; the auth token is
encrypted at rest (``EncryptedTextField``) and only ever shown redacted. An empty token on
update keeps the stored one, so the form never needs to show it back.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from brands.models import Brand
from distributions.models import ProviderAccount
from distributions.providers.base import ProviderError
from distributions.providers.registry import provider_classes, provider_for
from distributions.providers.twilio import twilio_subaccount_provision
from distributions.sending import provider_account_for

SETTABLE = (
    "provider",
    "account_sid",
    "auth_token",
    "messaging_service_sid",
    "default_sender",
    "messages_per_second",
    "help_text",
)
MAX_MESSAGES_PER_SECOND = 10_000


def provider_account_get(*, brand: Brand) -> ProviderAccount:
    """The brand's settings, or unsaved defaults (the outbox) when it has none yet."""

    return provider_account_for(brand)


def provider_account_update(
    *, brand: Brand, actor=None, check: bool = True, **values
) -> ProviderAccount:
    unknown = set(values) - set(SETTABLE)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "Unknown field."))
    with transaction.atomic():
        account = ProviderAccount.objects.select_for_update().filter(brand=brand).first()
        account = account or ProviderAccount(brand=brand)
        for name, value in values.items():
            if name == "auth_token" and not value:
                continue  # keep the stored token
            setattr(account, name, value.strip() if isinstance(value, str) else value)
        _validate(account)
        if check and account.provider != "outbox":
            try:
                provider_for(account).check_credentials()
            except ProviderError as exc:
                raise ValidationError({"auth_token": str(exc)}) from exc
        account.save()
    return account


def _validate(account: ProviderAccount) -> None:
    errors = {}
    if account.provider not in provider_classes():
        errors["provider"] = (
            f"Unknown provider '{account.provider}'. Choose one of: "
            f"{', '.join(provider_classes())}."
        )
    if account.provider == "twilio":
        if account.account_sid and not (
            account.account_sid.startswith("AC") and len(account.account_sid) == 34
        ):
            errors["account_sid"] = "A Twilio Account SID starts with AC and has 34 characters."
        if account.messaging_service_sid and not account.messaging_service_sid.startswith("MG"):
            errors["messaging_service_sid"] = "A Messaging Service SID starts with MG."
        if account.brand.is_self_service:
            if not account.account_sid:
                errors["account_sid"] = "Self-service brands send with their own Account SID."
            if not account.auth_token:
                errors["auth_token"] = "Self-service brands send with their own auth token."  # noqa: S105
            if not (account.default_sender or account.messaging_service_sid):
                errors["default_sender"] = "Give a sender number or a Messaging Service SID."
    if not 1 <= int(account.messages_per_second or 0) <= MAX_MESSAGES_PER_SECOND:
        errors["messages_per_second"] = f"Between 1 and {MAX_MESSAGES_PER_SECOND}."
    if errors:
        raise ValidationError(errors)


def provider_subaccount_provision(*, brand: Brand, actor=None) -> ProviderAccount:
    """Sub-account model: create the brand's Twilio sub-account under the platform account."""

    if brand.integration_model != Brand.IntegrationModel.SUB_ACCOUNT:
        raise ValidationError({"provider": "Only sub-account brands get a Relay sub-account."})
    existing = ProviderAccount.objects.filter(brand=brand, provider="twilio").first()
    if existing and existing.account_sid:
        raise ValidationError({"account_sid": "This brand already has a Twilio sub-account."})
    try:
        sid, token = twilio_subaccount_provision(brand=brand)
    except ProviderError as exc:
        raise ValidationError({"provider": str(exc)}) from exc
    return provider_account_update(
        brand=brand,
        actor=actor,
        check=False,
        provider="twilio",
        account_sid=sid,
        auth_token=token,
    )
