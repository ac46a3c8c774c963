"""What may be stored in a person's or a participant's fields and metadata, on every path.

One rule for CSV imports, the bulk API, the people and participants API, transactional links'
contacts and the pages: the limits below, no value that a spreadsheet would run as a formula
(OWASP CSV injection; an apostrophe first keeps such text, stored with it), and metadata as
flat fields, one per CSV column: a name and a scalar value, stored as text.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

from brands.api.parsers import NAME_MESSAGE, UNSTORABLE, UNSTORABLE_MESSAGE, shown
from brands.models import time_zone_names

# Text fields of a person (and a participant's role), in characters.
MAX_LENGTHS = {
    "person_id": 128,
    "first_name": 150,
    "last_name": 150,
    "email": 254,
    "username": 150,
    "role": 120,
}
METADATA_KEY_MAX = 100
METADATA_VALUE_MAX = 1000
# Fields in one metadata object (one person's, or one participant's): a CSV with more metadata
# columns than this is refused, and so is an API call.
METADATA_FIELDS_MAX = 200
REPORT_VALUE_CHARS = 80

_PLAIN_NUMBER = re.compile(r"[+-]?[\d\s.,]*\d[\d\s.,]*%?")
FORMULA_CHARS = "=+-@"


def formula_start(value: str) -> str | None:
    """The character that makes ``value`` run as a formula in a spreadsheet, if any.

    ``=`` and ``@`` always do; ``+`` and ``-`` do unless the cell is a plain number (-5, +3.2,
    +44 20 7946 0958) or the character alone.
    """
    if not value:
        return None
    first = value[0]
    if first in "=@":
        return first
    if first in "+-" and len(value) > 1 and not _PLAIN_NUMBER.fullmatch(value):
        return first
    return None


def formula_refusal(value: str) -> str | None:
    """Why ``value`` may not be stored (it would run as a formula), or None when it may."""
    char = formula_start(value)
    if not char:
        return None
    return (
        f"Starts with '{char}', which a spreadsheet would run as a formula. Remove the "
        f"'{char}', or put an apostrophe before it ('{value[:20]}{'…' * (len(value) > 20)}) "
        "to keep it as text (it is then stored with the apostrophe)."
    )


def shorten(value: str) -> str:
    return value if len(value) <= REPORT_VALUE_CHARS else value[: REPORT_VALUE_CHARS - 1] + "…"


def text_refusal(name: str, value: str) -> str | None:
    """Why the (stripped) text ``value`` of the person field ``name`` may not be stored."""
    if value and value[0] in FORMULA_CHARS:
        refusal = formula_refusal(value)
        if refusal:
            return refusal
    limit = MAX_LENGTHS.get(name)
    if limit is not None and len(value) > limit:
        return f"Longer than {limit} characters."
    if UNSTORABLE.search(value):
        return UNSTORABLE_MESSAGE
    return None


def time_zone_error(value: str) -> str | None:
    """Why ``value`` is not a time zone a person may have ("" is: none, use the phone's)."""
    if not value or value in time_zone_names():
        return None
    return f"'{shorten(value)}' is not an IANA time zone name (such as America/New_York)."


def metadata_key_refusal(name: str) -> str | None:
    """Why ``name`` (spaces already collapsed) cannot name a metadata field."""
    if not name or len(name) > METADATA_KEY_MAX:
        return f"A field name needs 1 to {METADATA_KEY_MAX} characters."
    if formula_start(name):
        return "A field name cannot start like a formula."
    if UNSTORABLE.search(name):
        return NAME_MESSAGE
    return None


NOT_SCALAR = (
    "Must be text, a number, true/false or null: metadata are flat fields (one per CSV column)."
)


def metadata_text(value: Any) -> str | None:
    """A metadata value as the text that is stored (numbers as written, true/false, null as
    empty), or None when it is not a scalar."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def metadata_value_refusal(value: str) -> str | None:
    """Why the (stripped) text ``value`` cannot be a metadata value."""
    if value and value[0] in FORMULA_CHARS:
        refusal = formula_refusal(value)
        if refusal:
            return refusal
    if len(value) > METADATA_VALUE_MAX:
        return f"Longer than {METADATA_VALUE_MAX} characters."
    if UNSTORABLE.search(value):
        return UNSTORABLE_MESSAGE
    return None


def metadata_clean(raw: Any, *, field: str = "metadata") -> dict[str, str]:
    """``raw`` (an API's metadata object) as it is stored: field names with spaces collapsed,
    values as stripped text. Raises ValidationError naming ``field`` or ``field.<name>``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError({field: "Must be an object of field names to values."})
    if len(raw) > METADATA_FIELDS_MAX:
        raise ValidationError(
            {field: f"At most {METADATA_FIELDS_MAX} fields (this one has {len(raw):,})."}
        )
    clean: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key, value in raw.items():
        name = " ".join(str(key).split())
        label = f"{field}.{shown(name)}"
        refusal = metadata_key_refusal(name)
        if refusal is None:
            text = metadata_text(value)
            if text is None:
                refusal = NOT_SCALAR
            else:
                text = text.strip()
                refusal = metadata_value_refusal(text)
        if refusal is not None:
            errors[label] = refusal
            continue
        clean[name] = text
    if errors:
        raise ValidationError(errors)
    return clean
