"""Writes for directory people and project participants.

Every write validates first (phone parsed to E.164, PersonID unique in the brand) and raises
``ValidationError`` naming the field; nothing is stored from input that fails.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import tempfile
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from brands.models import Brand
from core.queueing import task_queue
from participants.importer import (
    ERROR_FILE_COLUMNS,
    REQUIRABLE,
    CsvSource,
    DuplicateTracker,
    FileError,
    RowError,
    RowRecord,
    RowValidator,
    SpoolLayout,
    map_header,
    neutralise_for_spreadsheet,
    records_from_json,
    refuse_binary_upload,
)
from participants.lock_objects import lock_brand_directory
from participants.metadata import OPT_OUT_KEY, is_protected, normalise_key, strip_protected
from participants.models import ImportJob, Participant, Person
from participants.phones import PhoneError, phone_to_e164
from participants.sqlupserts import SetBasedImport
from participants.upserts import (
    CREATE,
    UNCHANGED,
    UPDATE,
    PlannerStatistics,
    UpsertState,
    UpsertTarget,
    plan_batch,
    write_batch,
)
from participants.values import metadata_clean, text_refusal, time_zone_error
from projects.models import Project

PERSON_FIELDS = (*Person.DIRECTORY_FIELDS, "metadata")


def _clean_person_values(values: dict[str, Any], *, country: str) -> dict[str, Any]:
    unknown = set(values) - set(PERSON_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "Unknown field."))
    cleaned = dict(values)
    errors: dict[str, str] = {}
    for name in ("person_id", "first_name", "last_name", "email", "username"):
        if name in cleaned:
            cleaned[name] = (cleaned[name] or "").strip()
            refusal = text_refusal(name, cleaned[name])
            if refusal:
                errors[name] = refusal
    if "email" in cleaned:
        cleaned["email"] = cleaned["email"].lower()
    if "phone" in cleaned:
        try:
            cleaned["phone"] = phone_to_e164(cleaned["phone"], default_country=country)
        except PhoneError as exc:
            errors["phone"] = str(exc)
    if "time_zone" in cleaned:
        cleaned["time_zone"] = (cleaned["time_zone"] or "").strip()
        error = time_zone_error(cleaned["time_zone"])
        if error:
            errors["time_zone"] = error
    if "metadata" in cleaned:
        try:
            cleaned["metadata"] = metadata_clean(cleaned["metadata"])
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _keep_opt_out(current: dict | None, wanted: dict, *, field: str = "metadata") -> dict:
    """``wanted`` with the stored ``Opted out`` value, whatever ``wanted`` says about it.

    Sending the stored value back unchanged is fine (a client that GETs then PUTs); trying to
    set, change or remove it is refused: only opt-outs and opt-ins write it.
    """
    stored = {k: v for k, v in (current or {}).items() if is_protected(k)}
    sent = {k: v for k, v in wanted.items() if is_protected(k)}
    if sent and {normalise_key(k): v for k, v in sent.items()} != {
        normalise_key(k): v for k, v in stored.items()
    }:
        raise ValidationError(
            {
                field: f"'{OPT_OUT_KEY}' is recorded only by the person's own opt-out and "
                "cleared only by an admin's opt-in: it cannot be set here."
            }
        )
    return {**strip_protected(wanted), **stored}


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
    if "metadata" in cleaned:
        cleaned["metadata"] = _keep_opt_out({}, cleaned["metadata"])
    return _save_person(Person(brand=brand, **cleaned))


def person_update(*, person: Person, country: str | None = None, **values: Any) -> Person:
    cleaned = _clean_person_values(values, country=country or person.brand.default_country)
    if "metadata" in cleaned:
        cleaned["metadata"] = _keep_opt_out(person.metadata, cleaned["metadata"])
    for name, value in cleaned.items():
        setattr(person, name, value)
    return _save_person(person)


def person_delete(*, person: Person) -> None:
    """Remove someone from the directory, and so from every project of the brand."""
    person.delete()


def _clean_role(role: str | None) -> str:
    role = (role or "").strip()
    refusal = text_refusal("role", role)
    if refusal:
        raise ValidationError({"role": refusal})
    return role


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
    role = _clean_role(role)
    participant_metadata = metadata_clean(participant_metadata, field="participant_metadata")
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
            role=role,
            metadata=_keep_opt_out({}, participant_metadata, field="participant_metadata"),
            added_by=actor if getattr(actor, "pk", None) else None,
        )


def participant_update(
    *,
    participant: Participant,
    role: str | None = None,
    participant_metadata: dict | None = None,
    **person_values: Any,
) -> Participant:
    if role is not None:
        role = _clean_role(role)
    if participant_metadata is not None:
        participant_metadata = metadata_clean(participant_metadata, field="participant_metadata")
    with transaction.atomic():
        if person_values:
            person_update(
                person=participant.person, country=participant.project.country, **person_values
            )
        fields = []
        if role is not None:
            participant.role = role
            fields.append("role")
        if participant_metadata is not None:
            participant.metadata = _keep_opt_out(
                participant.metadata, participant_metadata, field="participant_metadata"
            )
            fields.append("metadata")
        if fields:
            participant.save(update_fields=[*fields, "updated_at"])
    return participant


def participant_remove(*, participant: Participant) -> None:
    """Remove the person from the project; the directory entry stays."""
    participant.delete()


# --- Imports ----------------------------------------------------------------------------------
# Validate first, write second. ``import_create`` stores the upload and schedules
# ``import_validate``, which reads the file once (streaming), writes no participant, and leaves a
# report, the validated rows (a JSON-lines file) and an error CSV. ``import_confirm`` (the user
# said yes) schedules ``import_commit``, which writes every validated row in ONE transaction.

logger = logging.getLogger(__name__)

# Rows classified (and written) per batch: two or three lookups of up to this many values
# each, and about 2 kB of Python objects per row, so ~10 MB per batch whatever the file size.
# The size was measured on PostgreSQL (docs/benchmarks.md, "Measurements behind code choices").
IMPORT_BATCH_ROWS = 5000
# First errors kept in the report (all of them go to the error CSV).
REPORT_ERROR_LIMIT = 500
BULK_MAX_RECORDS = 10_000
# A write phase whose worker vanished (killed, OOM) may be claimed again after this long.
IMPORT_STALE_AFTER = timedelta(minutes=30)
PROGRESS_CACHE_KEY = "relay:import-progress:{}"


def import_max_upload_bytes() -> int:
    return settings.RELAY_IMPORT_MAX_UPLOAD_BYTES


def import_inline_max_bytes() -> int:
    """Uploads up to this size are validated and written in the request, not by a worker."""
    return settings.RELAY_IMPORT_INLINE_MAX_BYTES


def describe_size(size: int) -> str:
    """50 MB, 63.2 MB, 7 kB."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    return f"{size / 1024:.0f} kB"


