"""Reads for people, participants and imports. Callers pass querysets already scoped to a brand
(``for_brand``) or objects obtained through ``get_for_brand``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from django.core.cache import cache
from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform

from participants.importer import FIELD_LABELS, neutralise_for_spreadsheet
from participants.metadata import is_opted_out, is_protected, normalise_key
from participants.models import ImportJob, Participant, Person
from participants.phones import PhoneError, phone_to_e164
from participants.services import PROGRESS_CACHE_KEY
from projects.models import Project

SEARCH_FIELDS = ("first_name", "last_name", "email", "phone", "person_id", "username")
_PHONE_LIKE = re.compile(r"[+(\d][\d\s().-]{3,}")
# How many rows are sampled to offer metadata fields in a filter (a bounded read).
METADATA_KEY_SAMPLE = 2000


def search_people(queryset: QuerySet, term: str | None, prefix: str = "", *, country: str = ""):
    """Names, email, PersonID, user name; a phone typed in any format matches its E.164 form."""
    term = (term or "").strip()
    if not term:
        return queryset
    condition = Q()
    for name in SEARCH_FIELDS:
        condition |= Q(**{f"{prefix}{name}__icontains": term})
    if _PHONE_LIKE.fullmatch(term):
        digits = re.sub(r"\D", "", term)
        if len(digits) >= 4:
            condition |= Q(**{f"{prefix}phone__contains": digits})
        try:
            e164 = phone_to_e164(term, default_country=country or "US")
        except PhoneError:
            e164 = ""
        if e164:
            condition |= Q(**{f"{prefix}phone": e164})
    parts = term.split()
    if len(parts) == 2:  # "Ada Lovelace"
        first, last = parts
        condition |= Q(
            **{f"{prefix}first_name__icontains": first, f"{prefix}last_name__icontains": last}
        )
    return queryset.filter(condition)


def parse_metadata_filters(values: Iterable[str]) -> list[tuple[str, str]]:
    """``["Team:Sales", "City: Paris"]`` -> ``[("Team", "Sales"), ("City", "Paris")]``."""
    filters = []
    for value in values:
        key, sep, wanted = (value or "").partition(":")
        if sep and key.strip():
            filters.append((key.strip(), wanted.strip()))
    return filters


def filter_by_metadata(queryset: QuerySet, filters: list[tuple[str, str]]) -> QuerySet:
    """Participants whose metadata (their own or their person's) has each field = value.

    Values compare without regard to case. Several values of one field are alternatives (OR);
    different fields must all match (AND), like distribution conditions.
    """
    by_key: dict[str, list[str]] = {}
    for key, value in filters:
        by_key.setdefault(key, []).append(value)
    for position, (key, values) in enumerate(by_key.items()):
        person_alias, own_alias = f"_pm{position}", f"_om{position}"
        queryset = queryset.annotate(
            **{
                person_alias: KeyTextTransform(key, "person__metadata"),
                own_alias: KeyTextTransform(key, "metadata"),
            }
        )
        condition = Q()
        for value in values:
            condition |= Q(**{f"{own_alias}__iexact": value}) | Q(
                **{f"{own_alias}__isnull": True, f"{person_alias}__iexact": value}
            )
        queryset = queryset.filter(condition)
    return queryset


def participant_list(
    *,
    project: Project,
    q: str = "",
    role: str = "",
    metadata: list[tuple[str, str]] | None = None,
) -> QuerySet:
    queryset = Participant.objects.filter(project=project).select_related("person")
    queryset = search_people(queryset, q, "person__", country=project.country)
    if role:
        queryset = queryset.filter(role__iexact=role)
    if metadata:
        queryset = filter_by_metadata(queryset, metadata)
    return queryset.order_by("person__last_name", "person__first_name", "pk")


def person_list(*, queryset: QuerySet, q: str = "", country: str = "") -> QuerySet:
    return search_people(queryset, q, country=country)


def project_roles(*, project: Project) -> list[str]:
    roles = project.participants.exclude(role="").values_list("role", flat=True).distinct()
    return sorted(set(roles), key=str.casefold)


def metadata_keys(*, queryset: QuerySet, person_prefix: str = "person__") -> list[str]:
    """Metadata fields seen on a bounded sample of rows (for filters and exports)."""
    keys: dict[str, str] = {}
    own = person_prefix != ""
    fields = [f"{person_prefix}metadata"] + (["metadata"] if own else [])
    for row in queryset.order_by().values_list(*fields)[:METADATA_KEY_SAMPLE]:
        for metadata in row:
            for key in metadata or {}:
                keys.setdefault(key.casefold(), key)
    return sorted(keys.values(), key=str.casefold)


def person_page(*, person: Person) -> dict:
    participations = list(person.participations.select_related("project").order_by("-pk"))
    return {
        "person": person,
        "participations": [
            {
                "participant": p,
                "project": p.project,
                "opted_out": is_opted_out(p.metadata),
                "metadata": {k: v for k, v in (p.metadata or {}).items() if not is_protected(k)},
            }
            for p in participations
        ],
        "opted_out": is_opted_out(person.metadata),
        "metadata": {k: v for k, v in (person.metadata or {}).items() if not is_protected(k)},
    }


# --- Export ---------------------------------------------------------------------------------

EXPORT_CHUNK = 2000  # rows fetched per round trip while streaming an export


def export_rows(
    *, queryset: QuerySet, with_role: bool, keys: list[str] | None = None
) -> Iterator[list[str]]:
    """Header then one row per participant (or person): re-importable, formula-safe cells.

    ``queryset`` is of Participant (``with_role``) or of Person.
    """
    participant_rows = queryset.model is Participant
    if keys is None:
        keys = _all_metadata_keys(queryset, participant_rows)
    header = [FIELD_LABELS[name] for name in FIELD_LABELS if name != "role" or with_role]
    yield header + keys
    # The header's order, from the one list of fields (a field added there is exported).
    person_fields = [name for name in FIELD_LABELS if name != "role"]
    related = queryset.select_related("person") if participant_rows else queryset
    for row in related.iterator(chunk_size=EXPORT_CHUNK):
        person = row.person if participant_rows else row
        metadata = dict(person.metadata or {})
        if participant_rows:
            metadata.update(row.metadata or {})
        lowered = {key.casefold(): value for key, value in metadata.items()}
        cells = [getattr(person, name) for name in person_fields]
        if with_role:
            cells.append(row.role if participant_rows else "")
        cells.extend(lowered.get(key.casefold(), "") for key in keys)
        yield [neutralise_for_spreadsheet(cell) for cell in cells]


def _all_metadata_keys(queryset: QuerySet, participant_rows: bool) -> list[str]:
    keys: dict[str, str] = {}
    fields = ["person__metadata", "metadata"] if participant_rows else ["metadata"]
    for row in queryset.order_by().values_list(*fields).iterator(chunk_size=EXPORT_CHUNK):
        for metadata in row:
            for key in metadata or {}:
                keys.setdefault(key.casefold(), key)
    ordered = sorted(keys.values(), key=str.casefold)
    # "Opted out" last: it is exported for information and ignored when imported back.
    return [k for k in ordered if not is_protected(k)] + [k for k in ordered if is_protected(k)]


# --- Imports --------------------------------------------------------------------------------


def import_list(*, queryset: QuerySet, project: Project | None = None) -> QuerySet:
    queryset = queryset.select_related("project", "created_by")
    if project is not None:
        queryset = queryset.filter(project=project)
    return queryset


def import_progress(*, job: ImportJob) -> dict:
    """How far the running phase is: rows done and a fraction (0..1)."""
    rows, fraction = job.processed_rows, job.progress
    if job.status == ImportJob.Status.IMPORTING:
        cached = cache.get(PROGRESS_CACHE_KEY.format(job.pk))
        if cached and cached.get("progress", 0) > fraction:
            rows, fraction = cached["rows"], cached["progress"]
    return {"rows": rows, "progress": fraction, "percent": max(0, min(100, round(fraction * 100)))}


def project_metadata_keys(
    *, project_id: int, named: str | None = None, limit: int = 200
) -> list[str]:
    """Metadata field names, as stored, of a project's participants (project and directory
    values): every spelling, distinct. ``named``: only the spellings of that name, whatever
    their case ("team" finds "Team" and "TEAM")."""
    participant_table = Participant._meta.db_table
    person_table = Person._meta.db_table
    params: list = [project_id, project_id]
    # Table names come from our models; every value is a bound parameter.
    if connection.vendor == "postgresql":
        keys = f"""
            SELECT jsonb_object_keys(p.metadata) AS k FROM {participant_table} p
            WHERE p.project_id = %s AND jsonb_typeof(p.metadata) = 'object'
            UNION
            SELECT jsonb_object_keys(pe.metadata) AS k FROM {participant_table} p
            JOIN {person_table} pe ON pe.id = p.person_id
            WHERE p.project_id = %s AND jsonb_typeof(pe.metadata) = 'object'
        """  # noqa: S608
    elif connection.vendor == "sqlite":
        keys = f"""
            SELECT j.key AS k FROM {participant_table} p, json_each(p.metadata) j
            WHERE p.project_id = %s AND json_type(p.metadata) = 'object'
            UNION
            SELECT j.key AS k FROM {participant_table} p
            JOIN {person_table} pe ON pe.id = p.person_id, json_each(pe.metadata) j
            WHERE p.project_id = %s AND json_type(pe.metadata) = 'object'
        """  # noqa: S608
    else:  # pragma: no cover - other databases: look at a bounded sample
        names: set[str] = set()
        rows = Participant.objects.filter(project_id=project_id).values_list(
            "metadata", "person__metadata"
        )[:METADATA_KEY_SAMPLE]
        for own, directory in rows:
            names.update((own or {}).keys())
            names.update((directory or {}).keys())
        found = [n for n in names if named is None or normalise_key(n) == normalise_key(named)]
        return sorted(found)[:limit]
    # ``named``: every distinct key is compared in Python (SQL has no ``normalise_key``: it
    # cannot collapse inner spaces on SQLite); a project has a few dozen keys.
    sql = f"SELECT DISTINCT k FROM ({keys}) keys ORDER BY k"  # noqa: S608
    if named is None:
        sql += " LIMIT %s"
        params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = [row[0] for row in cursor.fetchall()]
    if named is not None:
        found = [n for n in found if normalise_key(n) == normalise_key(named)][:limit]
    return found


def metadata_spellings(*, project_id: int) -> Callable[[str], list[str]]:
    """``spellings(name)``: the stored spellings of a metadata field among the project's
    participants (``normalise_key`` decides), for the SQL of conditions and the estimate."""
    return lambda name: project_metadata_keys(project_id=project_id, named=name)


def person_ids_of(participant_ids: Iterable[int | None]) -> dict[int, str]:
    """PersonID of each participant id given (one query; none for no id)."""
    wanted = {pk for pk in participant_ids if pk}
    if not wanted:
        return {}
    return dict(Participant.objects.filter(pk__in=wanted).values_list("pk", "person__person_id"))
