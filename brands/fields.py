"""Encrypted storage for provider secrets (Fernet, keys from RELAY_ENCRYPTION_KEYS)."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.db import models

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def encryptor() -> MultiFernet:
    return _fernet(tuple(settings.RELAY_ENCRYPTION_KEYS))


def encrypt_text(value: str) -> str:
    return encryptor().encrypt(value.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return encryptor().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("stored secret cannot be decrypted with RELAY_ENCRYPTION_KEYS") from exc


def redact(value: str, *, visible: int = 4) -> str:
    """Show a secret as ``••••abcd``: enough to recognise it, never enough to use it."""
    if not value:
        return ""
    return "\u2022" * 8 + (value[-visible:] if len(value) > visible * 3 else "")


class EncryptedTextField(models.TextField):
    """A text field stored as a Fernet token; Python code only ever sees the plain text."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt_text(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt_text(value)
