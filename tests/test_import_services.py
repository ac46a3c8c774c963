"""Import services: validate first, write second; upsert rules; atomicity; tasks; tenancy."""

import csv
import io

from django.db import connection

import pytest

from participants.metadata import OPT_OUT_KEY
from participants.models import ImportJob, Participant, Person
from participants.services import (
    import_cancel,
    import_commit,
    import_confirm,
    import_create,
    import_validate,
    participants_bulk_upsert,
)
from tests.factories.participants import (
    ParticipantFactory,
    PersonFactory,
    celery_eager,  # noqa: F401
    csv_upload,
    import_media,  # noqa: F401
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("import_media")]

HEADER = ["PersonID", "First name", "Last name", "Email", "Phone", "Role", "Department"]


@pytest.fixture(autouse=True)
def inline_imports(settings):
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 10 * 1024 * 1024


def upload(tenancy, rows, *, project=True, **options) -> ImportJob:
    return import_create(
        brand=tenancy.brand_a,
        project=tenancy.project_a if project else None,
        upload=csv_upload(rows),
        actor=tenancy.project_admin_a,
        **options,
    )


def snapshot(brand) -> list:
    people = Person.objects.filter(brand=brand).order_by("pk")
    participants = Participant.objects.filter(project__brand=brand).order_by("pk")
    return [
        list(people.values_list("pk", "person_id", "first_name", "email", "phone", "metadata")),
        list(participants.values_list("pk", "person_id", "role", "metadata")),
    ]


# --- Validate first -------------------------------------------------------------------------


def test_validation_reports_and_writes_nothing(tenancy):
    existing = ParticipantFactory(project=tenancy.project_a, person__person_id="E-2").person
    before = snapshot(tenancy.brand_a)
    job = upload(
        tenancy,
        [
            HEADER,
            ["E-1", "Ann", "Lee", "ann@x.com", "(415) 555-0100", "Manager", "Sales"],
            ["E-2", existing.first_name, existing.last_name, "", "", "Employee", ""],
            ["E-3", "Bo", "Ray", "bo@x.com", "123", "", ""],
        ],
    )
    assert job.status == ImportJob.Status.VALIDATED
    assert (job.total_rows, job.to_create, job.to_update, job.unchanged, job.error_rows) == (
        3,
        1,
        0,
        1,
        1,
    )
    assert job.report["errors"] == [
        {
            "row": 4,
            "column": "Phone",
            "value": "123",
            "message": "'123' is not a valid phone number for US.",
        }
    ]
    assert (job.encoding, job.delimiter) == ("utf-8", ",")
    assert snapshot(tenancy.brand_a) == before  # nothing written before confirmation


def test_confirm_writes_the_valid_rows_only(tenancy):
    job = upload(
        tenancy,
        [
            HEADER,
            ["E-1", "Ann", "Lee", "ann@x.com", "+44 7911 123456", "Manager", "Sales"],
            ["E-3", "Bo", "Ray", "bo@x.com", "123", "", ""],
        ],
    )
    job = import_confirm(job=job, actor=tenancy.project_admin_a)
    assert job.status == ImportJob.Status.DONE
    assert (job.created_count, job.updated_count, job.added_count) == (1, 0, 1)
    ann = Person.objects.get(brand=tenancy.brand_a, person_id="E-1")
    assert (ann.phone, ann.metadata) == ("+447911123456", {"Department": "Sales"})
    participant = Participant.objects.get(person=ann)
    assert (participant.project, participant.role, participant.added_by) == (
        tenancy.project_a,
        "Manager",
        tenancy.project_admin_a,
    )
    assert not Person.objects.filter(person_id="E-3").exists()
    assert not job.file and not job.rows_file  # the upload is not kept once imported
    assert job.errors_file  # the error report is


def test_cancel_writes_nothing_and_a_cancelled_job_cannot_be_confirmed(tenancy):
    before = snapshot(tenancy.brand_a)
    job = upload(tenancy, [HEADER, ["E-1", "Ann", "", "", "", "", ""]])
    import_cancel(job=job)
    with pytest.raises(Exception, match="cannot be confirmed: it is cancelled"):
        import_confirm(job=job)
    assert snapshot(tenancy.brand_a) == before
    assert ImportJob.objects.get(pk=job.pk).status == ImportJob.Status.CANCELLED


