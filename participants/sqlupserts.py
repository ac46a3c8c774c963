"""A file import's rows applied set-based on PostgreSQL: the rules of ``upserts``, in SQL.

``plan_batch`` + ``write_batch`` (``participants.upserts``) decide and write row by row in
Python; that is the reference, used on SQLite and by the bulk API. On PostgreSQL a file import
COPYs its validated rows (the spool, a CSV file) into a temporary table and lets the database
match them against the directory, compute each matched row's new values (the metadata merge
included) and write, in a constant number of statements per chunk. No row goes through Python.

The same rules, statement by statement (docs/import.md):

- match by PersonID; a row without one matches by email, and an email shared by several people
  is a row error; a row whose new PersonID's email belongs to exactly one person without a
  PersonID claims that person (the first such row of the file; later ones create);
- a person found by two rows is an error on the later row;
- a column the file does not have is never touched, an empty cell only with ``erase_empty``,
  PersonID is never erased;
- metadata merges field by field, field names compared as ``metadata.normalise_key`` does:
  Python computes that, for the few spellings stored on the matched rows, and hands SQL the
  exact spellings that stand for each column of the file (the last one in the stored object's
  order, as the Python merge picks); ``Opted out`` is never a column of a file.

tests/test_import_sql_equivalence.py runs both implementations on the same random directories
and files and asserts the same outcome, errors and resulting directory.
"""

# SQL is assembled from table and column names of this module and the models; every value
# travels as a parameter.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from django.db import connection
from django.utils import timezone

from participants.importer import RowError, SpoolLayout
from participants.metadata import PROTECTED_KEYS, normalise_key
from participants.models import Participant, Person
from participants.upserts import (
    CREATE,
    UNCHANGED,
    UPDATE,
    UpsertTarget,
    ambiguous_email_error,
    same_person_error,
)

ROWS = "relay_import_rows"
PEOPLE = "relay_import_people"
MEMBERS = "relay_import_members"
PERSON_TABLE = Person._meta.db_table
PARTICIPANT_TABLE = Participant._meta.db_table
# Person fields an import may change, besides PersonID (claimed) and metadata (merged).
CHANGEABLE = ("first_name", "last_name", "email", "username", "phone", "time_zone")


@dataclass
class SetPlan:
    counts: dict[str, int] = field(default_factory=dict)
    added: int = 0
    errors: list[RowError] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)  # rows per chunk, in order