def import_check_size(size: int) -> None:
    limit = import_max_upload_bytes()
    if size > limit:
        raise ValidationError(
            {
                "file": f"The file is {describe_size(size)}; the limit is "
                f"{describe_size(limit)}. Split it into smaller files, each with the header row."
            }
        )


def _options(
    *,
    project: Project | None,
    metadata_target: str,
    required_fields,
) -> tuple[str, list[str]]:

    target = metadata_target or ImportJob.MetadataTarget.PERSON
    if target not in ImportJob.MetadataTarget.values:
        raise ValidationError(
            {"metadata_target": f"Choose one of {ImportJob.MetadataTarget.values}."}
        )
    if target == ImportJob.MetadataTarget.PARTICIPANT and project is None:
        raise ValidationError(
            {"metadata_target": "Participant metadata needs a project: this import has none."}
        )
    required = list(dict.fromkeys(required_fields or []))
    unknown = [name for name in required if name not in REQUIRABLE]
    if unknown:
        raise ValidationError(
            {"required_fields": f"Unknown: {', '.join(unknown)}. Choose from {list(REQUIRABLE)}."}
        )
    return target, required


def import_create(
    *,
    brand: Brand,
    upload: File,
    project: Project | None = None,
    actor=None,
    erase_empty: bool = False,
    metadata_target: str = ImportJob.MetadataTarget.PERSON,
    required_fields=(),
    auto_commit: bool = False,
    source: str = ImportJob.Source.PAGE,
) -> ImportJob:
    """Store ``upload`` and start validating it. Nothing is written to the directory."""
    if project is not None and project.brand_id != brand.pk:
        raise ValidationError({"project": "This project belongs to another brand."})
    import_check_size(upload.size or 0)
    try:
        refuse_binary_upload(upload)
    except FileError as exc:
        raise ValidationError({"file": str(exc)}) from exc
    target, required = _options(
        project=project, metadata_target=metadata_target, required_fields=required_fields
    )
    job = ImportJob(
        brand=brand,
        project=project,
        created_by=actor if getattr(actor, "pk", None) else None,
        source=source,
        original_name=(getattr(upload, "name", "") or "upload.csv").rsplit("/", 1)[-1][:255],
        size=upload.size or 0,
        erase_empty=bool(erase_empty),
        metadata_target=target,
        required_fields=required,
        auto_commit=bool(auto_commit),
    )
    job.file.save(job.original_name or "upload.csv", upload, save=False)
    job.save()
    _run_or_queue(job, "validate")
    job.refresh_from_db()
    return job