def test_a_job_is_written_once(tenancy):
    job = upload(tenancy, [HEADER, ["E-1", "Ann", "", "", "", "", ""]])
    job = import_confirm(job=job)
    assert import_commit(job=job) == {"skipped": "done"}
    with pytest.raises(Exception, match="cannot be confirmed: it is done"):
        import_confirm(job=job)
    assert Person.objects.filter(person_id="E-1").count() == 1


def test_a_file_that_cannot_be_imported_fails_with_its_reason(tenancy):
    job = upload(tenancy, [["PersonID", "Email"]])
    assert job.status == ImportJob.Status.FAILED
    assert job.failure == "The file has a header row (row 1) but no data rows."
    job = upload(tenancy, [["First name", "Phone"], ["Ann", "+14155550100"]])
    assert "no PersonID (or ExternalDataReference) column and no Email column" in job.failure
    job = upload(tenancy, [["PersonID", "Email"], ["E-1", "a@x.com"]], required_fields=["phone"])
    assert job.status == ImportJob.Status.FAILED and "'Phone number' or 'Phone'" in job.failure
    assert not job.file  # nothing of it is kept


def test_duplicated_person_ids_mark_every_occurrence(tenancy):
    job = upload(
        tenancy,
        [
            HEADER,
            ["E-1", "Ann", "", "", "", "", ""],
            ["E-2", "Bo", "", "", "", "", ""],
            ["E-1", "Ann bis", "", "", "", "", ""],
        ],
    )
    assert (job.to_create, job.error_rows) == (1, 2)
    assert [(e["row"], e["message"]) for e in job.report["errors"]] == [
        (2, "PersonID 'E-1' is also on row 4: a person may appear once."),
        (4, "PersonID 'E-1' is also on row 2: a person may appear once."),
    ]
    import_confirm(job=job)
    assert list(
        Person.objects.filter(person_id__in=["E-1", "E-2"]).values_list("person_id", flat=True)
    ) == ["E-2"]


def test_duplicates_across_batches_are_taken_back_from_the_counts(tenancy, monkeypatch):
    monkeypatch.setattr("participants.services.IMPORT_BATCH_ROWS", 2)
    rows = [HEADER] + [[f"E-{i}", "", "", "", "", "", ""] for i in range(7)]
    rows.append(["E-1", "", "", "", "", "", ""])
    job = upload(tenancy, rows)
    assert (job.to_create, job.error_rows, job.total_rows) == (6, 2, 8)
    assert job.report["late_invalid_rows"] == [3]
    job = import_confirm(job=job)
    assert job.created_count == 6
    assert not Person.objects.filter(person_id="E-1").exists()


def test_error_csv_has_the_bad_rows_in_order_with_reasons_and_neutralised_cells(tenancy):
    job = upload(
        tenancy,
        [
            HEADER,
            ["E-1", "Ann", "", "", "", "", ""],
            ["E-2", "Bo", "", "", "999", "", "=HYPERLINK(1)"],
            ["E-3", "Cy", "", "", "", "", ""],
            ["E-1", "Ann", "", "", "", "", ""],
        ],
    )
    rows = list(csv.reader(io.StringIO(job.errors_file.read().decode("utf-8-sig"))))
    assert rows[0] == ["Import row", "Import errors", *HEADER]
    assert [r[0] for r in rows[1:]] == ["2", "3", "5"]
    assert rows[2][1].startswith("Phone: '999' is not a valid phone number for US.; Department:")
    assert rows[2][-1] == "'=HYPERLINK(1)"  # safe to open in a spreadsheet


def test_the_corrected_error_file_imports_back(tenancy):
    job = upload(tenancy, [HEADER, ["E-9", "Ann", "", "", "999", "", "Ops"]])
    fixed = job.errors_file.read().decode("utf-8-sig").replace(",999,", ",+14155550100,")
    job = import_create(brand=tenancy.brand_a, project=tenancy.project_a, upload=csv_upload(fixed))
    assert (job.to_create, job.error_rows) == (1, 0)
    assert [c["note"] for c in job.columns[:2]] == ["added by the error file"] * 2


# --- Upsert rules -----------------------------------------------------------------------------


