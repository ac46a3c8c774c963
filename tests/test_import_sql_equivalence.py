"""One set of upsert rules: the set-based PostgreSQL write of a file import (``sqlupserts``)
gives exactly what the Python planner (``upserts.plan_batch`` + ``write_batch``, used on SQLite
and by the bulk API) gives, on the same directory and the same validated rows.

Hypothesis draws small directories and files from tiny pools of PersonIDs, emails and metadata
field spellings, so that the rules' corners meet often: PersonID and email matches, emails
shared by several people, claims of people without PersonID, two rows finding one person,
metadata names differing by case, spaces or Unicode case folding ("Straße" / "STRASSE"),
several stored spellings of one name, ``Opted out`` in the directory, erase_empty, metadata on
the person or on the participant, directory-only imports, and chunk sizes. Both paths run in
a savepoint rolled back afterwards; the outcome counts, the row errors and the resulting
directory (values, and which rows were rewritten) must be equal.
"""

from __future__ import annotations

import io
import json
import os

from django.db import connection, transaction

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from participants.importer import DuplicateTracker, RowRecord, SpoolLayout
from participants.models import Participant, Person
from participants.sqlupserts import SetBasedImport
from participants.upserts import (
    CREATE,
    UNCHANGED,
    UPDATE,
    UpsertState,
    UpsertTarget,
    plan_batch,
    write_batch,
)

pytestmark = pytest.mark.django_db

PIDS = ["A-1", "A-2", "B-1", "C-1", "D-1"]
EMAILS = ["ann@x.com", "bo@x.com", "cy@x.com"]
NAMES = ["", "Ann", "Bo"]
ROLES = ["", "Lead", "Member"]
VALUES = ["", "x", "y"]
# Stored spellings: several normalise alike (dept), one only under Unicode case folding.
STORED_KEYS = ["Dept", "dept", "DEPT", "Site", "Straße", "Opted out", "Other"]
# File columns: distinct once normalised (the header mapping refuses twins), never protected.
FILE_KEYS = ["dept", "Dept", " SITE", "STRASSE", "Team"]
FIELDS = ["person_id", "first_name", "last_name", "email", "username", "phone", "role"]

metadata_values = st.dictionaries(
    st.sampled_from(STORED_KEYS), st.sampled_from(["x", "y", "Yes", 5]), max_size=4
)
people = st.lists(
    st.fixed_dictionaries(
        {
            "person_id": st.sampled_from(["", "", *PIDS]),
            "email": st.sampled_from(["", *EMAILS, *EMAILS]),
            "first_name": st.sampled_from(NAMES),
            "phone": st.sampled_from(["", "+14155550100"]),
            "metadata": metadata_values,
            "participant": st.none()
            | st.fixed_dictionaries({"role": st.sampled_from(ROLES), "metadata": metadata_values}),
        }
    ),
    max_size=7,
    unique_by=lambda p: p["person_id"] or object(),
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "person_id": st.sampled_from(["", "", "", *PIDS, "N-1"]),
            "email": st.sampled_from(["", *EMAILS, *EMAILS, "new@x.com"]),
            "first_name": st.sampled_from(NAMES),
            "last_name": st.sampled_from(NAMES),
            "username": st.sampled_from(["", "u"]),
            "phone": st.sampled_from(["", "+14155550100", "+14155550101"]),
            "role": st.sampled_from(ROLES),
            "metadata": st.lists(st.sampled_from(VALUES), min_size=5, max_size=5),
        }
    ),
    min_size=1,
    max_size=9,
)
options = st.fixed_dictionaries(
    {
        "fields": st.sets(st.sampled_from(FIELDS), min_size=1),
        "file_keys": st.lists(
            st.sampled_from(FILE_KEYS),
            unique_by=lambda k: " ".join(k.split()).casefold().replace("ß", "ss"),
            max_size=3,
        ),
        "erase_empty": st.booleans(),
        "project": st.booleans(),
        "on_participant": st.booleans(),
        "batch": st.integers(1, 4),
    }
)


ROW = {
    "first_name": "",
    "last_name": "",
    "username": "",
    "phone": "",
    "role": "",
    "metadata": [""] * 5,
}
OPTS = {"erase_empty": True, "project": True, "on_participant": False, "batch": 1}


def _records(rows: list[dict], layout: SpoolLayout) -> list[RowRecord]:
    """The rows as validation leaves them: present columns only, duplicates taken out."""
    tracker = DuplicateTracker()
    records = []
    for number, row in enumerate(rows, start=2):
        values = {name: row[name] for name in layout.fields}
        if not values.get("person_id") and not values.get("email"):
            continue  # the validator refuses a row with neither
        metadata = dict(zip(layout.metadata_keys, row["metadata"], strict=False))
        record = RowRecord(number, metadata=metadata, **values)
        if tracker.check(record, {}) is None:
            records.append(record)
    return [r for r in records if r.number not in tracker.late]


def _directory(brand, project, initial: dict[int, object]) -> dict:
    def person_key(pk, values):
        return pk if pk in initial else ("new", *values)

    found = {}
    for person in Person.objects.filter(brand=brand).order_by("pk"):
        values = (
            person.person_id,
            person.first_name,
            person.last_name,
            person.email,
            person.username,
            person.phone,
            json.dumps(person.metadata, sort_keys=True),
        )
        found[person.pk] = (
            person_key(person.pk, values),
            values,
            person.pk in initial and person.updated_at != initial[person.pk],
        )
    members = []
    if project is not None:
        for member in Participant.objects.filter(project=project):
            members.append(
                (
                    repr(found[member.person_id][0]),
                    member.role,
                    json.dumps(member.metadata, sort_keys=True),
                )
            )
    return {
        "people": sorted((repr(key), values, touched) for key, values, touched in found.values()),
        "participants": sorted(members),
    }