def _run_or_queue(job: ImportJob, phase: str) -> None:
    """Small files run now, in this process; larger ones go to a worker after commit.

    Both take the same service function, so there is one code path either way.
    """
    if job.size <= import_inline_max_bytes():
        (import_validate if phase == "validate" else import_commit)(job=job)
        return
    task_queue(f"participants.tasks.import_{phase}_task", job.pk)


def _target_for(job: ImportJob) -> UpsertTarget:
    return UpsertTarget(
        brand=job.brand,
        project=job.project,
        erase_empty=job.erase_empty,
        metadata_target=job.metadata_target,
        actor_id=job.created_by_id,
    )


class _ErrorSink:
    """Row errors: the first REPORT_ERROR_LIMIT for the report, every one into an error CSV
    (original cells plus "Import row" and "Import errors", re-importable once fixed)."""

    def __init__(self, header_cells: list[str] | None):
        self.sample: list[dict] = []
        self.entries = 0
        self.path = None
        self._writer = None
        if header_cells is not None:
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finish()
                "w", suffix=".csv", delete=False, encoding="utf-8-sig", newline=""
            )
            self.path = handle.name
            self._handle = handle
            self._writer = csv.writer(handle)
            self._writer.writerow([*ERROR_FILE_COLUMNS, *header_cells])

    def note(self, errors: list[RowError]) -> None:
        self.entries += len(errors)
        room = REPORT_ERROR_LIMIT - len(self.sample)
        if room > 0:
            self.sample.extend(error.as_dict() for error in errors[:room])

    def write(self, number: int, errors: list[RowError], cells: list[str]) -> None:
        if self._writer is not None:
            self._writer.writerow(
                [number, _join_errors(errors), *map(neutralise_for_spreadsheet, cells)]
            )

    def finish(self) -> None:
        if self._writer is not None:
            self._handle.close()

    def report(self) -> dict:
        return {
            "errors": sorted(self.sample, key=lambda e: e["row"]),
            "error_entries": self.entries,
            "errors_truncated": self.entries > len(self.sample),
        }


def _join_errors(errors: list[RowError]) -> str:
    return "; ".join(f"{e.column}: {e.message}" if e.column else e.message for e in errors)