def test_person_id_match_updates_person_and_participant(tenancy):
    person = PersonFactory(
        brand=tenancy.brand_a,
        person_id="E-1",
        first_name="Old",
        email="old@x.com",
        metadata={"Department": "Sales", "Site": "Paris"},
    )
    ParticipantFactory(project=tenancy.project_a, person=person, role="Employee")
    job = upload(tenancy, [HEADER, ["E-1", "New", "", "new@x.com", "", "Manager", "Ops"]])
    assert (job.to_update, job.unchanged) == (1, 0)
    job = import_confirm(job=job)
    person.refresh_from_db()
    assert (person.first_name, person.email) == ("New", "new@x.com")
    assert person.last_name != ""  # an empty cell does not erase
    assert person.metadata == {"Department": "Ops", "Site": "Paris"}  # merged field by field
    assert Participant.objects.get(person=person).role == "Manager"
    assert job.updated_count == 1 and job.added_count == 0


def test_erase_empty_clears_present_columns_only(tenancy):
    person = PersonFactory(
        brand=tenancy.brand_a,
        person_id="E-1",
        last_name="Lee",
        username="ann",
        metadata={"Department": "Sales", "Site": "Paris"},
    )
    ParticipantFactory(project=tenancy.project_a, person=person, role="Employee")
    job = upload(tenancy, [HEADER, ["E-1", "Ann", "", "", "", "", ""]], erase_empty=True)
    import_confirm(job=job)
    person.refresh_from_db()
    assert (person.last_name, person.email, person.phone) == ("", "", "")
    assert person.username == "ann"  # no "User name" column: untouched
    assert person.metadata == {"Site": "Paris"}
    assert person.person_id == "E-1"
    assert Participant.objects.get(person=person).role == ""


def test_rows_without_person_id_match_by_email(tenancy):
    person = PersonFactory(brand=tenancy.brand_a, person_id="E-1", email="ann@x.com", phone="")
    job = upload(tenancy, [["Email", "Phone"], ["ANN@x.com", "+1 415 555 0100"]])
    assert (job.to_update, job.to_create) == (1, 0)  # joins the project
    import_confirm(job=job)
    person.refresh_from_db()
    assert person.phone == "+14155550100"
    assert Participant.objects.filter(project=tenancy.project_a, person=person).exists()


def test_an_email_shared_by_two_people_needs_a_person_id(tenancy):
    PersonFactory(brand=tenancy.brand_a, email="team@x.com")
    PersonFactory(brand=tenancy.brand_a, email="team@x.com")
    job = upload(tenancy, [["Email", "First name"], ["team@x.com", "Who"]])
    assert job.error_rows == 1
    assert job.report["errors"][0]["message"] == (
        "2 people in the directory have the email 'team@x.com': add a PersonID column to say "
        "which one this row updates."
    )


def test_a_new_person_id_claims_the_person_added_without_one(tenancy):
    manual = PersonFactory(brand=tenancy.brand_a, person_id="", email="ann@x.com")
    job = upload(tenancy, [["PersonID", "Email"], ["E-7", "ann@x.com"]])
    assert (job.to_create, job.to_update) == (0, 1)
    import_confirm(job=job)
    manual.refresh_from_db()
    assert manual.person_id == "E-7"
    assert Person.objects.filter(brand=tenancy.brand_a, email="ann@x.com").count() == 1


def test_two_rows_finding_one_person_is_an_error_on_the_later_row(tenancy):
    person = PersonFactory(brand=tenancy.brand_a, person_id="E-1", email="ann@x.com")
    job = upload(
        tenancy,
        [
            HEADER,
            ["E-1", "Ann", "", "new@x.com", "", "", ""],
            ["", "Bo", "", "ann@x.com", "", "", ""],
        ],
    )
    assert (job.to_update, job.to_create, job.error_rows) == (1, 0, 1)
    assert job.report["errors"] == [
        {
            "row": 3,
            "column": "Email",
            "value": "ann@x.com",
            "message": "This row's email finds the same person in the directory as row 2: a "
            "person may appear once in a file.",
        }
    ]
    job = import_confirm(job=job)
    assert (job.updated_count, job.created_count) == (1, 0)
    person.refresh_from_db()
    assert (person.first_name, person.email) == ("Ann", "new@x.com")
    assert not Person.objects.filter(brand=tenancy.brand_a, first_name="Bo").exists()


def test_more_metadata_columns_than_a_table_holds_take_the_python_planner(tenancy, monkeypatch):
    # PostgreSQL allows 1,600 columns per table: a wider file is matched and written in Python.
    monkeypatch.setattr("participants.sqlupserts.SetBasedImport.MAX_METADATA_COLUMNS", 1)
    person = PersonFactory(brand=tenancy.brand_a, person_id="E-1", metadata={"dept": "Old"})
    job = upload(tenancy, [["PersonID", "Dept", "Site"], ["E-1", "Ops", "Paris"], ["E-2", "", "R"]])
    assert (job.to_update, job.to_create) == (1, 1)
    job = import_confirm(job=job)
    assert (job.updated_count, job.created_count) == (1, 1)
    person.refresh_from_db()
    assert person.metadata == {"dept": "Ops", "Site": "Paris"}
    assert Person.objects.get(brand=tenancy.brand_a, person_id="E-2").metadata == {"Site": "R"}


