"""Piped fields: ``${first_name}``, ``${last_name}``, ``${email}``, ``${person_id}``,
``${username}``, ``${role}``, ``${link}``, ``${opt_out_link}`` and any metadata field by its name
(``${Team}``; the project value wins over the directory value). A metadata field is matched
by ``participants.metadata.normalise_key`` (case and repeated spaces ignored), the one rule that
conditions, the cost estimate and the send share.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from participants.metadata import normalise_key

PIPED = re.compile(r"\$\{\s*([^}]+?)\s*\}")
PERSON_FIELDS = ("first_name", "last_name", "email", "person_id", "username")
BUILTINS = (*PERSON_FIELDS, "role", "link", "opt_out_link")


def piped_fields(template: str) -> list[str]:
    return [match.group(1) for match in PIPED.finditer(template or "")]


def render(template: str, values: Mapping[str, str], metadata: Mapping[str, object]) -> str:
    """Replace every ``${name}``; unknown names render empty (a metadata value may be missing)."""
    lowered = {normalise_key(key): value for key, value in metadata.items()}

    def substitute(match: re.Match) -> str:
        name = match.group(1)
        if name in values:
            return values[name] or ""
        value = lowered.get(normalise_key(name))
        return "" if value is None else str(value)

    return PIPED.sub(substitute, template or "")


def recipient_values(
    *, person, participant, link: str = "", opt_out_link: str = ""
) -> tuple[dict, dict]:
    """The values and the merged metadata of one recipient, for ``render``."""
    values = {name: getattr(person, name, "") or "" for name in PERSON_FIELDS} if person else {}
    values["role"] = participant.role if participant else ""
    values["link"] = link
    values["opt_out_link"] = opt_out_link
    metadata = dict(person.metadata or {}) if person else {}
    if participant:
        metadata.update(participant.metadata or {})
    return values, metadata
