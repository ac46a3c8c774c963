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

import json
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import F, Lookup, Q
from django.utils import timezone

from brands.models import Brand
from participants.importer import PERSON_FIELDS, RowError, RowRecord
from participants.metadata import merge_metadata
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
    # person pk -> the first row that matched them: a second row about them is an error
    matched: dict[int, int] = field(default_factory=dict)
    # person pk -> their email before an earlier batch changed it. Rows match the directory
    # as it was before the import (what validation reported), whatever the batches wrote.
    original_email: dict[int, str] = field(default_factory=dict)


@dataclass
class BatchPlan:
    """What one batch does. New rows are plain tuples (building model instances for them
    costs more than writing them); rows that change are the instances that were read."""

    outcomes: list[tuple[RowRecord, str]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    # (person_id, first_name, last_name, email, username, phone, time_zone, metadata) of new
    # people
    new_people: list[tuple] = field(default_factory=list)
    # (role, metadata) of the participant each new person becomes (project imports)
    new_people_participants: list[tuple[str, dict]] = field(default_factory=list)
    changed_people: dict[int, Person] = field(default_factory=dict)
    person_fields: set[str] = field(default_factory=set)
    # (person pk, role, metadata) of existing people who join the project
    new_participants: list[tuple[int, str, dict]] = field(default_factory=list)
    changed_participants: dict[int, Participant] = field(default_factory=dict)
    participant_fields: set[str] = field(default_factory=set)
    added: int = 0


def ambiguous_email_error(number: int, email: str, count: int, labels: dict) -> RowError:
    return RowError(
        number,
        labels.get("email", "Email"),
        email,
        f"{count} people in the directory have the email '{email}': add a PersonID column to "
        "say which one this row updates.",
    )


def same_person_error(
    number: int, person_id: str | None, email: str | None, first: int, labels: dict
) -> RowError:
    """A row that matches the person an earlier row of the file matched (say, by PersonID on
    one row and by email on the other): applying both would depend on their order."""
    if person_id:
        column, value, key = labels.get("person_id", "PersonID"), person_id, "PersonID"
    else:
        column, value, key = labels.get("email", "Email"), email or "", "email"
    return RowError(
        number,
        column,
        value,
        f"This row's {key} finds the same person in the directory as row {first}: a person "
        "may appear once in a file.",
    )


def _new_metadata(record: RowRecord) -> dict[str, str]:
    # Records never carry a protected field: the header mapping ignores an "Opted out"
    # column and the JSON reader refuses one.
    return {key: value for key, value in record.metadata.items() if value != ""}


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


class _EqualsAny(Lookup):
    """``column = ANY(%s)`` with the values as one array parameter (PostgreSQL)."""

    lookup_name = "equals_any"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", [*lhs_params, list(self.rhs)]


def _among(field: str, values):
    """``field IN values``. On PostgreSQL the values travel as one array: Django would
    otherwise prepare 2,000 separate parameters per lookup, in Python."""
    values = list(values)
    if connection.vendor == "postgresql":
        return _EqualsAny(F(field), values)
    return Q(**{f"{field}__in": values})


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
        # The explicit ``person_id <> ''`` lets PostgreSQL use the partial unique index: it
        # cannot prove it from an IN list longer than 100 values, and would scan the table.
        existing = Person.objects.filter(_among("person_id", pids), brand=brand).exclude(
            person_id=""
        )
        for person in existing:
            by_pid[person.person_id] = known.setdefault(person.pk, person)
    by_email: dict[str, list[Person]] = defaultdict(list)
    # Rows without PersonID match anyone with their email; rows with a new PersonID may only
    # claim someone who has no PersonID (a small partial index).
    emails = {r.email for r in records if r.email and not r.person_id}
    claim_emails = {
        r.email for r in records if r.email and r.person_id and r.person_id not in by_pid
    } - emails
    lookups = []
    if emails:
        lookups.append(Person.objects.filter(_among("email", emails), brand=brand))
        moved = [pk for pk, old in state.original_email.items() if old in emails]
        if moved:
            lookups.append(Person.objects.filter(_among("pk", moved)))
    if claim_emails:
        lookups.append(
            Person.objects.filter(_among("email", claim_emails), brand=brand, person_id="")
        )
    for queryset in lookups:
        for person in queryset.order_by("pk"):
            person = known.setdefault(person.pk, person)
            email = state.original_email.get(person.pk, person.email)
            if person not in by_email[email]:
                by_email[email].append(person)

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
                    ambiguous_email_error(
                        record.number, record.email or "", len(candidates), target.labels
                    )
                )
                plan.outcomes.append((record, ERROR))
                continue
            person = candidates[0] if candidates else None
        if person is not None:
            first = state.matched.setdefault(person.pk, record.number)
            if first != record.number:
                plan.errors.append(
                    same_person_error(
                        record.number, record.person_id, record.email, first, target.labels
                    )
                )
                plan.outcomes.append((record, ERROR))
                continue
        matched.append((record, person))

    participants: dict[int, Participant] = {}
    if project is not None:
        person_pks = [p.pk for _, p in matched if p is not None]
        if person_pks:
            participants = {
                pt.person_id: pt
                for pt in Participant.objects.filter(
                    _among("person_id", person_pks), project=project
                )
            }

    metadata_on_person = not target.metadata_on_participant
    for record, person in matched:
        if person is None:
            plan.new_people.append(
                (
                    record.person_id or "",
                    record.first_name or "",
                    record.last_name or "",
                    record.email or "",
                    record.username or "",
                    record.phone or "",
                    record.time_zone or "",
                    _new_metadata(record) if metadata_on_person else {},
                )
            )
            if project is not None:
                plan.new_people_participants.append(_new_participant(record, target))
                plan.added += 1
            plan.outcomes.append((record, CREATE))
            continue
        email = person.email
        changed = _apply_to_person(person, record, target)
        if "email" in changed:
            state.original_email.setdefault(person.pk, email)
        if changed:
            plan.changed_people[person.pk] = person
            plan.person_fields |= changed
        outcome = UPDATE if changed else UNCHANGED
        if project is not None:
            participant = participants.get(person.pk)
            if participant is None:
                plan.new_participants.append((person.pk, *_new_participant(record, target)))
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