def _cleanup(*paths) -> None:
    for path in paths:
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def import_validate(*, job: ImportJob) -> dict:
    """Read the job's file and classify every row; write the report. Writes no participant.

    Ends ``validated`` (with counts, the first errors, an error CSV and the validated rows) or
    ``failed`` with the reason the file as a whole cannot be imported. A job cancelled while it
    runs stops at the next batch.
    """
    job.refresh_from_db()
    if job.status != ImportJob.Status.VALIDATING:
        return {"skipped": job.status}
    spool_path = None
    sink = _ErrorSink(None)
    try:
        with job.file.open("rb") as handle:
            source = CsvSource(handle, size=job.size)
            source.detect()
            rows = source.rows()
            header_number, header_cells = next(
                ((n, cells) for n, cells in rows if any(c.strip() for c in cells)), (0, None)
            )
            if header_cells is None:
                raise FileError("The file has no header row: it contains only blank lines.")
            header = map_header(
                header_cells,
                for_project=job.project_id is not None,
                required_fields=job.required_fields,
            )
            validator = RowValidator(
                header=header,
                country=job.project.country if job.project else job.brand.default_country,
                required_fields=job.required_fields,
                for_project=job.project_id is not None,
                delimiter=source.delimiter,
            )
            labels = {c.field: c.header for c in header.columns if c.field}
            target = _target_for(job)
            target.labels = labels
            tracker = DuplicateTracker()
            sink = _ErrorSink(header_cells)
            layout = SpoolLayout.from_header(header)
            spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
                "w", suffix=".csv", delete=False, encoding="utf-8", newline=""
            )
            spool_path = spool.name
            spool_writer = layout.writer(spool)
            stats = {"rows": 0, "error_rows": 0}
            # Pass 1: read and check every row; valid rows go to the spool, bad ones (with
            # their cells) to the error file, in row order.
            spooled: list[list] = []
            for number, cells in rows:
                record, errors = validator.check_cells(number, cells)
                if record is None and not errors:
                    continue  # a blank row
                stats["rows"] += 1
                if record is not None:
                    duplicate = tracker.check(record, labels)
                    if duplicate is not None:
                        errors, record = [duplicate], None
                if errors:
                    stats["error_rows"] += 1
                    sink.note(errors)
                    sink.write(number, errors, cells)
                else:
                    spooled.append(layout.row(record))
                if stats["rows"] % IMPORT_BATCH_ROWS == 0:
                    spool_writer.writerows(spooled)
                    spooled = []
                    if not _validation_progress(job, stats["rows"], source):
                        spool.close()
                        sink.finish()
                        _cleanup(spool_path, sink.path)
                        return {"cancelled": True}
            spool_writer.writerows(spooled)
            spool.close()
            if stats["rows"] == 0:
                sink.finish()
                raise FileError(
                    f"The file has a header row (row {header_number}) but no data rows."
                )
            # Rows that a later duplicate invalidated, then pass 2: match the spooled rows
            # against the directory (the write phase's own planner, writing nothing).
            late: dict[int, list[RowError]] = {n: [e] for n, e in tracker.late.items()}
            PlannerStatistics().refresh()
            counts, added, matching_errors = _classify(target, layout, spool_path, sorted(late))
            for error in matching_errors:
                late.setdefault(error.row, []).append(error)
            stats["error_rows"] += len(late)
            stats["added"] = added
            late_rows = sorted(late)
            sink.finish()
            if late_rows:
                sink.note([error for n in late_rows for error in late[n]])
                _merge_late_errors(source, sink, late)
    except FileError as exc:
        sink.finish()
        _cleanup(spool_path, sink.path)
        updated = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.VALIDATING).update(
            status=ImportJob.Status.FAILED,
            failure=str(exc),
            report={"file_errors": [str(exc)]},
            finished_at=timezone.now(),
            progress=1.0,
        )
        if updated:
            _discard_upload(job)
        return {"failed": str(exc)}
    except Exception:
        sink.finish()
        _cleanup(spool_path, sink.path)
        ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.VALIDATING).update(
            status=ImportJob.Status.FAILED,
            failure="The file could not be checked because of an internal error; nothing was "
            "written. Try again, or contact support if it happens again.",
            finished_at=timezone.now(),
        )
        raise

    base = f"imports/{job.brand_id}/{uuid.uuid4().hex}"
    storage = job.file.storage
    with open(spool_path, "rb") as spool_file:
        rows_name = storage.save(f"{base}.rows.csv", File(spool_file))
    errors_name = ""
    if sink.entries:
        with open(sink.path, "rb") as errors_file:
            errors_name = storage.save(f"{base}.errors.csv", File(errors_file))
    _cleanup(spool_path, sink.path)
    report = {
        "rows": stats["rows"],
        "new_participants": stats["added"],
        "warnings": header.warnings,
        "late_invalid_rows": late_rows,
        **sink.report(),
    }
    updated = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.VALIDATING).update(
        status=ImportJob.Status.VALIDATED,
        encoding=source.encoding,
        delimiter=source.delimiter,
        columns=[c.as_dict() for c in header.columns],
        total_rows=stats["rows"],
        to_create=counts[CREATE],
        to_update=counts[UPDATE],
        unchanged=counts[UNCHANGED],
        error_rows=stats["error_rows"],
        report=report,
        rows_file=rows_name,
        errors_file=errors_name,
        processed_rows=stats["rows"],
        progress=1.0,
        validated_at=timezone.now(),
    )
    if not updated:  # cancelled at the last moment
        storage.delete(rows_name)
        if errors_name:
            storage.delete(errors_name)
        return {"cancelled": True}
    job.refresh_from_db()
    result = {
        "rows": stats["rows"],
        "create": counts[CREATE],
        "update": counts[UPDATE],
        "unchanged": counts[UNCHANGED],
        "errors": stats["error_rows"],
    }
    if job.auto_commit and job.error_rows == 0 and job.valid_rows > 0:
        import_confirm(job=job)
    return result


