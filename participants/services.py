"""Writes for directory people and project participants.

Every write validates first (phone parsed to E.164, PersonID unique in the brand) and raises
``ValidationError`` naming the field; nothing is stored from input that fails.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from brands.models import Brand
from participants.models import Participant, Person
from participants.phones import PhoneError, phone_to_e164
from projects.models import Project

PERSON_FIELDS = ("person_id", "first_name", "last_name", "email", "username", "phone", "metadata")


def _clean_person_values(values: dict[str, Any], *, country: str) -> dict[str, Any]:
    unknown = set(values) - set(PERSON_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "Unknown field."))
    cleaned = dict(values)
    for name in ("person_id", "first_name", "last_name", "email", "username"):
        if name in cleaned:
            cleaned[name] = (cleaned[name] or "").strip()
    if "email" in cleaned:
        cleaned["email"] = cleaned["email"].lower()
    if "phone" in cleaned:
        try:
            cleaned["phone"] = phone_to_e164(cleaned["phone"], default_country=country)
        except PhoneError as exc:
            raise ValidationError({"phone": str(exc)}) from exc
    if "metadata" in cleaned:
        if cleaned["metadata"] is None:
            cleaned["metadata"] = {}
        if not isinstance(cleaned["metadata"], dict):
            raise ValidationError({"metadata": "Must be an object of field names to values."})
    return cleaned


def _save_person(person: Person) -> Person:
    exclude = ["brand"]
    person.full_clean(exclude=exclude, validate_constraints=False)
    if person.person_id:
        clash = Person.objects.filter(brand_id=person.brand_id, person_id=person.person_id)
        if person.pk:
            clash = clash.exclude(pk=person.pk)
        if clash.exists():
            raise ValidationError(
                {"person_id": f"PersonID '{person.person_id}' already belongs to another person."}
            )
    try:
        with transaction.atomic():
            person.save()
    except IntegrityError as exc:  # a concurrent insert of the same PersonID
        raise ValidationError(
            {"person_id": f"PersonID '{person.person_id}' already belongs to another person."}
        ) from exc
    return person


def person_create(*, brand: Brand, country: str | None = None, **values: Any) -> Person:
    cleaned = _clean_person_values(values, country=country or brand.default_country)
    return _save_person(Person(brand=brand, **cleaned))


def person_update(*, person: Person, country: str | None = None, **values: Any) -> Person:
    cleaned = _clean_person_values(values, country=country or person.brand.default_country)
    for name, value in cleaned.items():
        setattr(person, name, value)
    return _save_person(person)


def participant_create(
    *,
    project: Project,
    person: Person | None = None,
    role: str = "",
    participant_metadata: dict | None = None,
    actor=None,
    **person_values: Any,
) -> Participant:
    """Add a person to ``project``: an existing ``person``, or a new one from ``person_values``."""
    if participant_metadata is not None and not isinstance(participant_metadata, dict):
        raise ValidationError({"participant_metadata": "Must be an object."})
    with transaction.atomic():
        if person is None:
            person = person_create(brand=project.brand, country=project.country, **person_values)
        elif person.brand_id != project.brand_id:
            raise ValidationError({"person": "This person belongs to another brand."})
        elif person_values:
            person = person_update(person=person, country=project.country, **person_values)
        if Participant.objects.filter(project=project, person=person).exists():
            raise ValidationError({"person": f"{person} is already a participant of this project."})
        return Participant.objects.create(
            project=project,
            person=person,
            role=(role or "").strip(),
            metadata=participant_metadata or {},
            added_by=actor if getattr(actor, "pk", None) else None,
        )


def participant_update(
    *,
    participant: Participant,
    role: str | None = None,
    participant_metadata: dict | None = None,
    **person_values: Any,
) -> Participant:
    with transaction.atomic():
        if person_values:
            person_update(
                person=participant.person, country=participant.project.country, **person_values
            )
        fields = []
        if role is not None:
            participant.role = role.strip()
            fields.append("role")
        if participant_metadata is not None:
            if not isinstance(participant_metadata, dict):
                raise ValidationError({"participant_metadata": "Must be an object."})
            participant.metadata = participant_metadata
            fields.append("metadata")
        if fields:
            participant.save(update_fields=[*fields, "updated_at"])
    return participant


def participant_remove(*, participant: Participant) -> None:
    """Remove the person from the project; the directory entry stays."""
    participant.delete()