def test_unchanged_rows_are_reported_and_not_rewritten(tenancy):
    person = PersonFactory(brand=tenancy.brand_a, person_id="E-1", first_name="Ann")
    ParticipantFactory(project=tenancy.project_a, person=person, role="Lead")
    stamp = Person.objects.get(pk=person.pk).updated_at
    job = import_confirm(
        job=upload(tenancy, [["PersonID", "First name", "Role"], ["E-1", "Ann", "Lead"]])
    )
    assert (job.unchanged, job.unchanged_count, job.updated_count) == (1, 1, 0)
    assert Person.objects.get(pk=person.pk).updated_at == stamp


def test_metadata_can_go_to_the_project_participant(tenancy):
    person = PersonFactory(brand=tenancy.brand_a, person_id="E-1", metadata={"Site": "Paris"})
    job = upload(
        tenancy,
        [["PersonID", "Wave"], ["E-1", "2"], ["E-2", "1"]],
        metadata_target=ImportJob.MetadataTarget.PARTICIPANT,
    )
    import_confirm(job=job)
    person.refresh_from_db()
    assert person.metadata == {"Site": "Paris"}
    assert Participant.objects.get(person=person).metadata == {"Wave": "2"}
    assert Participant.objects.get(person__person_id="E-2").metadata == {"Wave": "1"}


def test_metadata_field_names_match_without_case(tenancy):
    person = PersonFactory(brand=tenancy.brand_a, person_id="E-1", metadata={"Cost Center": "A"})
    import_confirm(job=upload(tenancy, [["PersonID", "cost  center"], ["E-1", "B"]], project=False))
    person.refresh_from_db()
    assert person.metadata == {"Cost Center": "B"}


def test_an_import_never_sets_or_erases_opted_out(tenancy):
    opted = PersonFactory(brand=tenancy.brand_a, person_id="E-1", metadata={OPT_OUT_KEY: "Yes"})
    job = upload(
        tenancy,
        [["PersonID", "Opted out", "Team"], ["E-1", "No", ""], ["E-2", "Yes", "Ops"]],
        erase_empty=True,
    )
    assert "'Opted out' is ignored" in job.report["warnings"][0]
    import_confirm(job=job)
    opted.refresh_from_db()
    assert opted.metadata == {OPT_OUT_KEY: "Yes"}
    assert Person.objects.get(person_id="E-2").metadata == {"Team": "Ops"}


def test_directory_only_import_creates_people_without_participants(tenancy):
    tenancy.brand_a.default_country = "GB"
    tenancy.brand_a.save()
    job = import_confirm(
        job=upload(
            tenancy, [["PersonID", "Phone", "Role"], ["E-1", "07911 123456", "Boss"]], project=False
        )
    )
    assert job.status == ImportJob.Status.DONE and "'Role' is ignored" in job.report["warnings"][0]
    person = Person.objects.get(person_id="E-1")
    assert person.phone == "+447911123456"  # read in the brand's country
    assert not person.participations.exists()


def test_project_country_reads_national_numbers(tenancy):
    tenancy.project_a.default_country = "FR"
    tenancy.project_a.save()
    import_confirm(job=upload(tenancy, [["PersonID", "Phone"], ["E-1", "06 12 34 56 78"]]))
    assert Person.objects.get(person_id="E-1").phone == "+33612345678"


# --- Tenancy ----------------------------------------------------------------------------------


def test_an_import_never_touches_another_brand(tenancy):
    other = tenancy.participant_b.person
    before_b = snapshot(tenancy.brand_b)
    job = upload(
        tenancy, [["PersonID", "Email", "First name"], [other.person_id, other.email, "Hijack"]]
    )
    assert job.to_create == 1  # brand B's PersonID means nothing in brand A
    import_confirm(job=job)
    assert snapshot(tenancy.brand_b) == before_b
    assert (
        Person.objects.get(brand=tenancy.brand_a, person_id=other.person_id).first_name == "Hijack"
    )


