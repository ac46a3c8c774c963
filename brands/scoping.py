"""The one place that scopes data to a brand.

Every model a user or an API key can reach declares ``brand_path``, the lookup from it to its
Brand, and uses ``BrandScopedQuerySet``. Pages (``BrandScopedPageMixin``) and the API
(``BrandScopedAPIMixin``) build every queryset through ``for_brand``; ``get_for_brand`` answers
the same 404 for an object that does not exist and one that belongs to another brand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import connection, models
from django.http import Http404

M = TypeVar("M", bound=models.Model)
# A ``brands.models.Brand`` (or its pk): this module sits below the models that use it.
BrandRef = models.Model | int


class BrandScopedQuerySet(models.QuerySet):
    def for_brand(self, brand: BrandRef | None) -> models.QuerySet:
        if brand is None:
            return self.none()
        path = getattr(self.model, "brand_path", None)
        if not path:
            raise TypeError(f"{self.model.__name__} declares no brand_path")
        return self.filter(**{path: brand})


class BrandScopedManager(models.Manager.from_queryset(BrandScopedQuerySet)):
    pass


def get_for_brand(
    source: type[models.Model] | models.QuerySet, *, brand: BrandRef | None, **lookup: Any
):
    """Return the one object matching ``lookup`` inside ``brand``, or raise Http404.

    Missing and "another brand's" are indistinguishable on purpose.
    """
    queryset = source if isinstance(source, models.QuerySet) else source._default_manager.all()
    try:
        return queryset.for_brand(brand).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404(f"No {queryset.model._meta.verbose_name} matches the given query.") from exc


@dataclass(frozen=True)
class _ByPkStatement:
    sql: str
    params: list[str]  # where each parameter goes: "brand" or "pk"
    columns: list[str]  # attnames, in the order of the statement's columns
    converters: list[tuple[int, list, Any]]  # (column, converters, expression) as the ORM's


_by_pk: dict[type[models.Model], _ByPkStatement | None] = {}
_BRAND_MARK, _PK_MARK = -7_000_001, -7_000_002


def _by_pk_statement(model: type[models.Model]) -> _ByPkStatement | None:
    # A pk stands for the brand in the lookup (this module sits below brands.models).
    query = model._default_manager.all().for_brand(_BRAND_MARK).filter(pk=_PK_MARK)
    sql, params = query.query.sql_with_params()
    marks = {_BRAND_MARK: "brand", _PK_MARK: "pk"}
    if any(p not in marks for p in params):
        return None  # the manager adds its own conditions: no shortcut
    fields = model._meta.concrete_fields
    converters = []
    for index, meta in enumerate(fields):
        column = meta.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(column) + meta.get_db_converters(connection)
        if found:
            converters.append((index, found, column))
    return _ByPkStatement(
        sql=sql,
        params=[marks[p] for p in params],
        columns=[meta.attname for meta in fields],
        converters=converters,
    )


def get_for_brand_by_pk(model: type[models.Model], *, brand: BrandRef | None, pk: Any):
    """``get_for_brand(model, brand=brand, pk=pk)`` for the hot paths: the ORM writes the
    statement once per process (its compilation costs several times the query) and each
    call runs it and converts the row as the ORM would. Same answers, same 404."""
    missing = Http404(f"No {model._meta.verbose_name} matches the given query.")
    try:
        pk = int(pk)
    except (TypeError, ValueError) as exc:
        raise missing from exc
    if brand is None:
        raise missing
    if model not in _by_pk:
        _by_pk[model] = _by_pk_statement(model)
    statement = _by_pk[model]
    if statement is None:
        return get_for_brand(model, brand=brand, pk=pk)
    values = {"brand": brand.pk, "pk": pk}
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [values[name] for name in statement.params])
        row = cursor.fetchone()
    if row is None:
        raise missing
    row = list(row)
    for index, converters, column in statement.converters:
        for converter in converters:
            row[index] = converter(row[index], column, connection)
    return model.from_db(connection.alias, statement.columns, row)


def fresh_copy(instance: M) -> M:
    """A copy of ``instance`` as a new read of its row gives: its field values, its database,
    no cached relations (a request can change or relate it without touching the original).
    Values are shared as ``copy.copy`` shares them: a JSON value is the same object. For the
    instances a process keeps between requests (API keys, projects): ``copy.copy`` goes
    through pickling's protocol (the app registry, a version check) and costs five times
    more."""
    clone = instance.__class__.__new__(instance.__class__)
    clone.__dict__.update(instance.__dict__)
    clone.__dict__.pop("_prefetched_objects_cache", None)
    state = models.base.ModelState()
    state.db, state.adding = instance._state.db, instance._state.adding
    clone._state = state
    return clone