def _python_path(records, target, batch: int) -> dict:
    state = UpsertState()
    counts = {CREATE: 0, UPDATE: 0, UNCHANGED: 0}
    added, errors = 0, []
    for start in range(0, len(records), batch):
        plan = plan_batch(records[start : start + batch], target, state)
        write_batch(plan, target)
        added += plan.added
        errors.extend(e.as_dict() for e in plan.errors)
        for _record, outcome in plan.outcomes:
            if outcome in counts:
                counts[outcome] += 1
    return {"counts": counts, "added": added, "errors": errors}


def _sql_path(records, target, layout: SpoolLayout, batch: int) -> dict:
    text = io.StringIO(newline="")
    layout.writer(text).writerows(layout.row(r) for r in records)
    rows = SetBasedImport(target=target, layout=layout, chunk_rows=batch)
    rows.load(io.BytesIO(text.getvalue().encode()))
    plan = rows.plan()
    rows.apply(plan)
    rows.close()
    assert sum(plan.chunks) == len(records)
    return {
        "counts": plan.counts,
        "added": plan.added,
        "errors": [e.as_dict() for e in plan.errors],
    }


@settings(
    max_examples=int(os.environ.get("RELAY_EQUIVALENCE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(directory=people, file_rows=rows, opts=options)
@example(  # row 2 changes the email that row 3 finds its person by (batches of one row)
    directory=[
        {
            "person_id": "A-1",
            "email": "ann@x.com",
            "first_name": "",
            "phone": "",
            "metadata": {"DEPT": "x", "dept": "y", "Opted out": "Yes"},
            "participant": {"role": "Lead", "metadata": {}},
        }
    ],
    file_rows=[
        {**ROW, "person_id": "A-1", "email": "bo@x.com", "metadata": ["", "z", "", "", ""]},
        {**ROW, "person_id": "", "email": "ann@x.com"},
    ],
    opts={**OPTS, "fields": {"person_id", "email"}, "file_keys": ["Site", "Dept"]},
)
def test_set_based_write_equals_the_python_planner(tenancy, directory, file_rows, opts):
    if connection.vendor != "postgresql":
        pytest.skip("the set-based write runs on PostgreSQL")
    brand = tenancy.brand_a
    project = tenancy.project_a if opts["project"] else None
    fields = set(opts["fields"])
    if project is None:
        fields.discard("role")
    if not fields & {"person_id", "email"}:
        fields.add("email")
    layout = SpoolLayout(
        fields=tuple(f for f in FIELDS if f in fields), metadata_keys=tuple(opts["file_keys"])
    )
    target = UpsertTarget(
        brand=brand,
        project=project,
        erase_empty=opts["erase_empty"],
        metadata_target="participant" if project and opts["on_participant"] else "person",
        labels={"person_id": "PersonID", "email": "Email"},
    )
    records = _records(file_rows, layout)
    with transaction.atomic():
        Person.objects.filter(brand=brand).delete()
        initial = {}
        for item in directory:
            person = Person.objects.create(
                brand=brand,
                person_id=item["person_id"],
                email=item["email"],
                first_name=item["first_name"],
                phone=item["phone"],
                metadata=item["metadata"],
            )
            initial[person.pk] = person.updated_at
            if item["participant"] is not None:
                Participant.objects.create(
                    project=tenancy.project_a,
                    person=person,
                    role=item["participant"]["role"],
                    metadata=item["participant"]["metadata"],
                )
        results = []
        for run in (
            lambda: _python_path(records, target, opts["batch"]),
            lambda: _sql_path(records, target, layout, opts["batch"]),
        ):
            with transaction.atomic():
                outcome = run()
                outcome["directory"] = _directory(brand, project, initial)
                transaction.set_rollback(True)
            results.append(outcome)
        transaction.set_rollback(True)
    assert results[1] == results[0]
    outcome = results[0]
    for name, count in outcome["counts"].items():
        event(f"{name}: {'some rows' if count else 'none'}")
    for error in outcome["errors"]:
        event("row error: " + ("same person" if "same person" in error["message"] else "email"))
    if any(touched for _, _, touched in outcome["directory"]["people"]):
        event("existing people rewritten")


def test_the_spool_reads_back_what_was_written():
    layout = SpoolLayout(fields=("person_id", "email", "role"), metadata_keys=("Dept", "Note"))
    records = [
        RowRecord(2, person_id="E-1", email="a@x.com", role="", metadata={"Dept": "", "Note": ""}),
        RowRecord(5, person_id="", email="b@x.com", role="Lead", metadata={"Dept": "a,b"}),
        RowRecord(6, person_id='q"t', email="c@x.com", role="x", metadata={"Note": "l1\nl2"}),
    ]
    text = io.StringIO(newline="")
    layout.writer(text).writerows(layout.row(r) for r in records)
    text.seek(0)
    back = list(layout.records(text, skip={5}))
    assert [r.number for r in back] == [2, 6]
    assert back[1].person_id == 'q"t' and back[1].metadata == {"Dept": "", "Note": "l1\nl2"}
    assert back[0].first_name is None and back[0].role == ""  # no column: None, empty: ""