def _new_participant(record: RowRecord, target: UpsertTarget) -> tuple[str, dict]:
    """(role, metadata) of a new participant."""
    metadata = _new_metadata(record) if target.metadata_on_participant else {}
    return record.role or "", metadata


# Rows per INSERT/UPDATE statement (about 300 bytes a row: ~1.5 MB statements). One per
# import batch on PostgreSQL; SQLite's bulk_create splits further by its parameter limit.
STATEMENT_ROWS = 5000


def write_batch(plan: BatchPlan, target: UpsertTarget) -> None:
    """Apply ``plan``: insert new people, update changed ones, then the same for participants.

    Must run inside the caller's transaction (the import's one transaction).
    """
    now = timezone.now()
    new_pks: list[int] = []
    if plan.new_people:
        new_pks = _insert_people(target.brand.pk, plan.new_people, now)
    if plan.changed_people:
        people = list(plan.changed_people.values())
        for person in people:
            person.updated_at = now
        _update_rows(Person, people, sorted(plan.person_fields | {"updated_at"}))
    if target.project is not None:
        rows = list(plan.new_participants)
        rows.extend(
            (pk, role, metadata)
            for pk, (role, metadata) in zip(new_pks, plan.new_people_participants, strict=True)
        )
        if rows:
            _insert_participants(target.project.pk, target.actor_id, rows, now)
    if plan.changed_participants:
        participants = list(plan.changed_participants.values())
        for participant in participants:
            participant.updated_at = now
        _update_rows(Participant, participants, sorted(plan.participant_fields | {"updated_at"}))


PERSON_INSERT_COLUMNS = (*Person.DIRECTORY_FIELDS, "metadata")


def _insert_people(brand_id: int, rows: list[tuple], now) -> list[int]:
    """Insert new people; return their primary keys in the order of ``rows``."""
    if connection.vendor == "postgresql":
        return _pg_insert_people(brand_id, rows, now)
    people = [
        Person(
            brand_id=brand_id,
            **dict(zip(PERSON_INSERT_COLUMNS, row, strict=True)),
            created_at=now,
            updated_at=now,
        )
        for row in rows
    ]
    Person.objects.bulk_create(people, batch_size=STATEMENT_ROWS)
    return [person.pk for person in people]


def _insert_participants(project_id: int, actor_id, rows: list[tuple], now) -> None:
    """Insert ``(person pk, role, metadata)`` rows as participants of the project."""
    if connection.vendor == "postgresql":
        return _pg_insert_participants(project_id, actor_id, rows, now)
    Participant.objects.bulk_create(
        [
            Participant(
                project_id=project_id,
                person_id=pk,
                role=role,
                metadata=metadata,
                added_by_id=actor_id,
                created_at=now,
                updated_at=now,
            )
            for pk, role, metadata in rows
        ],
        batch_size=STATEMENT_ROWS,
    )


def _json(metadata: dict) -> str:
    return json.dumps(metadata, ensure_ascii=False) if metadata else "{}"


def _pg_insert_people(brand_id: int, rows: list[tuple], now) -> list[int]:
    """``INSERT … SELECT FROM unnest(arrays) RETURNING id``: one statement per chunk, one
    array per column, no model instance. PostgreSQL inserts (and returns) the rows in the
    order unnest produces them, which is the order of the arrays."""
    table = Person._meta.db_table
    columns = ", ".join(PERSON_INSERT_COLUMNS)
    pks: list[int] = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), STATEMENT_ROWS):
            chunk = rows[start : start + STATEMENT_ROWS]
            arrays = [list(column) for column in zip(*chunk, strict=True)]
            arrays[-1] = [_json(metadata) for metadata in arrays[-1]]
            cursor.execute(
                f"INSERT INTO {table} (brand_id, {columns}, created_at, updated_at) "  # noqa: S608
                "SELECT %s, u.person_id, u.first_name, u.last_name, u.email, u.username, "
                "u.phone, u.time_zone, u.metadata::jsonb, %s, %s FROM unnest(%s::text[], "
                "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
                "%s::text[]) "
                f"AS u({columns}) RETURNING id",
                [brand_id, now, now, *arrays],
            )
            pks.extend(row[0] for row in cursor.fetchall())
    return pks


