"""Providers listed by dotted path in ``settings.RELAY_SMS_PROVIDERS``, loaded once."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from distributions.providers.base import SmsProvider


@cache
def provider_classes() -> dict[str, type[SmsProvider]]:
    classes: dict[str, type[SmsProvider]] = {}
    for path in settings.RELAY_SMS_PROVIDERS:
        cls = import_string(path)
        if cls.code in classes:
            raise ImproperlyConfigured(
                f"SMS provider code '{cls.code}' is used by {classes[cls.code]} and {cls}"
            )
        classes[cls.code] = cls
    return classes


@cache
def providers_warm() -> None:
    """Every provider class's ``warm``, once a process: a pump calls it before its first
    pick, so that a worker's first windows go as fast as the rest."""
    for cls in {*provider_classes().values(), email_provider_class()}:
        cls.warm()


def provider_choices() -> list[tuple[str, str]]:
    return [(code, cls.label) for code, cls in provider_classes().items()]


def provider_for(account) -> SmsProvider:
    try:
        cls = provider_classes()[account.provider]
    except KeyError as exc:
        raise ImproperlyConfigured(f"Unknown SMS provider '{account.provider}'") from exc
    return cls(account)


@cache
def email_provider_class() -> type[SmsProvider]:
    return import_string(settings.RELAY_EMAIL_PROVIDER)


def channel_provider_for(account, channel: str) -> SmsProvider:
    """The provider of ``account`` for ``channel`` (an ``EmailAccount`` for email)."""
    if channel == "email":
        return email_provider_class()(account)
    return provider_for(account)
