"""Recipient conditions (docs/api.md, "SMS distributions").

A condition is ``{"criterion": ..., "operator": ..., "value": ..., "field": ...}``:

- criteria: ``name_or_email`` (first name, last name or email), ``first_name``, ``last_name``,
  ``metadata`` (needs ``field``; the participant's project metadata, else the person's
  directory metadata) and ``role`` (the project role);
- operators: ``is``, ``is_not``, ``contains``, ``is_empty`` (comparisons ignore case);
- ``name_or_email``, ``first_name`` and ``last_name`` may each appear once per set;
- different criteria (two different metadata fields count as different) are joined by AND,
  several conditions on the same criterion by OR.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q

Spellings = Callable[[str], list[str]]
CRITERIA = ("name_or_email", "first_name", "last_name", "metadata", "role")
ONCE_PER_SET = ("name_or_email", "first_name", "last_name")
OPERATORS = ("is", "is_not", "contains", "is_empty")
CRITERION_LABELS = {
    "name_or_email": "Name or email",
    "first_name": "First name",
    "last_name": "Last name",
    "metadata": "Metadata",
    "role": "Role",
}
OPERATOR_LABELS = {"is": "is", "is_not": "is not", "contains": "contains", "is_empty": "is empty"}

# Where each criterion looks, from a Participant row.
_PATHS = {
    "first_name": ("person__first_name",),
    "last_name": ("person__last_name",),
    "name_or_email": ("person__first_name", "person__last_name", "person__email"),
    "role": ("role",),
}


def conditions_clean(raw: Any) -> list[dict]:
    """Validate a condition set; raise ValidationError naming the condition and what is wrong."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise ValidationError({"conditions": "Must be a list of conditions."})
    cleaned: list[dict] = []
    seen_once: set[str] = set()
    for index, item in enumerate(raw, start=1):
        where = f"Condition {index}"
        if not isinstance(item, dict):
            raise ValidationError({"conditions": f"{where}: must be an object."})
        unknown = set(item) - {"criterion", "operator", "value", "field"}
        if unknown:
            raise ValidationError(
                {"conditions": f"{where}: unknown key(s) {', '.join(sorted(unknown))}."}
            )
        criterion = item.get("criterion")
        operator = item.get("operator", "is")
        if criterion not in CRITERIA:
            raise ValidationError(
                {"conditions": f"{where}: criterion must be one of {', '.join(CRITERIA)}."}
            )
        if operator not in OPERATORS:
            raise ValidationError(
                {"conditions": f"{where}: operator must be one of {', '.join(OPERATORS)}."}
            )
        if criterion in ONCE_PER_SET:
            if criterion in seen_once:
                raise ValidationError(
                    {
                        "conditions": f"{where}: {CRITERION_LABELS[criterion]} can only be used "
                        "once in a condition set."
                    }
                )
            seen_once.add(criterion)
        field = (item.get("field") or "").strip()
        if criterion == "metadata" and not field:
            raise ValidationError({"conditions": f"{where}: a metadata condition needs a field."})
        value = item.get("value")
        value = "" if value is None else str(value).strip()
        if operator != "is_empty" and value == "":
            raise ValidationError(
                {"conditions": f"{where}: needs a value (or use the 'is empty' operator)."}
            )
        condition = {"criterion": criterion, "operator": operator, "value": value}
        if criterion == "metadata":
            condition["field"] = field
        cleaned.append(condition)
    return cleaned


def _lookup_q(path: str, operator: str, value: str) -> Q:
    if operator == "is":
        return Q(**{f"{path}__iexact": value})
    if operator == "contains":
        return Q(**{f"{path}__icontains": value})
    if operator == "is_not":
        return ~Q(**{f"{path}__iexact": value})
    return Q(**{path: ""}) | Q(**{f"{path}__isnull": True})  # is_empty


def _metadata_q(field: str, operator: str, value: str) -> Q:
    project_path = f"metadata__{field}"
    person_path = f"person__metadata__{field}"
    # A project value wins over the directory value when both exist.
    has_project = Q(**{"metadata__has_key": field})
    if operator == "is_not":
        # A missing key is "not the value" (SQL would call the comparison unknown).
        has_person = Q(person__metadata__has_key=field)
        return (has_project & ~Q(**{f"{project_path}__iexact": value})) | (
            ~has_project & (~has_person | (has_person & ~Q(**{f"{person_path}__iexact": value})))
        )
    if operator == "is_empty":
        return (has_project & (Q(**{project_path: ""}) | Q(**{project_path: None}))) | (
            ~has_project
            & (
                ~Q(person__metadata__has_key=field)
                | Q(**{person_path: ""})
                | Q(**{person_path: None})
            )
        )
    return (has_project & _lookup_q(project_path, operator, value)) | (
        ~has_project & _lookup_q(person_path, operator, value)
    )


def _condition_q(condition: dict, spellings: Spellings | None) -> Q:
    criterion, operator, value = condition["criterion"], condition["operator"], condition["value"]
    if criterion == "metadata":
        # Field names ignore case, as in imports and piped fields: "team" reads a "Team" field.
        # A positive test holds when one spelling holds; a negative one when all do.
        names = (spellings(condition["field"]) if spellings else None) or [condition["field"]]
        negative = operator in ("is_not", "is_empty")
        q = _metadata_q(names[0], operator, value)
        for name in names[1:]:
            other = _metadata_q(name, operator, value)
            q = q & other if negative else q | other
        return q
    paths = _PATHS[criterion]
    if criterion == "name_or_email":
        if operator == "is_not":  # none of the three equals the value
            q = Q()
            for path in paths:
                q &= _lookup_q(path, operator, value)
            return q
        if operator == "is_empty":
            q = Q()
            for path in paths:
                q &= _lookup_q(path, operator, value)
            return q
        q = Q()
        for path in paths:
            q |= _lookup_q(path, operator, value)
        return q
    return _lookup_q(paths[0], operator, value)


def conditions_q(conditions: list[dict], *, spellings: Spellings | None = None) -> Q:
    """A Q on Participant: AND across criteria, OR within one criterion. ``spellings`` gives
    the stored spellings of a metadata field name (see ``project_metadata_keys``)."""
    groups: OrderedDict[tuple, Q] = OrderedDict()
    for condition in conditions:
        key = (condition["criterion"], condition.get("field", "").lower())
        q = _condition_q(condition, spellings)
        groups[key] = groups[key] | q if key in groups else q
    combined = Q()
    for q in groups.values():
        combined &= q
    return combined


def conditions_describe(conditions: list[dict]) -> str:
    if not conditions:
        return "All participants"
    parts = []
    for condition in conditions:
        label = CRITERION_LABELS[condition["criterion"]]
        if condition["criterion"] == "metadata":
            label = f"{label} “{condition['field']}”"
        text = f"{label} {OPERATOR_LABELS[condition['operator']]}"
        if condition["operator"] != "is_empty":
            text += f" “{condition['value']}”"
        parts.append(text)
    return "; ".join(parts)