def test_a_project_of_another_brand_is_refused(tenancy):
    with pytest.raises(Exception, match="another brand"):
        import_create(brand=tenancy.brand_a, project=tenancy.project_b, upload=csv_upload([HEADER]))


# --- Atomicity: a fault in the middle of the write leaves the directory as it was ----------------


FAULT_SQLITE = """
CREATE TRIGGER relay_test_fault BEFORE INSERT ON participants_person
WHEN NEW.person_id = 'BOOM' BEGIN SELECT RAISE(ABORT, 'injected fault'); END
"""
FAULT_PG = [
    """CREATE FUNCTION relay_test_fault() RETURNS trigger AS $$
    BEGIN IF NEW.person_id = 'BOOM' THEN RAISE EXCEPTION 'injected fault'; END IF;
    RETURN NEW; END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER relay_test_fault BEFORE INSERT ON participants_person
    FOR EACH ROW EXECUTE FUNCTION relay_test_fault()""",
]


@pytest.fixture
def fault_on_boom(monkeypatch):
    """A database trigger that fails the insert of PersonID 'BOOM': a real fault, mid-write.

    With batches of 1,000 rows and 'BOOM' on row 4,500, four batches (people created, one
    updated, participants added) are written before the fifth fails.
    """
    monkeypatch.setattr("participants.services.IMPORT_BATCH_ROWS", 1000)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for statement in FAULT_PG:
                cursor.execute(statement)
        else:
            cursor.execute(FAULT_SQLITE)
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER IF EXISTS relay_test_fault"
            + (" ON participants_person" if connection.vendor == "postgresql" else "")
        )
        if connection.vendor == "postgresql":
            cursor.execute("DROP FUNCTION IF EXISTS relay_test_fault()")


def _fault_file(tenancy, existing: Person) -> list[list[str]]:
    rows = [HEADER, [existing.person_id, "Changed", "", "", "", "Boss", "Changed"]]
    rows += [[f"N-{i}", "New", "", "", "", "", ""] for i in range(5000)]
    rows.insert(4500, ["BOOM", "Fault", "", "", "", "", ""])
    return rows


def _assert_rolled_back(tenancy, job, before, existing):
    assert job.status == ImportJob.Status.FAILED
    assert job.failure.startswith(
        "The import failed while writing and was rolled back: the directory is as it was before."
    )
    assert "injected fault" in job.failure
    assert snapshot(tenancy.brand_a) == before
    existing.refresh_from_db()
    assert existing.first_name != "Changed"


def test_a_fault_mid_write_rolls_everything_back(tenancy, fault_on_boom):
    existing = ParticipantFactory(project=tenancy.project_a).person
    job = upload(tenancy, _fault_file(tenancy, existing))
    assert (job.to_create, job.to_update) == (5001, 1)  # the fault is not visible to validation
    before = snapshot(tenancy.brand_a)
    job = import_confirm(job=job)
    # Batches 1 to 4 (about 4,000 people, one update) were written before batch 5 failed.
    _assert_rolled_back(tenancy, job, before, existing)


@pytest.mark.django_db(transaction=True)
def test_a_fault_mid_write_rolls_back_a_real_transaction(tenancy, fault_on_boom):
    existing = ParticipantFactory(project=tenancy.project_a).person
    job = upload(tenancy, _fault_file(tenancy, existing))
    before = snapshot(tenancy.brand_a)
    job = import_confirm(job=job)
    _assert_rolled_back(tenancy, job, before, existing)
    if connection.vendor == "postgresql":
        # Progress is published outside the import's transaction: it saw four batches land.
        assert job.processed_rows == 4000


# --- Tasks: the same services, queued after commit ---------------------------------------------


@pytest.mark.usefixtures("celery_eager")
def test_large_files_are_validated_and_written_by_tasks(
    tenancy, settings, django_capture_on_commit_callbacks
):
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 0
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = upload(tenancy, [HEADER, ["E-1", "Ann", "", "", "", "", ""]])
        assert ImportJob.objects.get(pk=job.pk).status == ImportJob.Status.VALIDATING
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert job.status == ImportJob.Status.VALIDATED
    with django_capture_on_commit_callbacks(execute=True):
        job = import_confirm(job=job)
        assert job.status == ImportJob.Status.IMPORTING and job.started_at is None
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE and job.created_count == 1


