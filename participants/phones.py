"""Phone numbers: parsed with ``phonenumbers`` in a default country, stored as E.164."""

from __future__ import annotations

import phonenumbers


class PhoneError(ValueError):
    """A value that cannot be a valid phone number; the message names the value."""


def phone_to_e164(raw: str | None, *, default_country: str) -> str:
    """Return ``raw`` as E.164, or "" for an empty value; raise PhoneError if it is not valid.

    ``default_country`` (ISO 3166 alpha-2) reads numbers written without ``+country``.
    """
    value = (raw or "").strip()
    if not value:
        return ""
    try:
        number = phonenumbers.parse(value, (default_country or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(f"'{value}' is not a phone number ({_reason(exc)}).") from exc
    if not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_country_code(number.country_code)
        region = default_country if region == phonenumbers.UNKNOWN_REGION else region
        raise PhoneError(f"'{value}' is not a valid phone number for {region}.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_country(e164: str) -> str:
    """ISO country of an E.164 number ("" when unknown)."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164)) or ""
    except phonenumbers.NumberParseException:
        return ""


def _reason(exc: phonenumbers.NumberParseException) -> str:
    return {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }.get(exc.error_type, "unreadable")
