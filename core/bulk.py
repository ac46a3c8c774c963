"""Many rows in one statement, values bound as they are: ``update_rows`` (``UPDATE … FROM
(VALUES …)``, different values per row), ``insert_rows`` (``INSERT … VALUES``) and
``insert_objects`` (model instances, their new keys set, as ``bulk_create`` does).

Django's ``bulk_update`` and ``Case(When(...))`` build one expression per row in Python, and
``bulk_create`` prepares every field of every object, which costs more than the send itself
at thousands of messages a second. Works on PostgreSQL and SQLite (3.35+: ``RETURNING``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db import models as m

# Rows per statement: 500 rows x 4 values stays far below SQLite's 32,766 bound parameters.
UPDATE_BATCH = 500


def update_rows(
    model,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    *,
    where: str = "",
    params: Sequence = (),
    casts: dict[str, str] | None = None,
    pk: str = "id",
) -> int:
    """Set ``columns`` per row; each row is ``(pk, value, value, …)``. ``where`` is extra SQL
    on the target table (aliased ``t``) with ``params``; ``pk`` names the key column.
    Returns rows changed."""
    return len(
        update_rows_returning(model, columns, rows, where=where, params=params, casts=casts, pk=pk)
    )


def update_rows_returning(
    model,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    *,
    where: str = "",
    params: Sequence = (),
    casts: dict[str, str] | None = None,
    pk: str = "id",
) -> list[int]:
    """``update_rows``, returning the primary keys of the rows it changed (the others did not
    match ``where``)."""
    if not rows:
        return []
    table = connection.ops.quote_name(model._meta.db_table)
    key = connection.ops.quote_name(pk)
    quoted = [connection.ops.quote_name(column) for column in columns]
    casts = casts or {}
    changed: list[int] = []
    for start in range(0, len(rows), UPDATE_BATCH):
        batch = rows[start : start + UPDATE_BATCH]
        width = len(columns) + 1
        placeholders = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(batch))
        names = ", ".join(["id", *[f"c{i}" for i in range(len(columns))]])
        assignments = ", ".join(
            f"{column} = v.c{i}"
            + (
                f"::{casts[columns[i]]}"
                if columns[i] in casts and connection.vendor == "postgresql"
                else ""
            )
            for i, column in enumerate(quoted)
        )
        id_cast = "::bigint" if connection.vendor == "postgresql" else ""
        sql = (
            f"WITH v({names}) AS (VALUES {placeholders}) "  # noqa: S608 - names are ours
            f"UPDATE {table} AS t SET {assignments} FROM v WHERE t.{key} = v.id{id_cast}"
            + (f" AND {where}" if where else "")
            # SQLite's RETURNING names the updated table's columns only, without its alias.
            + (f" RETURNING t.{key}" if connection.vendor == "postgresql" else f" RETURNING {key}")
        )
        flat = [value for row in batch for value in row]
        with connection.cursor() as cursor:
            cursor.execute(sql, [*flat, *params])
            changed += [pk for (pk,) in cursor.fetchall()]
    return changed


# Rows per INSERT: 500 rows x 7 values stays far below SQLite's 32,766 bound parameters.
INSERT_BATCH = 500


def insert_rows(model, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """``INSERT INTO table (columns) VALUES …`` for many rows, values given per row in
    ``columns`` order, already as the database takes them (no defaults, no signals).

    ``bulk_create`` prepares every field of every object in Python (a twentieth of a sending
    worker's time for a window's credit holds); this binds the values as they are."""
    if not rows:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(column) for column in columns)
    row_marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), INSERT_BATCH):
            batch = rows[start : start + INSERT_BATCH]
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES "  # noqa: S608 - names are ours
                + ", ".join([row_marks] * len(batch)),
                [value for row in batch for value in row],
            )


def insert_returning_pk(instance, *, ignore_conflicts: bool = False) -> int | None:
    """``INSERT`` one model instance (every concrete field but the primary key, prepared as
    Django saves it) and return its new primary key, setting it on the instance. With
    ``ignore_conflicts`` a row refused by a unique constraint is not inserted and None comes
    back: one statement, where ``save()`` in a savepoint to catch the ``IntegrityError``
    costs three (and the SQL compiler, a hot webhook's largest share of Python time). The
    statement is built once per model and database (``_insert_plan``)."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each ``connection.x`` is a lookup of its own
    fields, sql = _insert_plan(type(instance), ignore_conflicts, db.alias, db.vendor)
    values = [field.get_db_prep_save(field.pre_save(instance, True), db) for field in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return None
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = db.alias
    return instance.pk


@lru_cache(maxsize=64)
def _insert_plan(model, ignore_conflicts: bool, alias: str, vendor: str) -> tuple[list, str]:
    """The fields ``insert_returning_pk`` writes and its statement, for ``model`` on the
    database ``alias`` (of ``vendor``)."""
    ops = connections[alias].ops
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    table = ops.quote_name(meta.db_table)
    names = ", ".join(ops.quote_name(field.column) for field in fields)
    conflict = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    marks = ", ".join(["%s"] * len(fields))
    key = ops.quote_name(meta.pk.column)
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks}){conflict} RETURNING {key}"  # noqa: S608 - names are ours
    return fields, sql