def test_auto_commit_imports_a_clean_file_without_confirmation(tenancy):
    job = upload(tenancy, [HEADER, ["E-1", "Ann", "", "", "", "", ""]], auto_commit=True)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE
    dirty = upload(tenancy, [HEADER, ["E-2", "Bo", "", "", "12", "", ""]], auto_commit=True)
    assert dirty.status == ImportJob.Status.VALIDATED  # waits for the user


def test_validation_stops_when_the_job_is_cancelled(tenancy, settings, monkeypatch):
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 0  # queued, and we never run the queue
    monkeypatch.setattr("participants.services.IMPORT_BATCH_ROWS", 10)
    rows = [HEADER] + [[f"E-{i}", "", "", "", "", "", ""] for i in range(100)]
    job = upload(tenancy, rows)
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.CANCELLED)
    assert import_validate(job=job) == {"skipped": "cancelled"}


def test_validation_progress_is_published(tenancy, settings, monkeypatch):
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 0
    monkeypatch.setattr("participants.services.IMPORT_BATCH_ROWS", 50)
    seen = []
    rows = [HEADER] + [[f"E-{i}", "", "", "", "", "", ""] for i in range(300)]
    job = upload(tenancy, rows)
    from participants import services

    original = services._validation_progress

    def record(job_, rows_, source):
        seen.append(rows_)
        return original(job_, rows_, source)

    monkeypatch.setattr(services, "_validation_progress", record)
    import_validate(job=job)
    assert seen == [50, 100, 150, 200, 250, 300]
    job.refresh_from_db()
    assert job.processed_rows == 300 and job.progress == 1.0


# --- Bulk upsert (JSON records, same rules) -------------------------------------------------------


def test_bulk_upsert_reports_then_writes(tenancy):
    records = [
        {"person_id": "E-1", "first_name": "Ann", "phone": "+44 7911 123456", "role": "Lead"},
        {"person_id": "E-2", "email": "bo@x.com", "metadata": {"Team": "Ops", "Level": 3}},
    ]
    report = participants_bulk_upsert(
        brand=tenancy.brand_a, project=tenancy.project_a, records=records, dry_run=True
    )
    assert (report["to_create"], report["written"]) == (2, False)
    assert not Person.objects.filter(person_id="E-1").exists()
    report = participants_bulk_upsert(
        brand=tenancy.brand_a, project=tenancy.project_a, records=records
    )
    assert (report["created"], report["written"]) == (2, True)
    assert Person.objects.get(person_id="E-2").metadata == {"Team": "Ops", "Level": "3"}


def test_bulk_upsert_aborts_on_any_error_unless_told_to_skip(tenancy):
    records = [
        {"person_id": "E-1", "first_name": "Ann"},
        {"person_id": "E-2", "phone": "12"},
        {"person_id": "E-3", "metadata": {OPT_OUT_KEY: "Yes"}},
        {"person_id": "E-4", "shoe_size": 44},
    ]
    report = participants_bulk_upsert(
        brand=tenancy.brand_a, project=tenancy.project_a, records=records
    )
    assert report["written"] is False and report["error_rows"] == 3
    assert [(e["index"], e["field"]) for e in report["errors"]] == [
        (1, "phone"),
        (2, "metadata.Opted out"),
        (3, "shoe_size"),
    ]
    assert not Person.objects.filter(person_id="E-1").exists()
    report = participants_bulk_upsert(
        brand=tenancy.brand_a, project=tenancy.project_a, records=records, on_error="skip"
    )
    assert report["written"] is True and report["created"] == 1


def test_bulk_upsert_refuses_more_than_ten_thousand_records(tenancy):
    with pytest.raises(Exception, match="10,001 records: send at most 10,000 per call"):
        participants_bulk_upsert(brand=tenancy.brand_a, records=[{}] * 10_001)


def test_a_write_claimed_by_a_live_worker_is_left_alone_and_a_dead_ones_resumes(tenancy, settings):
    from datetime import timedelta

    from django.utils import timezone

    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 10 * 1024 * 1024
    job = upload(tenancy, [HEADER, ["E-1", "Ann", "", "", "", "", ""]])
    ImportJob.objects.filter(pk=job.pk).update(status="importing", started_at=timezone.now())
    assert import_commit(job=job) == {"skipped": "importing"}  # someone is writing it
    assert not Person.objects.filter(person_id="E-1").exists()
    stale = timezone.now() - timedelta(minutes=31)
    ImportJob.objects.filter(pk=job.pk).update(started_at=stale)  # that worker died
    assert import_commit(job=job)["created"] == 1
    assert ImportJob.objects.get(pk=job.pk).status == "done"