class SetBasedImport:
    """One import's rows in a temporary table: ``load``, ``plan`` (reads only), ``apply``.

    Runs inside the caller's transaction; ``close`` drops the temporary tables (they are
    dropped at commit anyway).
    """

    # One text column per metadata field of the file; PostgreSQL allows 1,600 per table.
    MAX_METADATA_COLUMNS = 1000

    @classmethod
    def handles(cls, layout: SpoolLayout) -> bool:
        """True on PostgreSQL for a file whose columns fit a table; else use ``upserts``."""
        return (
            connection.vendor == "postgresql"
            and len(layout.metadata_keys) <= cls.MAX_METADATA_COLUMNS
        )

    def __init__(self, *, target: UpsertTarget, layout: SpoolLayout, chunk_rows: int):
        if any(normalise_key(key) in PROTECTED_KEYS for key in layout.metadata_keys):
            raise ValueError("a protected metadata field cannot be a column of an import")
        self.target = target
        self.layout = layout
        self.chunk_rows = max(1, chunk_rows)
        self.fields = set(layout.fields)
        self.meta_columns = [f"m{i}" for i in range(len(layout.metadata_keys))]
        self.project_id = target.project.pk if target.project is not None else None
        self._cursor = connection.cursor()

    # --- Loading ----------------------------------------------------------------------------
    def load(self, spool: IO, skip: list[int] | tuple = ()) -> None:
        """COPY the spool (a binary or text file of ``SpoolLayout`` rows) into the table."""
        cursor = self._cursor
        self.close()
        text_columns = [*self.layout.fields, *self.meta_columns]
        cursor.execute(
            f"CREATE TEMP TABLE {ROWS} (seq serial, n integer NOT NULL, "
            + "".join(f"{name} text, " for name in (*CHANGEABLE, "person_id", "role"))
            + "".join(f"{name} text, " for name in self.meta_columns)
            + "pk bigint, ambiguous integer, duplicate_of integer, participant_pk bigint)"
        )
        columns = ", ".join(["n", *text_columns])
        options = f", FORCE_NOT_NULL ({', '.join(text_columns)})" if text_columns else ""
        cursor.cursor.copy_expert(
            f"COPY {ROWS} ({columns}) FROM STDIN WITH (FORMAT csv{options})", spool
        )
        if skip:
            cursor.execute(f"DELETE FROM {ROWS} WHERE n = ANY(%s)", [list(skip)])
        cursor.execute(f"CREATE UNIQUE INDEX ON {ROWS} (seq)")

    # --- Planning ---------------------------------------------------------------------------
    def plan(self) -> SetPlan:
        """Match the rows and compute what changes; write nothing to the directory."""
        cursor, brand_id = self._cursor, self.target.brand.pk
        has_pid, has_email = "person_id" in self.fields, "email" in self.fields
        if has_pid:
            cursor.execute(
                f"UPDATE {ROWS} r SET pk = p.id FROM {PERSON_TABLE} p "
                "WHERE p.brand_id = %s AND p.person_id <> '' AND p.person_id = r.person_id",
                [brand_id],
            )
        if has_email:  # rows without PersonID: whoever has the email, if exactly one
            pidless = "r2.person_id = ''" if has_pid else "TRUE"
            cursor.execute(
                f"UPDATE {ROWS} r SET pk = CASE WHEN c.k = 1 THEN c.id END, "
                "ambiguous = CASE WHEN c.k > 1 THEN c.k END FROM (SELECT r2.n, count(*) AS k, "
                f"min(p.id) AS id FROM {ROWS} r2 JOIN {PERSON_TABLE} p ON p.brand_id = %s "
                f"AND p.email = r2.email WHERE {pidless} AND r2.email <> '' GROUP BY r2.n) c "
                "WHERE r.n = c.n",
                [brand_id],
            )
        if has_pid and has_email:  # a new PersonID claims the one person without PersonID
            cursor.execute(
                f"UPDATE {ROWS} r SET pk = f.id FROM (SELECT DISTINCT ON (r2.email) r2.n, c.id "
                f"FROM {ROWS} r2 JOIN (SELECT p.email, min(p.id) AS id FROM {PERSON_TABLE} p "
                "WHERE p.brand_id = %s AND p.person_id = '' AND p.email IN (SELECT email "
                f"FROM {ROWS} WHERE pk IS NULL AND person_id <> '' AND email <> '') "
                "GROUP BY p.email HAVING count(*) = 1) c ON c.email = r2.email "
                "WHERE r2.pk IS NULL AND r2.person_id <> '' ORDER BY r2.email, r2.n) f "
                "WHERE r.n = f.n",
                [brand_id],
            )
        cursor.execute(  # usually no such person: an empty hash side, no scan of the rows
            f"UPDATE {ROWS} r SET duplicate_of = d.first FROM (SELECT pk, min(n) AS first "
            f"FROM {ROWS} WHERE pk IS NOT NULL GROUP BY pk HAVING count(*) > 1) d "
            "WHERE r.pk = d.pk AND r.n <> d.first"
        )
        if self.project_id is not None:
            cursor.execute(
                f"UPDATE {ROWS} r SET participant_pk = pt.id FROM {PARTICIPANT_TABLE} pt "
                "WHERE pt.project_id = %s AND pt.person_id = r.pk AND r.duplicate_of IS NULL",
                [self.project_id],
            )
        self._changes_of_people()
        if self.project_id is not None:
            self._changes_of_participants()
        return self._summary()

    def _valid(self, alias: str = "r") -> str:
        return f"{alias}.ambiguous IS NULL AND {alias}.duplicate_of IS NULL"

    def _blank_keeps(self, new: str, old: str) -> str:
        """The value after the import: an empty cell keeps ``old`` unless erase_empty."""
        if self.target.erase_empty:
            return new
        return f"CASE WHEN {new} = '' THEN {old} ELSE {new} END"

    def _targets(self, table: str) -> list[tuple[str, list]]:
        """Per metadata column of the file, the SQL of the stored key it writes, and params.

        The Python merge writes into the stored key of the same normalised name (the last one
        in the object's order), else under the file's spelling. The spellings stored on the
        matched rows are few: Python normalises them, SQL compares exact strings.
        """
        keys = self.layout.metadata_keys
        alias = "p" if table == PERSON_TABLE else "pt"
        link = "r.pk" if table == PERSON_TABLE else "r.participant_pk"
        self._cursor.execute(
            f"SELECT DISTINCT k FROM {ROWS} r JOIN {table} {alias} ON {alias}.id = {link} "
            f"CROSS JOIN LATERAL jsonb_object_keys({alias}.metadata) k WHERE {self._valid()}"
        )
        spellings: dict[str, list[str]] = {}
        for (stored,) in self._cursor.fetchall():
            spellings.setdefault(normalise_key(stored), []).append(stored)
        targets = []
        for key in keys:
            stored = spellings.get(normalise_key(key), [])
            if not stored or stored == [key]:
                targets.append(("%s", [key]))
            else:
                targets.append(
                    (
                        f"coalesce((SELECT k FROM jsonb_object_keys({alias}.metadata) WITH "
                        "ORDINALITY AS e(k, o) WHERE k = ANY(%s) ORDER BY o DESC LIMIT 1), %s)",
                        [stored, key],
                    )
                )
        return targets

    def _merged(self, table: str) -> tuple[str, list]:
        """SQL (and params) of the merged metadata of a matched row of ``table``."""
        alias = "p" if table == PERSON_TABLE else "pt"
        targets = self._targets(table)
        params: list = []
        sql = f"{alias}.metadata"
        if self.target.erase_empty:
            removed = ", ".join(
                f"CASE WHEN r.{column} = '' THEN {target} END"
                for column, (target, _) in zip(self.meta_columns, targets, strict=True)
            )
            sql = f"({sql} - ARRAY[{removed}]::text[])"
            for _, target_params in targets:
                params.extend(target_params)
        names = ", ".join(target for target, _ in targets)
        for _, target_params in targets:
            params.extend(target_params)
        values = ", ".join(f"nullif(r.{column}, '')" for column in self.meta_columns)
        added = f"jsonb_object(ARRAY[{names}]::text[], ARRAY[{values}]::text[])"
        sql = f"({sql} || jsonb_strip_nulls({added}))"
        return sql, params

    def _new_metadata(self) -> tuple[str, list]:
        """SQL of a new row's metadata: the file's non-empty cells, under its spellings."""
        if not self.meta_columns:
            return "'{}'::jsonb", []
        values = ", ".join(f"nullif(r.{column}, '')" for column in self.meta_columns)
        return (
            f"jsonb_strip_nulls(jsonb_object(%s::text[], ARRAY[{values}]::text[]))",
            [list(self.layout.metadata_keys)],
        )

    def _changes_of_people(self) -> None:
        assignments: list[tuple[str, str]] = []
        params: list = []
        for name in CHANGEABLE:
            if name in self.fields:
                assignments.append((name, self._blank_keeps(f"r.{name}", f"p.{name}")))
        if "person_id" in self.fields:
            assignments.append(
                (
                    "person_id",
                    "CASE WHEN r.person_id <> '' AND p.person_id = '' THEN r.person_id "
                    "ELSE p.person_id END",
                )
            )
        if self.meta_columns and not self.target.metadata_on_participant:
            merged, params = self._merged(PERSON_TABLE)
            assignments.append(("metadata", merged))
        self.person_columns = [name for name, _ in assignments]
        select = "".join(f", {sql} AS {name}" for name, sql in assignments)
        changed = " OR ".join(f"{sql} IS DISTINCT FROM p.{name}" for name, sql in assignments)
        self._cursor.execute(
            f"CREATE TEMP TABLE {PEOPLE} AS SELECT r.seq, r.n, p.id AS pk{select}, "
            f"{changed or 'FALSE'} AS changed FROM {ROWS} r JOIN {PERSON_TABLE} p "
            f"ON p.id = r.pk WHERE {self._valid()}",
            params * 2,
        )

    def _changes_of_participants(self) -> None:
        assignments: list[tuple[str, str]] = []
        params: list = []
        if "role" in self.fields:
            assignments.append(("role", self._blank_keeps("r.role", "pt.role")))
        if self.meta_columns and self.target.metadata_on_participant:
            merged, params = self._merged(PARTICIPANT_TABLE)
            assignments.append(("metadata", merged))
        self.participant_columns = [name for name, _ in assignments]
        select = "".join(f", {sql} AS {name}" for name, sql in assignments)
        changed = " OR ".join(f"{sql} IS DISTINCT FROM pt.{name}" for name, sql in assignments)
        self._cursor.execute(
            f"CREATE TEMP TABLE {MEMBERS} AS SELECT r.seq, r.n, pt.id AS pk{select}, "
            f"{changed or 'FALSE'} AS changed FROM {ROWS} r JOIN {PARTICIPANT_TABLE} pt "
            f"ON pt.id = r.participant_pk WHERE {self._valid()}",
            params * 2,
        )

    def _summary(self) -> SetPlan:
        cursor, plan = self._cursor, SetPlan()
        project = self.project_id is not None
        members = f"LEFT JOIN {MEMBERS} m ON m.seq = r.seq" if project else ""
        member_changed = "OR r.participant_pk IS NULL OR m.changed" if project else ""
        cursor.execute(
            "SELECT count(*) FILTER (WHERE r.pk IS NULL), "
            f"count(*) FILTER (WHERE r.pk IS NOT NULL AND (pp.changed {member_changed})), "
            f"count(*) FILTER (WHERE r.pk IS NOT NULL AND NOT (pp.changed {member_changed})), "
            "count(*) FILTER (WHERE r.pk IS NULL OR r.participant_pk IS NULL) "
            f"FROM {ROWS} r LEFT JOIN {PEOPLE} pp ON pp.seq = r.seq {members} "
            f"WHERE {self._valid()}"
        )
        created, updated, unchanged, added = cursor.fetchone()
        plan.counts = {CREATE: created, UPDATE: updated, UNCHANGED: unchanged}
        plan.added = added if project else 0
        labels = self.target.labels
        cursor.execute(
            f"SELECT n, person_id, email, ambiguous, duplicate_of FROM {ROWS} "
            "WHERE ambiguous IS NOT NULL OR duplicate_of IS NOT NULL ORDER BY n"
        )
        for number, person_id, email, ambiguous, first in cursor.fetchall():
            if ambiguous:
                plan.errors.append(ambiguous_email_error(number, email or "", ambiguous, labels))
            else:
                plan.errors.append(same_person_error(number, person_id, email, first, labels))
        cursor.execute(
            f"SELECT (seq - 1) / %s, count(*) FROM {ROWS} GROUP BY 1 ORDER BY 1",
            [self.chunk_rows],
        )
        self._chunk_numbers = []
        for chunk, count in cursor.fetchall():
            self._chunk_numbers.append(chunk)
            plan.chunks.append(count)
        return plan

    # --- Writing ----------------------------------------------------------------------------
    def apply(self, plan: SetPlan, on_chunk: Callable[[int], None] | None = None) -> None:
        """Write ``plan`` chunk by chunk (``on_chunk(rows done)`` after each), in the caller's
        transaction: updates of people, new people with their participants, participants of
        people already in the directory, updates of participants."""
        cursor, target = self._cursor, self.target
        now = timezone.now()
        done = 0
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [PERSON_TABLE])
        sequence = f"'{cursor.fetchone()[0]}'::regclass"
        new_metadata, new_params = self._new_metadata()
        on_person = not target.metadata_on_participant
        person_metadata = new_metadata if on_person else "'{}'::jsonb"
        member_metadata = "'{}'::jsonb" if on_person else new_metadata
        role = "coalesce(r.role, '')" if "role" in self.fields else "''"
        texts = ", ".join(f"coalesce(r.{name}, '')" for name in ("person_id", *CHANGEABLE))
        text_columns = ", ".join(("person_id", *CHANGEABLE))
        for chunk, count in zip(self._chunk_numbers, plan.chunks, strict=True):
            low, high = chunk * self.chunk_rows, (chunk + 1) * self.chunk_rows

            def within(alias: str, low=low, high=high) -> str:
                return f"{alias}.seq > {low} AND {alias}.seq <= {high}"

            if self.person_columns:
                sets = ", ".join(f"{name} = c.{name}" for name in self.person_columns)
                cursor.execute(
                    f"UPDATE {PERSON_TABLE} p SET {sets}, updated_at = %s FROM {PEOPLE} c "
                    f"WHERE p.id = c.pk AND c.changed AND {within('c')}",
                    [now],
                )
            new_rows = f"FROM {ROWS} r WHERE r.pk IS NULL AND {self._valid()} AND {within('r')}"
            people = (
                f"INSERT INTO {PERSON_TABLE} (id, brand_id, {text_columns}, metadata, "
                f"created_at, updated_at) SELECT r.id, %s, {texts}, {person_metadata}, %s, %s "
                "FROM new r"
            )
            if self.project_id is None:
                cursor.execute(
                    f"WITH new AS (SELECT nextval({sequence}) AS id, r.* {new_rows}) {people}",
                    [target.brand.pk, *(new_params if on_person else []), now, now],
                )
            else:
                cursor.execute(
                    f"WITH new AS MATERIALIZED (SELECT nextval({sequence}) AS id, r.* {new_rows}), "
                    f"people AS ({people}) INSERT INTO {PARTICIPANT_TABLE} (project_id, "
                    "person_id, role, metadata, added_by_id, created_at, updated_at) "
                    f"SELECT %s, r.id, {role}, {member_metadata}, %s, %s, %s FROM new r",
                    [
                        target.brand.pk,
                        *(new_params if on_person else []),
                        now,
                        now,
                        self.project_id,
                        *([] if on_person else new_params),
                        target.actor_id,
                        now,
                        now,
                    ],
                )
                cursor.execute(
                    f"INSERT INTO {PARTICIPANT_TABLE} (project_id, person_id, role, metadata, "
                    f"added_by_id, created_at, updated_at) SELECT %s, r.pk, {role}, "
                    f"{member_metadata}, %s, %s, %s FROM {ROWS} r WHERE r.pk IS NOT NULL AND "
                    f"r.participant_pk IS NULL AND {self._valid()} AND {within('r')}",
                    [
                        self.project_id,
                        *([] if on_person else new_params),
                        target.actor_id,
                        now,
                        now,
                    ],
                )
                if self.participant_columns:
                    sets = ", ".join(f"{name} = c.{name}" for name in self.participant_columns)
                    cursor.execute(
                        f"UPDATE {PARTICIPANT_TABLE} pt SET {sets}, updated_at = %s "
                        f"FROM {MEMBERS} c WHERE pt.id = c.pk AND c.changed AND {within('c')}",
                        [now],
                    )
            done += count
            if on_chunk is not None:
                on_chunk(done)

    def close(self) -> None:
        self._cursor.execute(f"DROP TABLE IF EXISTS {ROWS}, {PEOPLE}, {MEMBERS}")