def insert_objects(objs: Sequence) -> None:
    """``Model.objects.bulk_create(objs)`` for new rows of one model (no key set, no parent
    table): the same values (each field's ``pre_save`` and ``get_db_prep_save``), the same
    check of related objects, each instance given its new key and marked saved, in
    statements built once per model and database. No signals, as with ``bulk_create``.
    Django's compiler prepares each value through a few layers more: on a batch of replies
    (their sessions, responses and texts) it cost half of the applier's time."""
    if not objs:
        return
    model = type(objs[0])
    if any(type(obj) is not model or obj.pk is not None for obj in objs) or model._meta.parents:
        model._default_manager.bulk_create(objs)  # what this does not cover: Django's way
        return
    db = connections[DEFAULT_DB_ALIAS]
    fields, plain, sql, row_marks = _insert_objects_plan(model, db.alias, db.vendor)
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
    per_batch = max(1, db.ops.bulk_batch_size(fields, objs))
    with db.cursor() as cursor:
        for start in range(0, len(objs), per_batch):
            batch = objs[start : start + per_batch]
            values = []
            for obj in batch:
                state = obj.__dict__
                for field, kind in zip(fields, plain, strict=True):
                    value = state.get(field.attname, _UNSET) if kind is not None else _UNSET
                    if value is None or type(value) is kind:
                        values.append(value)  # what the field would bind (``_plain_type``)
                    else:
                        values.append(field.get_db_prep_save(field.pre_save(obj, True), db))
            cursor.execute(sql.format(rows=", ".join([row_marks] * len(batch))), values)
            keys = [row[0] for row in cursor.fetchall()]
            for obj, key in zip(batch, keys, strict=True):
                obj.pk = key
                obj._state.adding = False
                obj._state.db = db.alias


_UNSET = object()
# Fields whose ``pre_save`` is the attribute and whose ``get_db_prep_save`` returns a value of
# this exact type (or None) unchanged, on every backend: bound as they are by
# ``insert_objects`` (a subclass, or a value of another type, takes the field's own way). A
# foreign key to an automatic key binds an int as it is too.
_PLAIN = {
    m.CharField: str,
    m.TextField: str,
    m.SlugField: str,
    m.BooleanField: bool,
    m.IntegerField: int,
    m.SmallIntegerField: int,
    m.BigIntegerField: int,
    m.PositiveIntegerField: int,
    m.PositiveSmallIntegerField: int,
    m.PositiveBigIntegerField: int,
}
_AUTO_KEYS = (m.AutoField, m.BigAutoField, m.SmallAutoField)


def _plain_type(field) -> type | None:
    """The type of the values ``field`` binds as they are (``_PLAIN``), else None."""
    if type(field) in (m.ForeignKey, m.OneToOneField):
        return int if type(field.target_field) in _AUTO_KEYS else None
    return _PLAIN.get(type(field))


@lru_cache(maxsize=64)
def _insert_objects_plan(model, alias: str, vendor: str) -> tuple[list, list, str, str]:
    """The fields ``insert_objects`` writes, the type of the values each binds as they are
    (None: through the field), its statement (``{rows}`` left to fill) and the placeholders
    of one row, for ``model`` on the database ``alias`` (of ``vendor``)."""
    ops = connections[alias].ops
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    table = ops.quote_name(meta.db_table)
    names = ", ".join(ops.quote_name(field.column) for field in fields)
    key = ops.quote_name(meta.pk.column)
    sql = f"INSERT INTO {table} ({names}) VALUES {{rows}} RETURNING {key}"  # noqa: S608 - names are ours
    plain = [_plain_type(field) for field in fields]
    return fields, plain, sql, "(" + ", ".join(["%s"] * len(fields)) + ")"