def _classify(
    target: UpsertTarget, layout: SpoolLayout, spool_path: str, skip: list[int]
) -> tuple[dict[str, int], int, list[RowError]]:
    """Count the spooled rows to create, update and leave unchanged; the rows that cannot be
    matched (an email shared by several people, a person found twice) are errors.

    The planner of the write phase, without writing: set-based on PostgreSQL (in a
    transaction of its own, for its temporary table), ``plan_batch`` elsewhere.
    """
    if SetBasedImport.handles(layout):
        with transaction.atomic():
            rows = SetBasedImport(target=target, layout=layout, chunk_rows=IMPORT_BATCH_ROWS)
            with open(spool_path, "rb") as handle:
                rows.load(handle, skip=skip)
            plan = rows.plan()
            rows.close()
        return plan.counts, plan.added, plan.errors
    state = UpsertState()
    counts = {CREATE: 0, UPDATE: 0, UNCHANGED: 0}
    added = 0
    errors: list[RowError] = []
    with open(spool_path, encoding="utf-8", newline="") as handle:
        for batch in _batched(layout.records(handle, set(skip)), IMPORT_BATCH_ROWS):
            plan = plan_batch(batch, target, state)
            added += plan.added
            errors.extend(plan.errors)
            for _record, outcome in plan.outcomes:
                if outcome in counts:
                    counts[outcome] += 1
    return counts, added, errors


def _validation_progress(job: ImportJob, rows: int, source: CsvSource) -> bool:
    """Publish progress; False when the job was cancelled meanwhile."""
    fraction = min(0.99, source.bytes_read / job.size) if job.size else 0.0
    return bool(
        ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.VALIDATING).update(
            processed_rows=rows, progress=fraction
        )
    )


def _merge_late_errors(
    source: CsvSource, sink: _ErrorSink, late: dict[int, list[RowError]]
) -> None:
    """Add the rows found bad after the first pass (invalidated by a later duplicate, or not
    matchable in the directory) to the error CSV, in row order.

    A second streaming pass over the upload; only when there are such rows.
    """
    merged = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below
        "w", suffix=".csv", delete=False, encoding="utf-8-sig", newline=""
    )
    writer = csv.writer(merged)
    wanted = sorted(late)
    with open(sink.path, encoding="utf-8-sig", newline="") as existing:
        reader = csv.reader(existing)
        writer.writerow(next(reader))
        pending = next(reader, None)
        position = 0
        for number, cells in source.rows():
            if position >= len(wanted):
                break
            if number != wanted[position]:
                continue
            while pending is not None and int(pending[0]) < number:
                writer.writerow(pending)
                pending = next(reader, None)
            writer.writerow(
                [number, _join_errors(late[number]), *map(neutralise_for_spreadsheet, cells)]
            )
            position += 1
        while pending is not None:
            writer.writerow(pending)
            pending = next(reader, None)
    merged.close()
    _cleanup(sink.path)
    sink.path = merged.name
    sink.entries = max(sink.entries, 1)


