"""Transactional personal links: one call upserts the person and the participant, stores the
transaction and makes the link, in one database transaction; a bulk call does the same for up
to ``MAX_BULK_ITEMS`` items with a constant number of statements.

One engine serves both (``transactional_links_create``; the single call is a batch of one):
it validates every item in Python, answers replays from one read, then, in one database
transaction, locks the contact identities, reads the directory once, folds the items into it
in order (the same rules as one call after another), and writes people, participants, links
and transactions with a few set-based statements (``INSERT ... SELECT FROM unnest(arrays)`` on
PostgreSQL, ``bulk_create`` elsewhere). Each item answers its own link or its own error. On
PostgreSQL one new item is written by one statement instead (``_write_one``): a stored
function, ``relay_transactional_link``, applies the same rules in the database.

Idempotent by data: the ``Idempotency-Key`` (or the caller's transaction id) is unique per
project on ``Transaction``; a retry with the same body answers the stored link, the same key
with another body raises ``IdempotencyConflict`` naming what differs. Every link belongs to
the project's transactional distribution of its channel label, so it counts as an invite.
"""

from __future__ import annotations

import hashlib
import json
import operator
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import reduce
from itertools import count
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from brands.models import Brand
from brands.scoping import fresh_copy
from core.tokens import new_tokens
from distributions.models import Distribution
from participants.metadata import is_protected
from participants.models import Participant, Person
from participants.phones import PhoneError, phone_to_e164
from participants.services import _keep_opt_out
from participants.upserts import _update_rows
from participants.values import metadata_clean, text_refusal
from projects.models import Project, Response, SurveyLink
from projects.transactions import Transaction

MAX_BULK_ITEMS = 1000
MAX_DATA_FIELDS = 100
IDENTITY_FIELDS = ("person_id", "email", "phone")
NAME_FIELDS = ("first_name", "last_name", "username")
# Distribution.channel of a transactional distribution whose label is not a sending channel.
OTHER_CHANNEL = "api"
# First key of our advisory locks ("tx"): the second is a hash of one contact identity.
IDENTITY_LOCK_CLASS = 0x7478
PERSON_COLUMNS = (*IDENTITY_FIELDS, *NAME_FIELDS, "metadata")
# A write that loses a race (a token drawn twice, a PersonID an import inserted meanwhile)
# is planned and written again from the directory as it is then, this many times in all.
WRITE_ATTEMPTS = 3