def _pg_insert_participants(project_id: int, actor_id, rows: list[tuple], now) -> None:
    table = Participant._meta.db_table
    with connection.cursor() as cursor:
        for start in range(0, len(rows), STATEMENT_ROWS):
            chunk = rows[start : start + STATEMENT_ROWS]
            pks, roles, metadata = (list(column) for column in zip(*chunk, strict=True))
            cursor.execute(
                f"INSERT INTO {table} (project_id, person_id, role, metadata, added_by_id, "  # noqa: S608
                "created_at, updated_at) SELECT %s, u.person_id, u.role, u.metadata::jsonb, "
                "%s, %s, %s FROM unnest(%s::bigint[], %s::text[], %s::text[]) "
                "AS u(person_id, role, metadata)",
                [
                    project_id,
                    actor_id,
                    now,
                    now,
                    pks,
                    roles,
                    [_json(m) for m in metadata],
                ],
            )


def _update_rows(model, objects: list, fields: list[str]) -> None:
    """``UPDATE t SET … FROM (VALUES …) WHERE t.id = v.id``, a bounded number of statements.

    Django's ``bulk_update`` writes one ``CASE WHEN id = … THEN …`` per field and row, which
    the database evaluates row by row: quadratic in the batch size (10,000 updates took most
    of a 100,000-row import on SQLite). A joined list of values is linear. PostgreSQL takes
    the values with explicit casts; SQLite (3.33+) through a CTE, as it cannot name the columns
    of a VALUES list.
    """
    table = model._meta.db_table
    meta_fields = [model._meta.get_field(name) for name in fields]
    columns = [f.column for f in meta_fields]
    assignments = ", ".join(f'"{col}" = v."{col}"' for col in columns)
    names = ", ".join(['"id"'] + [f'"{col}"' for col in columns])
    if connection.vendor == "postgresql":
        casts = [f.db_type(connection) for f in meta_fields]
        row_sql = "(" + ", ".join(["%s::bigint"] + [f"%s::{cast}" for cast in casts]) + ")"
        per_statement = STATEMENT_ROWS
    else:
        row_sql = "(" + ", ".join(["%s"] * (len(columns) + 1)) + ")"
        per_statement = max(1, min(STATEMENT_ROWS, 30_000 // (len(columns) + 1)))
    with connection.cursor() as cursor:
        for start in range(0, len(objects), per_statement):
            chunk = objects[start : start + per_statement]
            params: list = []
            for obj in chunk:
                params.append(obj.pk)
                for meta_field in meta_fields:
                    params.append(
                        meta_field.get_db_prep_save(getattr(obj, meta_field.attname), connection)
                    )
            values_sql = ", ".join([row_sql] * len(chunk))
            if connection.vendor == "postgresql":
                sql = (
                    f'UPDATE "{table}" AS t SET {assignments} '  # noqa: S608 - names from meta
                    f'FROM (VALUES {values_sql}) AS v({names}) WHERE t."id" = v."id"'
                )
            else:
                sql = (
                    f"WITH v({names}) AS (VALUES {values_sql}) "  # noqa: S608 - names from meta
                    f'UPDATE "{table}" SET {assignments} '
                    f'FROM v WHERE "{table}"."id" = v."id"'
                )
            cursor.execute(sql, params)


class PlannerStatistics:
    """Keeps PostgreSQL's row estimates true before an import's batch lookups.

    With stale estimates (say, the few participants a project had when last analysed, before
    a previous import added 100,000) the planner picks the bare ``project_id`` index for the
    participant lookup and scans the whole project for every batch. ``refresh`` runs
    ``ANALYZE`` when the tables changed by more than a fifth since their last analysis. Growth
    *during* the import does not matter: every lookup is a per-key probe of a unique index,
    whatever the table size. No-op elsewhere.
    """

    TABLES = ("participants_person", "participants_participant")
    STALE_FRACTION = 0.2

    def __init__(self) -> None:
        self.enabled = connection.vendor == "postgresql"

    def refresh(self) -> None:
        if not self.enabled:
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(%s) "
                "AND n_mod_since_analyze > GREATEST(1000, %s * n_live_tup)",
                [list(self.TABLES), self.STALE_FRACTION],
            )
            stale = [row[0] for row in cursor.fetchall()]
            if stale:
                cursor.execute(f"ANALYZE {', '.join(stale)}")