def _discard_upload(job: ImportJob) -> None:
    """Personal data is kept no longer than needed: drop the upload and the validated rows."""
    for field_file in (job.file, job.rows_file):
        if field_file:
            with contextlib.suppress(OSError):
                field_file.storage.delete(field_file.name)
    ImportJob.objects.filter(pk=job.pk).update(file="", rows_file="")


def import_confirm(*, job: ImportJob, actor=None) -> ImportJob:
    """The user said "import the valid rows": queue the write phase (or run it, if small)."""
    if job.valid_rows == 0:
        raise ValidationError(
            "No row of this file can be imported: fix the errors and upload it again."
        )
    claimed = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.VALIDATED).update(
        status=ImportJob.Status.IMPORTING, started_at=None, processed_rows=0, progress=0.0
    )
    if not claimed:
        job.refresh_from_db()
        raise ValidationError(
            f"This import cannot be confirmed: it is {job.get_status_display().lower()}."
        )
    job.refresh_from_db()
    _run_or_queue(job, "commit")
    job.refresh_from_db()
    return job


def import_cancel(*, job: ImportJob, actor=None) -> ImportJob:
    """Drop an import that is not being written: nothing of it reaches the directory."""
    cancellable = Q(status__in=[ImportJob.Status.VALIDATING, ImportJob.Status.VALIDATED]) | Q(
        status=ImportJob.Status.IMPORTING, started_at__isnull=True
    )
    updated = (
        ImportJob.objects.filter(pk=job.pk)
        .filter(cancellable)
        .update(status=ImportJob.Status.CANCELLED, finished_at=timezone.now())
    )
    job.refresh_from_db()
    if not updated:
        raise ValidationError(
            f"This import cannot be cancelled: it is {job.get_status_display().lower()}."
        )
    _discard_upload(job)
    job.refresh_from_db()
    return job


class _CommitProgress:
    """Progress of the write phase, which runs inside one long transaction.

    Its own updates of the job row would stay invisible until the end, so it reports through
    the cache (shared when REDIS_URL is set) and, on PostgreSQL, through a second, autocommit
    connection. The transaction never writes the job row before its last statement, so the
    two connections never wait for each other.
    """

    def __init__(self, job: ImportJob):
        self.job_id = job.pk
        self.key = PROGRESS_CACHE_KEY.format(job.pk)
        self._side = None
        if connection.vendor == "postgresql":
            try:
                self._side = connections.create_connection(DEFAULT_DB_ALIAS)
                self._side.ensure_connection()
                self._side.set_autocommit(True)
            except Exception:  # progress is a nicety: never fail an import for it
                logger.warning("import %s: no side connection for progress", job.pk)
                self._side = None

    def report(self, rows: int, fraction: float) -> None:
        cache.set(self.key, {"rows": rows, "progress": fraction}, timeout=3600)
        if self._side is not None:
            try:
                with self._side.cursor() as cursor:
                    cursor.execute(
                        f"UPDATE {ImportJob._meta.db_table} SET processed_rows = %s, "  # noqa: S608
                        "progress = %s WHERE id = %s",
                        [rows, fraction, self.job_id],
                    )
            except Exception:
                logger.warning("import %s: progress update failed", self.job_id)
                self.close()

    def close(self) -> None:
        if self._side is not None:
            with contextlib.suppress(Exception):
                self._side.close()
            self._side = None
        cache.delete(self.key)


def _spooled_records(job: ImportJob):
    """The validated rows, streamed back one at a time."""
    skip = set(job.report.get("late_invalid_rows") or [])
    layout = SpoolLayout.from_columns(job.columns)
    with (
        job.rows_file.open("rb") as handle,
        io.TextIOWrapper(handle, encoding="utf-8", newline="") as text,
    ):
        yield from layout.records(text, skip)


