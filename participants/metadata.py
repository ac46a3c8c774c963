"""Metadata of people and participants: free ``field -> text`` pairs, with one protected field.

Field names are matched without regard to case or repeated spaces ("department" updates an
existing "Department"), keeping the spelling already stored. ``Opted out`` is written only by
the opt-out and opt-in flows: imports, bulk upserts and edits never set, change or erase it.
"""

from __future__ import annotations

from typing import Any

OPT_OUT_KEY = "Opted out"
OPT_OUT_YES = "Yes"


def normalise_key(name: str) -> str:
    """The form in which two field names are compared: casefolded, inner spaces collapsed."""
    return " ".join(str(name).split()).casefold()


PROTECTED_KEYS = frozenset({normalise_key(OPT_OUT_KEY)})


def is_protected(name: str) -> bool:
    return normalise_key(name) in PROTECTED_KEYS


def is_opted_out(metadata: dict[str, Any] | None) -> bool:
    """True when ``metadata`` carries ``Opted out: Yes`` (any spelling of the key or value)."""
    for key, value in (metadata or {}).items():
        if is_protected(key) and str(value).strip().casefold() in ("yes", "true", "1"):
            return True
    return False


def merge_metadata(
    current: dict[str, Any] | None, changes: dict[str, str], *, erase_empty: bool
) -> tuple[dict[str, Any], bool]:
    """Apply ``changes`` to a copy of ``current``; return ``(merged, changed)``.

    An empty value erases the field only when ``erase_empty``; protected fields are skipped.
    """
    merged = dict(current or {})
    if not changes:
        return merged, False
    index = {normalise_key(key): key for key in merged}
    changed = False
    for name, value in changes.items():
        norm = normalise_key(name)
        if norm in PROTECTED_KEYS:
            continue
        target = index.get(norm, name)
        if value == "" or value is None:
            if erase_empty and target in merged:
                del merged[target]
                index.pop(norm, None)
                changed = True
            continue
        if merged.get(target) != value:
            merged[target] = value
            index[norm] = target
            changed = True
    return merged, changed


def strip_protected(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if not is_protected(key)}