class ProjectNotCollecting(Exception):
    """The project does not accept responses now: ``reason`` is paused, closed or not_yet."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StaleProject(Exception):
    """A call made with a project read earlier (``verify_project``) found it changed, or could
    not have it checked: the caller reads the project again and repeats the call."""


class IdempotencyConflict(Exception):
    """The key (or transaction id) was used before with another body: ``differences`` names
    the fields that differ (``transaction.data``, ``contact.email``...)."""

    def __init__(self, differences: list[str]):
        super().__init__(", ".join(differences))
        self.differences = differences


@dataclass
class LinkResult:
    """What a call answers about one link (plain values: a bulk call makes a thousand)."""

    link_id: int
    token: str
    expires_at: datetime | None
    distribution_id: int | None
    person: int | None  # the directory person's pk
    person_id: str  # the brand's PersonID
    participant: int | None
    transaction: int  # the Transaction's pk
    transaction_id: str  # the caller's id
    created: bool

    @property
    def url(self) -> str:
        return f"{settings.PUBLIC_BASE_URL}/s/{self.token}"

    def replayed(self) -> LinkResult:
        return replace(self, created=False)


def request_fingerprint(body: dict) -> str:
    """sha256 of the canonical JSON of the call's body (key order and spacing do not count)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _differences(stored: dict, wanted: dict) -> list[str]:
    """Top-level fields that differ, one level deeper for objects (``contact.email``)."""
    names = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            inner = [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            names.extend(inner or [key])
        else:
            names.append(key)
    return names


def closed_reason(project: Project, *, now: datetime | None = None) -> str | None:
    """Why the project takes no responses now (None when it does)."""
    now = now or timezone.now()
    if project.stage == Project.Stage.ACTIVE and project.is_within_availability(now):
        return None
    if project.stage == Project.Stage.PAUSED:
        return "paused"
    if project.stage == Project.Stage.NEW:
        return "not_started"
    if (
        project.stage == Project.Stage.ACTIVE
        and project.available_from
        and now < project.available_from
    ):
        return "not_yet"
    return "closed"


@dataclass
class LinkRequest:
    """One item of a call, as the API validated it. ``body`` is the item as received (its
    fingerprint tells a retry from a reuse of the key); ``idempotency_key`` defaults to
    ``txn:<transaction id>``."""

    contact: dict
    transaction_id: str
    occurred_at: datetime | None = None
    data: dict | None = None
    channel_label: str = "api"
    expires_at: datetime | None = None
    idempotency_key: str = ""
    body: dict | None = None


@dataclass(eq=False)
class _Item:
    index: int
    request: LinkRequest
    key: str
    fingerprint: str
    body: dict
    values: dict = field(default_factory=dict)
    person: _PersonRow | None = None

    @property
    def transaction_id(self) -> str:
        return self.request.transaction_id


def _item(index: int, request: LinkRequest) -> _Item:
    body = request.body if request.body is not None else {}
    return _Item(
        index=index,
        request=request,
        key=request.idempotency_key or f"txn:{request.transaction_id}",
        fingerprint=request_fingerprint(body),
        body=body,
    )


@dataclass
class _StoredLink:
    """What a replay answers about a stored transaction, and nothing more (the rows are
    wide: request bodies, people)."""

    pk: int
    idempotency_key: str
    external_id: str
    fingerprint: str
    request: dict
    link_id: int | None
    token: str | None
    expires_at: datetime | None
    distribution_id: int | None
    participant_id: int | None
    person: int | None  # the person's pk
    person_id: str | None  # their PersonID


_STORED_FIELDS = (
    "pk",
    "idempotency_key",
    "external_id",
    "fingerprint",
    "request",
    "link_id",
    "link__token",
    "link__expires_at",
    "link__distribution_id",
    "participant_id",
    "participant__person_id",
    "participant__person__person_id",
)


def _pg_select(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _json(value):
    """A JSON column read with a raw cursor (Django leaves PostgreSQL's jsonb as text)."""
    return json.loads(value) if isinstance(value, str) else value


def _stored_rows(
    project: Project, keys: set[str], ids: set[str], *, after: tuple[str, list] | None = None
) -> list[_StoredLink]:
    """The project's transactions stored under ``keys`` or ``ids``, the last stored first.
    PostgreSQL: written SQL (the ORM's compilation of this join costs more than the query).
    ``after`` (the identity locks) goes first, in one round trip with a look for any such
    row: each statement of the string reads the database as it is when that statement
    starts, so the look sees what a competitor committed before releasing the locks."""
    if connection.vendor != "postgresql":
        rows = (
            Transaction.objects.filter(project=project)
            .filter(Q(idempotency_key__in=sorted(keys)) | Q(external_id__in=sorted(ids)))
            .order_by("-pk")
            .values_list(*_STORED_FIELDS)
        )
        return [_StoredLink(*row) for row in rows]
    table = Transaction._meta.db_table
    where = (
        "t.project_id = %s AND (t.idempotency_key = ANY(%s::varchar(255)[]) "
        "OR t.external_id = ANY(%s::varchar(128)[]))"
    )
    params = [project.pk, pg_array_literal(sorted(keys)), pg_array_literal(sorted(ids))]
    if after is not None:
        # Usually nothing is stored: a bare look first (planning the join below costs the
        # server several times this whole read).
        first, first_params = after
        look = f"{first}; SELECT 1 FROM {table} t WHERE {where} LIMIT 1"  # noqa: S608
        if not _pg_select(look, [*first_params, *params]):
            return []
    rows = _pg_select(
        f"SELECT t.id, t.idempotency_key, t.external_id, t.fingerprint, t.request, t.link_id, "  # noqa: S608 - names from meta
        "l.token, l.expires_at, l.distribution_id, t.participant_id, pa.person_id, pe.person_id "
        f"FROM {table} t "
        f"LEFT JOIN {SurveyLink._meta.db_table} l ON l.id = t.link_id "
        f"LEFT JOIN {Participant._meta.db_table} pa ON pa.id = t.participant_id "
        f"LEFT JOIN {Person._meta.db_table} pe ON pe.id = pa.person_id "
        f"WHERE {where} ORDER BY t.id DESC",
        params,
    )
    return [_StoredLink(*row[:4], _json(row[4]), *row[5:]) for row in rows]


class _Stored:
    """Transactions already stored under the items' keys or transaction ids (one query)."""

    def __init__(self, project: Project, items: list[_Item], *, after=None):
        """``after``: a statement (and its parameters) to run first, in the same round trip
        (PostgreSQL)."""
        self.by_key: dict[str, _StoredLink] = {}
        self.by_id: dict[str, _StoredLink] = {}
        if not items:
            return
        keys = {i.key for i in items}
        ids = {i.transaction_id for i in items}
        # The first stored wins: it is written last into the maps.
        for row in _stored_rows(project, keys, ids, after=after):
            self.by_key[row.idempotency_key] = row
            self.by_id[row.external_id] = row

    def match(self, item: _Item) -> _StoredLink | None:
        found = [t for t in (self.by_key.get(item.key), self.by_id.get(item.transaction_id)) if t]
        return min(found, key=lambda t: t.pk) if found else None


def _replay(stored: _StoredLink, item: _Item) -> LinkResult | IdempotencyConflict:
    if stored.fingerprint != item.fingerprint:
        return IdempotencyConflict(_differences(stored.request, item.body) or ["body"])
    return LinkResult(
        link_id=stored.link_id,
        token=stored.token or "",
        expires_at=stored.expires_at,
        distribution_id=stored.distribution_id,
        person=stored.person,
        person_id=stored.person_id or "",
        participant=stored.participant_id,
        transaction=stored.pk,
        transaction_id=stored.external_id,
        created=False,
    )


def _contact_values(contact: dict, *, country: str) -> dict[str, Any]:
    values = {k: (contact.get(k) or "").strip() for k in (*IDENTITY_FIELDS, *NAME_FIELDS)}
    values = {k: v for k, v in values.items() if v}
    if not any(values.get(k) for k in IDENTITY_FIELDS):
        raise ValidationError({"contact": "Give a person_id, an email or a phone."})
    refusals = {
        f"contact.{name}": refusal
        for name, value in values.items()
        if name != "phone" and (refusal := text_refusal(name, value))
    }
    if refusals:
        raise ValidationError(refusals)
    if "email" in values:
        values["email"] = values["email"].lower()
    if "phone" in values:
        try:
            values["phone"] = phone_to_e164(values["phone"], default_country=country)
        except PhoneError as exc:
            raise ValidationError({"contact.phone": str(exc)}) from exc
    if contact.get("metadata"):
        values["metadata"] = metadata_clean(contact["metadata"], field="contact.metadata")
    return values


def _identity_lock_key(brand_id: int, values: dict) -> int:
    kind = next(k for k in IDENTITY_FIELDS if values.get(k))
    digest = zlib.crc32(f"{brand_id}:{kind}:{values[kind]}".encode())
    return digest - (1 << 32) if digest >= (1 << 31) else digest  # a signed 32-bit int


def _identity_locks(brand_id: int, items: list[_Item]) -> tuple[str, list]:
    """The statement that serialises calls about one contact identity until the transaction
    ends, so that two simultaneous calls (different transactions, or the same bulk twice) for
    one new email make one person. The locks are taken in ascending order, in one statement:
    two bulk calls sharing contacts wait for each other instead of deadlocking. PostgreSQL
    only: SQLite admits one writer at a time. A different identity of the same person
    (PersonID in one call, email only in the other) is not covered: the PersonID's unique
    constraint and a second attempt cover the PersonID case."""
    keys = sorted({_identity_lock_key(brand_id, item.values) for item in items})
    return (
        "SELECT count(pg_advisory_xact_lock(%s, k)) FROM unnest(%s::int[]) AS k",
        [IDENTITY_LOCK_CLASS, keys],
    )


class _PersonRow:
    """A directory person as this call reads, changes or makes them (a ``Person`` instance
    costs more than its write)."""

    __slots__ = ("pk", "id", *PERSON_COLUMNS, "updated_at")

    def __init__(self, values: dict, metadata: dict, pk: int | None = None):
        self.pk = self.id = pk
        for name in (*IDENTITY_FIELDS, *NAME_FIELDS):
            setattr(self, name, values.get(name) or "")
        self.metadata = metadata


def _directory_rows(brand_id: int, pids: set, emails: set, phones: set) -> list[_PersonRow]:
    """The brand's people with one of these PersonIDs, emails or phones, by pk."""
    columns = ("pk", *PERSON_COLUMNS)
    if connection.vendor != "postgresql":
        lookups = []
        if pids:
            lookups.append(Q(person_id__in=sorted(pids)) & ~Q(person_id=""))
        if emails:
            lookups.append(Q(email__in=sorted(emails)))
        if phones:
            lookups.append(Q(phone__in=sorted(phones)))
        people = Person.objects.filter(reduce(operator.or_, lookups), brand_id=brand_id)
        rows = people.order_by("pk").values_list(*columns)
    else:
        # Written SQL: the ORM's compilation costs more than the query. ``person_id <> ''``
        # lets PostgreSQL use the partial unique index.
        where, params = [], [brand_id]
        for name, values, cast in (
            ("person_id", pids, "varchar(128)"),
            ("email", emails, "varchar(254)"),
            ("phone", phones, "varchar(20)"),
        ):
            if values:
                where.append(f"{name} = ANY(%s::{cast}[])")
                params.append(pg_array_literal(sorted(values)))
        if pids:
            where[0] = f"({where[0]} AND NOT (person_id = ''))"
        names = ", ".join(PERSON_COLUMNS)
        rows = _pg_select(
            f"SELECT id, {names} FROM {Person._meta.db_table} "  # noqa: S608 - names from meta
            f"WHERE brand_id = %s AND ({' OR '.join(where)}) ORDER BY id",
            params,
        )
    return [
        _PersonRow(dict(zip(columns, row, strict=True)), _json(row[-1]) or {}, pk=row[0])
        for row in rows
    ]


class _Directory:
    """The brand's people the items name, read in one query, then changed in memory item by
    item with the rules of one call (found by PersonID, else email, else phone, the smallest
    pk first; given values win; metadata merges; ``Opted out`` is never written), and
    written with one insert and one update."""

    def __init__(self, brand_id: int, items: list[_Item]):
        self.brand_id = brand_id
        self.order: dict[int, int] = {}  # id(person) -> rank: stored pk, then new in order
        self.index: dict[str, dict[str, list[_PersonRow]]] = {k: {} for k in IDENTITY_FIELDS}
        self.new: list[_PersonRow] = []
        self.changed: dict[int, _PersonRow] = {}
        self.fields: set[str] = set()
        self._ranks = count(1 << 62)
        pids = {i.values["person_id"] for i in items if i.values.get("person_id")}
        unnamed = [i.values for i in items if not i.values.get("person_id")]
        emails = {v["email"] for v in unnamed if v.get("email")}
        phones = {v["phone"] for v in unnamed if v.get("phone")}
        for person in _directory_rows(brand_id, pids, emails, phones):
            self._add(person, rank=person.pk)

    def _add(self, person: _PersonRow, *, rank: int) -> None:
        self.order[id(person)] = rank
        for name in IDENTITY_FIELDS:
            self._index(person, name)

    def _index(self, person: _PersonRow, name: str) -> None:
        value = getattr(person, name)
        if value:
            bucket = self.index[name].setdefault(value, [])
            bucket.append(person)
            bucket.sort(key=lambda p: self.order[id(p)])

    def _unindex(self, person, name: str) -> None:
        value = getattr(person, name)
        if value and person in self.index[name].get(value, ()):
            self.index[name][value].remove(person)

    def find(self, values: dict) -> _PersonRow | None:
        for name in IDENTITY_FIELDS:
            if values.get(name):
                found = self.index[name].get(values[name])
                if found or name == "person_id":
                    return found[0] if found else None
        return None

    def upsert(self, values: dict) -> _PersonRow:
        """The item's person, changed in memory. Raises ValidationError (metadata that tries
        to write ``Opted out``) leaving the person as it was."""
        person = self.find(values)
        if person is None:
            metadata = values.get("metadata")
            person = _PersonRow(values, _keep_opt_out({}, metadata) if metadata else {})
            self.new.append(person)
            self._add(person, rank=next(self._ranks))
            return person
        changes = {k: v for k, v in values.items() if k != "metadata" and getattr(person, k) != v}
        if "metadata" in values:
            merged = {**person.metadata, **values["metadata"]}
            if merged != person.metadata:
                changes["metadata"] = _keep_opt_out(person.metadata, merged)
        for name, value in changes.items():
            if name in IDENTITY_FIELDS:
                self._unindex(person, name)
            setattr(person, name, value)
            if name in IDENTITY_FIELDS:
                self._index(person, name)
        if changes and person.pk:
            self.changed[person.pk] = person
            self.fields |= set(changes)
        return person

    def write(self, now: datetime) -> None:
        if self.new:
            rows = [
                {
                    "brand_id": self.brand_id,
                    **{name: getattr(p, name) for name in PERSON_COLUMNS},
                    "created_at": now,
                    "updated_at": now,
                }
                for p in self.new
            ]
            for person, pk in zip(self.new, _bulk_insert(Person, rows), strict=True):
                person.pk = person.id = pk
        if self.changed:
            people = list(self.changed.values())
            for person in people:
                person.updated_at = now
            _update_rows(Person, people, sorted(self.fields | {"updated_at"}))


def _participants(project: Project, person_pks: set[int], now: datetime) -> dict[int, int]:
    """``{person pk: participant pk}``: the project's participants of these people, the
    missing ones made (elsewhere than PostgreSQL: there ``_insert_links`` does it)."""
    pks = sorted(person_pks)
    Participant.objects.bulk_create(
        [Participant(project=project, person_id=pk, created_at=now, updated_at=now) for pk in pks],
        ignore_conflicts=True,
    )
    return dict(
        Participant.objects.filter(project=project, person_id__in=pks).values_list(
            "person_id", "pk"
        )
    )


# (project pk, label) -> pk of the project's transactional distribution of that label, kept by
# the process: it is made once and never changes. A distribution deleted meanwhile fails the
# link's foreign key; the write then forgets these and tries again.
_distribution_pks: dict[tuple[int, str], int] = {}
DISTRIBUTION_CACHE_SIZE = 10_000


def transactional_distribution_cache_clear() -> None:
    _distribution_pks.clear()


def _distributions(project: Project, labels: set[str]) -> dict[str, int]:
    """``{label: pk}`` of the project's transactional distributions, the missing ones made."""
    found = {
        label: _distribution_pks[project.pk, label]
        for label in labels
        if (project.pk, label) in _distribution_pks
    }
    wanted = labels - set(found)
    if not wanted:
        return found
    found.update(
        Distribution.objects.filter(
            project=project, kind=Distribution.Kind.TRANSACTIONAL, label__in=sorted(wanted)
        ).values_list("label", "pk")
    )
    for label in sorted(labels - set(found)):
        found[label] = transactional_distribution(project=project, label=label).pk
    if len(_distribution_pks) >= DISTRIBUTION_CACHE_SIZE:
        _distribution_pks.clear()
    _distribution_pks.update({(project.pk, label): found[label] for label in wanted})
    return found


def _pg_element(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pg_array_literal(values: list) -> str:
    """``values`` as one PostgreSQL array literal (``{"a","b",NULL}``), to be cast by the
    statement. One text parameter per column: psycopg2 would send ``ARRAY[...]`` with one
    expression per element, which the server parses and types one by one (about five times
    slower for a 1,000-row insert)."""
    if all(type(v) is str for v in values):  # the common case, without a call per element
        return '{"' + '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values) + '"}'
    return "{" + ",".join(map(_pg_element, values)) + "}"


@dataclass
class _InsertSql:
    """``INSERT INTO table (columns) SELECT selects FROM unnest(arrays) AS <alias>(names)``:
    one array literal per given column, the model's defaults for the others."""

    sql: str
    params: list


@dataclass(frozen=True)
class _InsertPlan:
    """What ``_insert_sql`` decides from the model alone, kept per process: the statement's
    text, the given fields (name, is JSON) in array order, the defaulted fields in order."""

    sql: str
    given: tuple[tuple[str, bool], ...]
    defaulted: tuple  # field metas


_insert_plans: dict[tuple, _InsertPlan] = {}


def _insert_plan(model, given: frozenset, alias: str, computed: tuple, extra: tuple):
    columns, selects, arrays, defaulted = [], [], [], []
    computed_sql = dict(computed)
    for meta in model._meta.concrete_fields:
        if meta.primary_key:
            continue
        columns.append(f'"{meta.column}"')
        name = meta.name if meta.name in given else meta.attname
        if meta.attname in computed_sql:
            selects.append(computed_sql[meta.attname])
        elif name in given:
            is_json = meta.get_internal_type() == "JSONField"
            arrays.append((name, meta.db_type(connection), is_json))
            selects.append(f"{alias}.c{len(arrays) - 1}")
        else:
            selects.append("%s")
            defaulted.append(meta)
    casts = [cast for _, cast, _ in arrays] + [cast for _, cast in extra]
    names = [f"c{i}" for i in range(len(arrays))] + [name for name, _ in extra]
    unnest = ", ".join(f"%s::{cast}[]" for cast in casts)
    sql = (
        f'INSERT INTO "{model._meta.db_table}" ({", ".join(columns)}) '  # noqa: S608 - names from meta
        f"SELECT {', '.join(selects)} FROM unnest({unnest}) AS {alias}({', '.join(names)})"
    )
    given_fields = tuple((name, is_json) for name, _, is_json in arrays)
    return _InsertPlan(sql=sql, given=given_fields, defaulted=tuple(defaulted))


def _insert_sql(
    model, rows: list[dict], *, alias: str = "u", computed: dict | None = None, extra=()
) -> _InsertSql:
    """``computed``: column attname -> SQL expression instead of an array (``l.id``);
    ``extra``: (name, cast, values) arrays that are not columns (to join on)."""
    key = (
        model,
        frozenset(rows[0]),
        alias,
        tuple(sorted((computed or {}).items())),
        tuple((name, cast) for name, cast, _ in extra),
    )
    plan = _insert_plans.get(key)
    if plan is None:
        plan = _insert_plans[key] = _insert_plan(*key)
    constants = []
    for meta in plan.defaulted:
        default = meta.get_default() if meta.has_default() else None
        if getattr(meta, "auto_now_add", False) or getattr(meta, "auto_now", False):
            default = timezone.now()
        constants.append(meta.get_db_prep_save(default, connection))
    arrays = [
        [json.dumps(row[name], ensure_ascii=False) for row in rows]
        if is_json
        else [row[name] for row in rows]
        for name, is_json in plan.given
    ]
    arrays.extend(values for _, _, values in extra)
    return _InsertSql(plan.sql, [*constants, *map(pg_array_literal, arrays)])


def _bulk_insert(model, rows: list[dict]) -> list[int]:
    """Insert ``rows`` (field name -> value; every row the same names) and return their pks
    in order. PostgreSQL: one ``INSERT ... SELECT FROM unnest(arrays)``; elsewhere
    ``bulk_create``."""
    if connection.vendor != "postgresql":
        objects = model.objects.bulk_create([model(**row) for row in rows])
        return [obj.pk for obj in objects]
    insert = _insert_sql(model, rows)
    with connection.cursor() as cursor:
        cursor.execute(insert.sql + " RETURNING id", insert.params)
        return [row[0] for row in cursor.fetchall()]


def _insert_links(
    project: Project, people: list[int], links: list[dict], records: list[dict], now: datetime
) -> list[tuple[int, int, int]]:
    """Make the participants of ``people`` (one person pk per link, in order) that the project
    lacks, insert the links and their transactions (``records``: same order, distinct
    ``external_id``); answer ``(link pk, transaction pk, participant pk)`` per item.

    PostgreSQL: one statement (the links join the participants, made or found, on the person;
    the transactions join the links on their token); elsewhere four."""
    if connection.vendor != "postgresql":
        participants = _participants(project, set(people), now)
        links = [
            {**link, "participant_id": participants[person]}
            for link, person in zip(links, people, strict=True)
        ]
        link_pks = _bulk_insert(SurveyLink, links)
        rows = [
            {**r, "link_id": pk, "participant_id": link["participant_id"]}
            for r, pk, link in zip(records, link_pks, links, strict=True)
        ]
        record_pks = _bulk_insert(Transaction, rows)
        return [
            (pk, record_pk, link["participant_id"])
            for pk, record_pk, link in zip(link_pks, record_pks, links, strict=True)
        ]
    table = Participant._meta.db_table
    wanted = pg_array_literal(sorted(set(people)))
    made = _insert_sql(
        SurveyLink,
        links,
        computed={"participant_id": "pa.id"},
        extra=[("person", "bigint", people)],
    )
    joined = _insert_sql(
        Transaction,
        records,
        alias="v",
        computed={"link_id": "l.id", "participant_id": "l.participant_id"},
        extra=[("token", "text", [link["token"] for link in links])],
    )
    # The participants' SELECT sees the table as it was before their INSERT: together they
    # answer every participant once, old and new.
    sql = (
        f"WITH made AS (INSERT INTO {table} (project_id, person_id, role, metadata, "  # noqa: S608
        "added_by_id, created_at, updated_at) SELECT %s, u.person_id, '', '{}'::jsonb, "
        "NULL, %s, %s FROM unnest(%s::bigint[]) AS u(person_id) "
        "ON CONFLICT (project_id, person_id) DO NOTHING RETURNING person_id, id), "
        f"pa AS (SELECT person_id, id FROM made UNION ALL SELECT person_id, id FROM {table} "
        "WHERE project_id = %s AND person_id = ANY(%s::bigint[])), "
        f"l AS ({made.sql} JOIN pa ON pa.person_id = u.person "
        "RETURNING id, token, participant_id) "
        f"{joined.sql} JOIN l ON l.token = v.token "
        "RETURNING external_id, link_id, id, participant_id"
    )
    params = [project.pk, now, now, wanted, project.pk, wanted, *made.params, *joined.params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # The items' transaction ids are distinct (twins were set aside): they name the rows.
        by_id = {row[0]: row[1:] for row in cursor.fetchall()}
    if len(by_id) < len(records):
        # A participant another transaction made after this statement's snapshot (neither
        # made nor seen): its links were not inserted. Lose the race like a drawn-twice token
        # and write again, seeing it.
        raise IntegrityError("participant made concurrently")
    return [by_id[record["external_id"]] for record in records]


def transactional_links_create(
    *,
    project: Project,
    requests: list[LinkRequest],
    now: datetime | None = None,
    verify_project: bool = False,
) -> list[LinkResult | Exception]:
    """Make the links of ``requests``; answer, in their order, a ``LinkResult`` or the
    item's error (``ValidationError``, ``ProjectNotCollecting``, ``IdempotencyConflict``).

    Items are validated first; replays are answered from one read. The new ones are written
    in one database transaction with a constant number of statements, whatever their count.
    A bad item writes nothing and stops nothing. A retry, even a concurrent one, answers the
    stored links (``created`` False): calls about the same contacts wait for each other, and
    the second finds what the first stored. Two items of one call with the same key (or
    transaction id) are one link: the second is its replay, or a conflict.

    ``verify_project``: ``project`` was read earlier (the API keeps it per process). Its
    write checks that the fields decided with are still the project's, in the same statement,
    and raises ``StaleProject`` when they are not, or when the write cannot check them (not
    the one-statement write): the caller then reads the project and calls again.
    """
    now = now or timezone.now()
    items = [_item(index, request) for index, request in enumerate(requests)]
    answers: list[LinkResult | Exception | None] = [None] * len(items)
    reason = closed_reason(project, now=now)
    # A replay answers its stored link before anything refuses it (a retry after a pause, or
    # after its expiry, still answers 200). On PostgreSQL the write reads the stored keys again
    # after its locks, so only the items that would be refused need this read there.
    early = items
    if connection.vendor == "postgresql" and not reason:
        early = [i for i in items if i.request.expires_at and i.request.expires_at <= now]
    stored = _Stored(project, early)
    pending = []
    for item in items:
        match = stored.match(item)
        if match is not None:
            answers[item.index] = _replay(match, item)
        else:
            pending.append(item)
    valid: list[_Item] = []
    for item in pending:
        try:
            if reason:
                raise ProjectNotCollecting(reason)
            expires = item.request.expires_at
            if expires is not None and expires <= now:
                raise ValidationError({"expires_at": "Must be in the future."})
            item.values = _contact_values(item.request.contact, country=project.country)
        except (ValidationError, ProjectNotCollecting) as exc:
            answers[item.index] = exc
        else:
            valid.append(item)
    firsts, twins = _split_twins(valid)
    if firsts:
        one_statement = _one_statement(firsts)
        if verify_project and not one_statement:
            raise StaleProject()
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                if one_statement:
                    written = _write_one(project, firsts[0], now=now, verify=verify_project)
                else:
                    with transaction.atomic():
                        # After a lost race, read again what the winner stored (PostgreSQL
                        # always reads it, after its locks).
                        written = _write(project, firsts, now=now, recheck=attempt > 1)
                break
            except IntegrityError:
                transactional_distribution_cache_clear()
                if attempt == WRITE_ATTEMPTS:
                    raise
        for item in firsts:
            answers[item.index] = written[item.index]
    for twin, first in twins:
        answers[twin.index] = _twin_answer(twin, first, answers[first.index])
    return answers  # type: ignore[return-value]


def _split_twins(items: list[_Item]) -> tuple[list[_Item], list[tuple[_Item, _Item]]]:
    """The first item of each key (or transaction id), and the later ones with their first."""
    firsts: list[_Item] = []
    twins: list[tuple[_Item, _Item]] = []
    by_key: dict[str, _Item] = {}
    by_id: dict[str, _Item] = {}
    for item in items:
        first = by_key.get(item.key) or by_id.get(item.transaction_id)
        if first is not None:
            twins.append((item, first))
            continue
        firsts.append(item)
        by_key[item.key] = item
        by_id[item.transaction_id] = item
    return firsts, twins


def _twin_answer(twin: _Item, first: _Item, answer) -> LinkResult | Exception:
    if twin.fingerprint != first.fingerprint:
        return IdempotencyConflict(_differences(first.body, twin.body) or ["body"])
    if isinstance(answer, LinkResult):
        return answer.replayed()
    return answer


def _write(
    project: Project, items: list[_Item], *, now: datetime, recheck: bool = False
) -> dict[int, Any]:
    """Write the new items; inside the caller's database transaction."""
    answers: dict[int, Any] = {}
    locks = None
    if connection.vendor == "postgresql":
        locks = _identity_locks(project.brand_id, items)
        recheck = True
    if recheck:
        # What a concurrent call about the same contacts stored while this one waited (on
        # PostgreSQL read after the locks, in the same round trip).
        stored = _Stored(project, items, after=locks)
        fresh = []
        for item in items:
            match = stored.match(item)
            if match is not None:
                answers[item.index] = _replay(match, item)
            else:
                fresh.append(item)
        items = fresh
        if not items:
            return answers
    directory = _Directory(project.brand_id, items)
    kept = []
    for item in items:
        try:
            item.person = directory.upsert(item.values)
        except ValidationError as exc:
            answers[item.index] = exc
        else:
            kept.append(item)
    if not kept:
        return answers
    directory.write(now)
    distributions = _distributions(project, {item.request.channel_label for item in kept})
    tokens = new_tokens(len(kept))
    links = [
        {
            "token": token,
            "project_id": project.pk,
            "distribution_id": distributions[item.request.channel_label],
            "channel": Response.Channel.API,
            "expires_at": item.request.expires_at,
            "created_at": now,
        }
        for item, token in zip(kept, tokens, strict=True)
    ]
    records = [
        {
            "project_id": project.pk,
            "external_id": item.transaction_id,
            "occurred_at": item.request.occurred_at or now,
            "data": item.request.data or {},
            "channel_label": item.request.channel_label,
            "idempotency_key": item.key,
            "fingerprint": item.fingerprint,
            "request": item.body,
            "created_at": now,
        }
        for item in kept
    ]
    people = [item.person.pk for item in kept]
    pks = _insert_links(project, people, links, records, now)
    for item, link, (link_pk, record_pk, participant_pk) in zip(kept, links, pks, strict=True):
        answers[item.index] = LinkResult(
            link_id=link_pk,
            token=link["token"],
            expires_at=link["expires_at"],
            distribution_id=link["distribution_id"],
            person=item.person.pk,
            person_id=item.person.person_id,
            participant=participant_pk,
            transaction=record_pk,
            transaction_id=item.transaction_id,
            created=True,
        )
    return answers


def _one_statement(items: list[_Item]) -> bool:
    """Whether ``_write_one`` writes these items: one item, on PostgreSQL, whose metadata
    names no protected key (the Python engine compares it with the stored value)."""
    if connection.vendor != "postgresql" or len(items) != 1:
        return False
    return not any(is_protected(k) for k in items[0].values.get("metadata", ()))


def _project_state(project: Project) -> dict[str, Any]:
    """The project's fields that decide a call (collecting or not, the phones' country)."""
    return {
        "stage": project.stage,
        "default_country": project.default_country,
        "available_from": project.available_from,
        "available_until": project.available_until,
    }


# Projects the one call read, by (brand pk, project pk), for this process's next calls: their
# writes check the project's deciding fields (``_project_state``) in the same statement
# (``verify_project``), so a kept project is never trusted, only spared a read. PostgreSQL
# only (the one-statement write). Each call gets its own copy, as a read gives one.
_kept_projects: dict[tuple[int, int], Project] = {}
KEPT_PROJECTS = 10_000


def kept_project(brand: Brand, pk) -> Project | None:
    """The project ``pk`` of ``brand`` as this process last read it, or None."""
    if brand is None or connection.vendor != "postgresql":
        return None
    try:
        kept = _kept_projects.get((brand.pk, int(pk)))
    except (TypeError, ValueError):
        return None
    if kept is None:
        return None
    project = fresh_copy(kept)
    project.brand = brand  # the caller's brand, as a fresh scoped read sets it
    return project


def keep_project(project: Project) -> None:
    """Keep ``project``, just read in its brand's scope, for ``kept_project``."""
    if connection.vendor != "postgresql":
        return
    if len(_kept_projects) >= KEPT_PROJECTS:
        _kept_projects.clear()
    _kept_projects[project.brand_id, project.pk] = fresh_copy(project)


def forget_project(project: Project) -> None:
    _kept_projects.pop((project.brand_id, project.pk), None)


def _write_one(
    project: Project, item: _Item, *, now: datetime, verify: bool = False
) -> dict[int, Any]:
    """Write one new item with one statement: ``relay_transactional_link`` (migration
    ``projects.0009``) does what ``_write`` does, in the database. Outside a transaction the
    statement is its own (no ``BEGIN``/``COMMIT`` round trips); inside one, a savepoint lets
    a lost race (a token drawn twice) be written again. ``verify``: the statement checks the
    project's state first (``StaleProject`` when it changed)."""
    label = item.request.channel_label
    (token,) = new_tokens(1)
    values = item.values
    expires_at = item.request.expires_at
    payload = {
        "brand": project.brand_id,
        "project": project.pk,
        "now": now.isoformat(),
        "lock_class": IDENTITY_LOCK_CLASS,
        "lock": _identity_lock_key(project.brand_id, values),
        "key": item.key,
        "external_id": item.transaction_id,
        "values": {k: v for k, v in values.items() if k != "metadata"},
        "metadata": values.get("metadata"),
        "distribution": _distributions(project, {label})[label],
        "token": token,
        "channel": Response.Channel.API,
        "expires_at": expires_at.isoformat() if expires_at else None,
        "occurred_at": (item.request.occurred_at or now).isoformat(),
        "data": item.request.data or {},
        "channel_label": label,
        "fingerprint": item.fingerprint,
        "request": item.body,
    }
    if verify:
        payload["project_state"] = _project_state(project)
    statement = "SELECT relay_transactional_link(%s::jsonb)"
    parameter = json.dumps(payload, ensure_ascii=False, default=str)
    scope = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with scope, connection.cursor() as cursor:
        cursor.execute(statement, [parameter])
        (answer,) = cursor.fetchone()
    answer = _json(answer)
    if answer.get("stale"):
        raise StaleProject()
    if answer.get("stored"):
        # A retry, or a concurrent call that stored it first: answer what is stored.
        stored = _Stored(project, [item]).match(item)
        if stored is None:  # deleted since (with its project, or by an admin): write again
            raise IntegrityError("stored transaction vanished")
        return {item.index: _replay(stored, item)}
    return {
        item.index: LinkResult(
            link_id=answer["link"],
            token=token,
            expires_at=expires_at,
            distribution_id=payload["distribution"],
            person=answer["person"],
            person_id=answer["person_id"],
            participant=answer["participant"],
            transaction=answer["transaction"],
            transaction_id=item.transaction_id,
            created=True,
        )
    }


def transactional_distribution(*, project: Project, label: str) -> Distribution:
    """The project's transactional distribution of ``label``, made on first use. Never sent:
    it holds the links made through the API so that they count as invites."""
    now = timezone.now()
    channel = label if label in Distribution.Channel.values else OTHER_CHANNEL
    distribution, _ = Distribution.objects.get_or_create(
        project=project,
        kind=Distribution.Kind.TRANSACTIONAL,
        label=label,
        defaults={
            "channel": channel,
            "name": f"Transactional links ({label})",
            "message": "",
            "status": Distribution.Status.SENT,
            "send_at": now,
            "started_at": now,
        },
    )
    return distribution


def transactional_link_create(
    *,
    project: Project,
    contact: dict,
    transaction_id: str,
    occurred_at: datetime | None = None,
    data: dict | None = None,
    channel_label: str = "api",
    expires_at: datetime | None = None,
    idempotency_key: str = "",
    body: dict | None = None,
) -> LinkResult:
    """One link: ``transactional_links_create`` with one item, its error raised.

    Raises ``ValidationError`` (bad input), ``ProjectNotCollecting`` (paused, closed...) or
    ``IdempotencyConflict``. A retry, even a concurrent one, answers the stored link
    (``created`` False).
    """
    request = LinkRequest(
        contact=contact,
        transaction_id=transaction_id,
        occurred_at=occurred_at,
        data=data,
        channel_label=channel_label,
        expires_at=expires_at,
        idempotency_key=idempotency_key,
        body=body,
    )
    (answer,) = transactional_links_create(project=project, requests=[request])
    if isinstance(answer, Exception):
        raise answer
    return answer