def _write_rows(job: ImportJob, target: UpsertTarget, progress: _CommitProgress) -> dict:
    """Write the validated rows of ``job`` (inside the caller's transaction); return the counts.

    PostgreSQL applies them set-based (``sqlupserts``), elsewhere ``plan_batch`` and
    ``write_batch`` apply them batch by batch: the same rules, proven equal by
    tests/test_import_sql_equivalence.py.
    """
    total = max(1, job.valid_rows)
    layout = SpoolLayout.from_columns(job.columns)
    if SetBasedImport.handles(layout):
        rows = SetBasedImport(target=target, layout=layout, chunk_rows=IMPORT_BATCH_ROWS)
        with job.rows_file.open("rb") as handle:
            rows.load(handle, skip=job.report.get("late_invalid_rows") or [])
        plan = rows.plan()
        rows.apply(plan, on_chunk=lambda done: progress.report(done, min(0.99, done / total)))
        rows.close()
        return {
            "counts": plan.counts,
            "added": plan.added,
            "errors": plan.errors,
            "done": sum(plan.chunks),
        }
    state = UpsertState()
    counts = {CREATE: 0, UPDATE: 0, UNCHANGED: 0}
    added = done = 0
    errors: list[RowError] = []
    for batch in _batched(_spooled_records(job), IMPORT_BATCH_ROWS):
        plan = plan_batch(batch, target, state)
        write_batch(plan, target)
        added += plan.added
        for _record, outcome in plan.outcomes:
            if outcome in counts:
                counts[outcome] += 1
        errors.extend(plan.errors)
        done += len(batch)
        progress.report(done, min(0.99, done / total))
    return {"counts": counts, "added": added, "errors": errors, "done": done}


def import_commit(*, job: ImportJob) -> dict:
    """Write every validated row of a confirmed job, in ONE transaction.

    Either all rows are written and the job ends ``done`` with its counts, or nothing is and
    it ends ``failed`` with the reason. The directory is locked for the brand while it runs.
    A job is written at most once: the claim below lets one worker in.
    """
    now = timezone.now()
    claimed = (
        ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.IMPORTING)
        .filter(Q(started_at__isnull=True) | Q(started_at__lt=now - IMPORT_STALE_AFTER))
        .update(started_at=now, processed_rows=0, progress=0.0)
    )
    job.refresh_from_db()
    if not claimed:
        return {"skipped": job.status}
    target = _target_for(job)
    target.labels = {c["kind"]: c["header"] for c in job.columns}
    progress = _CommitProgress(job)
    try:
        with transaction.atomic():
            lock_brand_directory(brand_id=job.brand_id)
            # A stale claim may have let a second worker in while the first was still
            # writing: the lock made it wait, and now it sees the first one's outcome.
            current = ImportJob.objects.filter(pk=job.pk).values_list("status", flat=True)
            if current.first() != ImportJob.Status.IMPORTING:
                return {"skipped": current.first()}
            PlannerStatistics().refresh()
            written = _write_rows(job, target, progress)
            counts, added, done = written["counts"], written["added"], written["done"]
            skipped_count = len(written["errors"])
            report = dict(job.report)
            report["skipped_at_import"] = [
                e.as_dict() for e in written["errors"][:REPORT_ERROR_LIMIT]
            ]
            report["skipped_at_import_count"] = skipped_count
            ImportJob.objects.filter(pk=job.pk).update(
                status=ImportJob.Status.DONE,
                created_count=counts[CREATE],
                updated_count=counts[UPDATE],
                unchanged_count=counts[UNCHANGED],
                added_count=added,
                processed_rows=done,
                progress=1.0,
                report=report,
                finished_at=timezone.now(),
            )
    except Exception as exc:
        logger.exception("import %s failed while writing; rolled back", job.pk)
        ImportJob.objects.filter(pk=job.pk).update(
            status=ImportJob.Status.FAILED,
            failure=(
                "The import failed while writing and was rolled back: the directory is as it "
                f"was before. Reason: {_describe_exception(exc)}"
            ),
            finished_at=timezone.now(),
        )
        job.refresh_from_db()
        return {"failed": job.failure}
    finally:
        progress.close()
    _discard_upload(job)
    job.refresh_from_db()
    return {
        "created": counts[CREATE],
        "updated": counts[UPDATE],
        "unchanged": counts[UNCHANGED],
        "added": added,
        "skipped": skipped_count,
    }


def _describe_exception(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, IntegrityError) and ("unique" in lowered or "duplicate key" in lowered):
        return (
            "the directory changed during the import (another import or edit created the same "
            f"PersonID). Upload the file again. ({text[:200]})"
        )
    return text[:300]


