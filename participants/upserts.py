"""Set-based upserts of validated rows into people and participants, one batch at a time.

``plan_batch`` reads (two or three queries per batch, whatever its size) and decides, row by
row, whether the person is created, updated or unchanged, without writing. ``write_batch``
applies a plan with bulk inserts and updates. Validation runs ``plan_batch`` only; the write
phase runs both, inside one transaction, so its answers reflect the directory at write time.

Rules (docs/import.md):
- a row with a PersonID matches that PersonID; without one, it matches by email. A row whose
  PersonID is new but whose email belongs to exactly one person *without* a PersonID claims
  that person (adds the PersonID) instead of creating a twin;
- a column the file does not have is never touched; an empty cell is skipped unless
  ``erase_empty``; PersonID is never erased; metadata merges field by field;
- ``Opted out`` is never written (see participants.metadata).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from brands.models import Brand
from participants.importer import PERSON_FIELDS, RowError, RowRecord
from participants.metadata import merge_metadata, strip_protected
from participants.models import Participant, Person
from projects.models import Project

CREATE, UPDATE, UNCHANGED, ERROR = "create", "update", "unchanged", "error"


@dataclass
class UpsertTarget:
    brand: Brand
    project: Project | None = None
    erase_empty: bool = False
    metadata_target: str = "person"  # or "participant" (project imports only)
    actor_id: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # field -> column name for errors

    @property
    def metadata_on_participant(self) -> bool:
        return self.project is not None and self.metadata_target == "participant"


@dataclass
class UpsertState:
    """What one import remembers across batches."""

    adopted: set[int] = field(default_factory=set)


@dataclass
class BatchPlan:
    outcomes: list[tuple[RowRecord, str]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    new_people: list[Person] = field(default_factory=list)
    new_people_rows: list[tuple[Person, RowRecord]] = field(default_factory=list)
    changed_people: dict[int, Person] = field(default_factory=dict)
    person_fields: set[str] = field(default_factory=set)
    new_participants: list[Participant] = field(default_factory=list)
    changed_participants: dict[int, Participant] = field(default_factory=dict)
    participant_fields: set[str] = field(default_factory=set)
    added: int = 0


def _new_metadata(record: RowRecord) -> dict[str, str]:
    return strip_protected({k: v for k, v in record.metadata.items() if v != ""})


def _apply_to_person(person: Person, record: RowRecord, target: UpsertTarget) -> set[str]:
    changed: set[str] = set()
    for name in PERSON_FIELDS:
        value = getattr(record, name)
        if value is None or (value == "" and not target.erase_empty):
            continue
        if getattr(person, name) != value:
            setattr(person, name, value)
            changed.add(name)
    if record.person_id and not person.person_id:
        person.person_id = record.person_id
        changed.add("person_id")
    if record.metadata and not target.metadata_on_participant:
        merged, metadata_changed = merge_metadata(
            person.metadata, record.metadata, erase_empty=target.erase_empty
        )
        if metadata_changed:
            person.metadata = merged
            changed.add("metadata")
    return changed


def _apply_to_participant(
    participant: Participant, record: RowRecord, target: UpsertTarget
) -> set[str]:
    changed: set[str] = set()
    role = record.role
    if role is not None and (role != "" or target.erase_empty) and participant.role != role:
        participant.role = role
        changed.add("role")
    if record.metadata and target.metadata_on_participant:
        merged, metadata_changed = merge_metadata(
            participant.metadata, record.metadata, erase_empty=target.erase_empty
        )
        if metadata_changed:
            participant.metadata = merged
            changed.add("metadata")
    return changed


def plan_batch(records: list[RowRecord], target: UpsertTarget, state: UpsertState) -> BatchPlan:
    """Classify ``records`` against the directory as it is now. Reads only."""
    plan = BatchPlan()
    if not records:
        return plan
    brand, project = target.brand, target.project
    known: dict[int, Person] = {}  # one object per person, however it was found

    by_pid: dict[str, Person] = {}
    pids = {r.person_id for r in records if r.person_id}
    if pids:
        for person in Person.objects.filter(brand=brand, person_id__in=pids):
            by_pid[person.person_id] = known.setdefault(person.pk, person)
    by_email: dict[str, list[Person]] = defaultdict(list)
    emails = {r.email for r in records if r.email and not (r.person_id and r.person_id in by_pid)}
    if emails:
        for person in Person.objects.filter(brand=brand, email__in=emails).order_by("pk"):
            by_email[person.email].append(known.setdefault(person.pk, person))

    matched: list[tuple[RowRecord, Person | None]] = []
    for record in records:
        person = None
        if record.person_id:
            person = by_pid.get(record.person_id)
            if person is None and record.email:
                claimable = [
                    p
                    for p in by_email.get(record.email, ())
                    if not p.person_id and p.pk not in state.adopted
                ]
                if len(claimable) == 1:
                    person = claimable[0]
                    state.adopted.add(person.pk)
        else:
            candidates = by_email.get(record.email, ())
            if len(candidates) > 1:
                plan.errors.append(
                    RowError(
                        record.number,
                        target.labels.get("email", "Email"),
                        record.email or "",
                        f"{len(candidates)} people in the directory have the email "
                        f"'{record.email}': add a PersonID column to say which one this row "
                        "updates.",
                    )
                )
                plan.outcomes.append((record, ERROR))
                continue
            person = candidates[0] if candidates else None
        matched.append((record, person))

    participants: dict[int, Participant] = {}
    if project is not None:
        person_pks = [p.pk for _, p in matched if p is not None]
        if person_pks:
            participants = {
                pt.person_id: pt
                for pt in Participant.objects.filter(project=project, person_id__in=person_pks)
            }

    metadata_on_person = not target.metadata_on_participant
    for record, person in matched:
        if person is None:
            person = Person(
                brand=brand,
                person_id=record.person_id or "",
                first_name=record.first_name or "",
                last_name=record.last_name or "",
                email=record.email or "",
                username=record.username or "",
                phone=record.phone or "",
                metadata=_new_metadata(record) if metadata_on_person else {},
            )
            plan.new_people.append(person)
            if project is not None:
                plan.new_people_rows.append((person, record))
                plan.added += 1
            plan.outcomes.append((record, CREATE))
            continue
        changed = _apply_to_person(person, record, target)
        if changed:
            plan.changed_people[person.pk] = person
            plan.person_fields |= changed
        outcome = UPDATE if changed else UNCHANGED
        if project is not None:
            participant = participants.get(person.pk)
            if participant is None:
                plan.new_participants.append(_new_participant(project, person, record, target))
                plan.added += 1
                outcome = UPDATE
            else:
                participant_changed = _apply_to_participant(participant, record, target)
                if participant_changed:
                    plan.changed_participants[participant.pk] = participant
                    plan.participant_fields |= participant_changed
                    outcome = UPDATE
        plan.outcomes.append((record, outcome))
    return plan


def _new_participant(
    project: Project, person: Person, record: RowRecord, target: UpsertTarget
) -> Participant:
    return Participant(
        project=project,
        person=person,
        role=record.role or "",
        metadata=_new_metadata(record) if target.metadata_on_participant else {},
        added_by_id=target.actor_id,
    )


# Rows per INSERT/UPDATE statement. Each statement carries about 300 bytes a row, so 1,000
# rows keep statements near 300 kB; larger gains nothing measurable.
STATEMENT_ROWS = 1000


def write_batch(plan: BatchPlan, target: UpsertTarget) -> None:
    """Apply ``plan``: insert new people, update changed ones, then the same for participants.

    Must run inside the caller's transaction (the import's one transaction).
    """
    now = timezone.now()
    if plan.new_people:
        _insert_people(plan.new_people, now)
    if plan.changed_people:
        people = list(plan.changed_people.values())
        for person in people:
            person.updated_at = now
        _update_rows(Person, people, sorted(plan.person_fields | {"updated_at"}))
    new_participants = list(plan.new_participants)
    if target.project is not None:
        new_participants.extend(
            _new_participant(target.project, person, record, target)
            for person, record in plan.new_people_rows
        )
    if new_participants:
        _insert_participants(new_participants, now)
    if plan.changed_participants:
        rows = list(plan.changed_participants.values())
        for participant in rows:
            participant.updated_at = now
        _update_rows(Participant, rows, sorted(plan.participant_fields | {"updated_at"}))


def _insert_people(people: list[Person], now) -> None:
    for person in people:
        person.created_at = person.updated_at = now
    Person.objects.bulk_create(people, batch_size=STATEMENT_ROWS)


def _insert_participants(participants: list[Participant], now) -> None:
    for participant in participants:
        participant.person_id = participant.person.pk
        participant.created_at = participant.updated_at = now
    Participant.objects.bulk_create(participants, batch_size=STATEMENT_ROWS)


def _update_rows(model, objects: list, fields: list[str]) -> None:
    if connection.vendor == "postgresql":
        _pg_update_from_values(model, objects, fields)
    else:
        model.objects.bulk_update(objects, fields, batch_size=STATEMENT_ROWS)


def _pg_update_from_values(model, objects: list, fields: list[str]) -> None:
    """``UPDATE t SET … FROM (VALUES …)``: one statement per STATEMENT_ROWS rows.

    Django's ``bulk_update`` writes one ``CASE WHEN id = … THEN …`` per field and row, which
    PostgreSQL evaluates row by row (quadratic in the batch size); a joined VALUES list is linear.
    """
    table = model._meta.db_table
    meta_fields = [model._meta.get_field(name) for name in fields]
    columns = [f.column for f in meta_fields]
    casts = [f.db_type(connection) for f in meta_fields]
    assignments = ", ".join(f'"{col}" = v."{col}"' for col in columns)
    value_columns = ", ".join(['"id"'] + [f'"{col}"' for col in columns])
    row_sql = "(" + ", ".join(["%s::bigint"] + [f"%s::{cast}" for cast in casts]) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(objects), STATEMENT_ROWS):
            chunk = objects[start : start + STATEMENT_ROWS]
            params: list = []
            for obj in chunk:
                params.append(obj.pk)
                for meta_field in meta_fields:
                    value = meta_field.get_db_prep_save(
                        getattr(obj, meta_field.attname), connection
                    )
                    params.append(value)
            values_sql = ", ".join([row_sql] * len(chunk))
            cursor.execute(
                f'UPDATE "{table}" AS t SET {assignments} '  # noqa: S608 - names from model meta
                f"FROM (VALUES {values_sql}) AS v({value_columns}) "
                'WHERE t."id" = v."id"',
                params,
            )
