"""Phone numbers: parsed with ``phonenumbers`` in a default country, stored as E.164."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers.phonemetadata import PhoneMetadata


class PhoneError(ValueError):
    """A value that cannot be a valid phone number; the message names the value."""


def phone_to_e164(raw: str | None, *, default_country: str) -> str:
    """Return ``raw`` as E.164, or "" for an empty value; raise PhoneError if it is not valid.

    ``default_country`` (ISO 3166 alpha-2) reads numbers written without ``+country``.
    """
    value = (raw or "").strip()
    if not value:
        return ""
    fast = _fast_e164(value, default_country)
    if fast:
        return fast
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


_SEPARATORS = str.maketrans("", "", " -.()/\u00a0")
_INTERNATIONAL = re.compile(r"\+[1-9]\d{6,14}")


def _fast_e164(value: str, default_country: str = "") -> str | None:
    """The E.164 form of ``value``, or None to take the full parser.

    Imports spend most of their time here, and the full ``phonenumbers.parse`` +
    ``is_valid_number`` costs many times this path (docs/benchmarks.md, "Measurements behind
    code choices"). It answers only when the full parser would give the
    same answer, and leaves everything else (extensions, letters, national prefixes to strip,
    numbers of another region sharing the country code…) to the full parser:

    - ``+<digits>`` whose main region has no leading-digit rule and no national prefix at the
      start of the national number, valid for that region;
    - national digits in ``default_country`` that start with neither 0, the national prefix,
      the international prefix nor the country code, valid for that region.
    """
    compact = value.translate(_SEPARATORS)
    if compact[:1] == "+":
        if not _INTERNATIONAL.fullmatch(compact):
            return None
        digits = compact[1:]
        for length in (1, 2, 3):
            regions = _CODE_REGIONS.get(digits[:length])
            if regions:
                break
        else:
            return None
        region = _region(regions[0])
        national = digits[length:]
        if region is None or not national:
            return None
    else:
        if not (default_country and compact.isascii() and compact.isdigit()):
            return None
        if compact[0] == "0":
            return None
        region = _region(default_country.upper())
        if region is None:
            return None
        national = compact
        if national.startswith(region.code_text):
            return None
        if region.international is not None and region.international.match(national):
            return None
    if region.national_prefix is not None and region.national_prefix.match(national):
        return None
    if not _valid_for_region(national, region):
        return None
    return f"+{region.code_text}{national}"


# Country calling code (as text) -> its regions, main region first.
_CODE_REGIONS = {
    str(code): regions for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()
}


@dataclass(frozen=True, slots=True)
class _Region:
    """What the fast path needs of one region's metadata, compiled once."""

    code_text: str
    international: re.Pattern | None
    national_prefix: re.Pattern | None
    general: tuple | None  # (possible lengths or None, pattern) of each description
    quick: tuple  # mobile and fixed line
    metadata: PhoneMetadata


_REGIONS: dict[str, _Region | None] = {}


def _region(code: str) -> _Region | None:
    """The region's compiled rules; None when the fast path does not apply to it."""
    try:
        return _REGIONS[code]
    except KeyError:
        pass
    metadata = PhoneMetadata.metadata_for_region(code)
    region = None
    if metadata is not None and not metadata.leading_digits and metadata.country_code:
        region = _Region(
            code_text=str(metadata.country_code),
            international=_compiled(metadata.international_prefix),
            national_prefix=_compiled(metadata.national_prefix_for_parsing),
            general=_description(metadata.general_desc),
            quick=tuple(
                d for d in (_description(metadata.mobile), _description(metadata.fixed_line)) if d
            ),
            metadata=metadata,
        )
    _REGIONS[code] = region
    return region


def _compiled(pattern: str | None) -> re.Pattern | None:
    return re.compile(pattern) if pattern else None


def _description(desc) -> tuple | None:
    """(possible lengths or None, compiled pattern) of a number description, or None."""
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = frozenset(desc.possible_length) if desc.possible_length else None
    return lengths, re.compile(desc.national_number_pattern)


def _matches(national: str, description: tuple | None) -> bool:
    """``phonenumbers``' own test of a number against one description of its region."""
    if description is None:
        return False
    lengths, pattern = description
    if lengths is not None and len(national) not in lengths:
        return False
    return pattern.fullmatch(national) is not None


def _valid_for_region(national: str, region: _Region) -> bool:
    """Same answer as ``is_valid_number_for_region``, cheaper for the usual numbers.

    A number is valid when it matches its region's general pattern and any one number type;
    mobile and fixed line are tried first (two patterns instead of about ten), and only a
    number matching neither goes through the full check.
    """
    if not _matches(national, region.general):
        return False
    for description in region.quick:
        if _matches(national, description):
            return True
    code = int(region.code_text)
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    zeros = len(national) - len(national.lstrip("0"))
    if zeros:
        number.italian_leading_zero = True
        if zeros > 1:
            number.number_of_leading_zeros = zeros
    if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != (
        f"+{code}{national}"
    ):
        return False
    return phonenumbers.is_valid_number_for_region(number, region.metadata.id)