def _batched(iterable, size: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def participants_bulk_upsert(
    *,
    brand: Brand,
    records: list,
    project: Project | None = None,
    actor=None,
    erase_empty: bool = False,
    metadata_target: str = ImportJob.MetadataTarget.PERSON,
    required_fields=(),
    dry_run: bool = False,
    on_error: str = "abort",
) -> dict:
    """Upsert up to BULK_MAX_RECORDS JSON records with the same rules and report as a file.

    ``dry_run`` only reports. Otherwise the valid records are written in one transaction,
    unless some are invalid and ``on_error`` is "abort" (the default): then nothing is.
    Returns the report; ``written`` says whether anything was written.
    """
    if not isinstance(records, list):
        raise ValidationError({"records": "Must be a list of objects."})
    if len(records) > BULK_MAX_RECORDS:
        raise ValidationError(
            {"records": f"{len(records):,} records: send at most {BULK_MAX_RECORDS:,} per call."}
        )
    if on_error not in ("abort", "skip"):
        raise ValidationError({"on_error": "Choose 'abort' or 'skip'."})
    target_name, required = _options(
        project=project, metadata_target=metadata_target, required_fields=required_fields
    )
    validator = RowValidator(
        header=None,
        country=project.country if project else brand.default_country,
        required_fields=required,
        for_project=project is not None,
    )
    tracker = DuplicateTracker()
    labels = {name: name for name in ("person_id", "email")}
    errors: list[RowError] = []
    valid: list[RowRecord] = []
    for _index, record, record_errors in records_from_json(records, validator):
        if record is not None:
            duplicate = tracker.check(record, labels)
            if duplicate is not None:
                record_errors, record = [duplicate], None
        if record is None:
            errors.extend(record_errors)
        else:
            valid.append(record)
    errors.extend(tracker.late.values())
    valid = [r for r in valid if r.number not in tracker.late]
    target = UpsertTarget(
        brand=brand,
        project=project,
        erase_empty=erase_empty,
        metadata_target=target_name,
        actor_id=actor.pk if getattr(actor, "pk", None) else None,
        labels=labels,
    )

    def run(write: bool) -> tuple[dict, list[RowError], int]:
        counts = {CREATE: 0, UPDATE: 0, UNCHANGED: 0}
        found: list[RowError] = []
        added = 0
        state = UpsertState()
        for batch in _batched(valid, IMPORT_BATCH_ROWS):
            plan = plan_batch(batch, target, state)
            if write:
                write_batch(plan, target)
            found.extend(plan.errors)
            added += plan.added
            for _record, outcome in plan.outcomes:
                if outcome in counts:
                    counts[outcome] += 1
        return counts, found, added

    counts, db_errors, added = run(write=False)
    all_errors = sorted(errors + db_errors, key=lambda e: (e.row, e.column))
    error_rows = len({e.row for e in all_errors})
    report = {
        "records": len(records),
        "to_create": counts[CREATE],
        "to_update": counts[UPDATE],
        "unchanged": counts[UNCHANGED],
        "new_participants": added,
        "error_rows": error_rows,
        "errors": [_bulk_error(e) for e in all_errors[:REPORT_ERROR_LIMIT]],
        "errors_truncated": len(all_errors) > REPORT_ERROR_LIMIT,
        "dry_run": dry_run,
        "written": False,
    }
    if dry_run or (error_rows and on_error == "abort") or not valid:
        return report
    with transaction.atomic():
        lock_brand_directory(brand_id=brand.pk)
        counts, db_errors, added = run(write=True)
    report.update(
        {
            "written": True,
            "created": counts[CREATE],
            "updated": counts[UPDATE],
            "unchanged": counts[UNCHANGED],
            "new_participants": added,
        }
    )
    if db_errors:  # the directory changed between the check and the write
        extra = [_bulk_error(e) for e in db_errors]
        report["errors"] = (report["errors"] + extra)[:REPORT_ERROR_LIMIT]
        report["error_rows"] = error_rows + len({e.row for e in db_errors})
    return report


def _bulk_error(error: RowError) -> dict:
    return {
        "index": error.row,
        "field": error.column,
        "value": error.value,
        "message": error.message,
    }
