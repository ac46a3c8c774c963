"""Import and bulk-upsert API: upload, poll, confirm, cancel, errors CSV, limits, tenancy."""

from django.urls import reverse

import pytest

from brands.roles import Role
from participants.models import ImportJob, Participant, Person
from tests.factories.brands import ApiKeyFactory
from tests.factories.participants import csv_upload, import_media  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("import_media")]

ROWS = [
    ["PersonID", "First name", "Email", "Phone number", "Role", "Team"],
    ["E-1", "Ann", "ann@x.com", "+44 7911 123456", "Manager", "Ops"],
    ["E-2", "Bo", "bo@x.com", "12", "", "=cmd"],
]


def upload(client, project=None, rows=ROWS, **fields):
    data = {"file": csv_upload(rows), **fields}
    if project is not None:
        data["project"] = project.pk
    return client.post(reverse("api:import-list"), data, format="multipart")


def test_upload_poll_confirm(tenancy, api_a):
    response = upload(api_a, tenancy.project_a)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "validated"  # small files are checked at once
    assert (body["to_create"], body["error_rows"]) == (1, 1)
    assert [(e["row"], e["column"]) for e in body["report"]["errors"]] == [
        (3, "Phone number"),
        (3, "Team"),
    ]
    assert body["links"]["errors_csv"] == reverse("api:import-errors", args=[body["id"]])
    assert not Person.objects.filter(person_id="E-1").exists()

    detail = api_a.get(reverse("api:import-detail", args=[body["id"]])).json()
    assert detail["progress"]["percent"] == 100

    errors = api_a.get(body["links"]["errors_csv"])
    assert errors.status_code == 200 and errors["Content-Type"].startswith("text/csv")
    text = b"".join(errors.streaming_content).decode("utf-8-sig")
    assert "'=cmd" in text and "Import errors" in text

    confirmed = api_a.post(reverse("api:import-confirm", args=[body["id"]]))
    assert confirmed.status_code == 202 and confirmed.json()["status"] == "done"
    assert confirmed.json()["created_count"] == 1
    person = Person.objects.get(brand=tenancy.brand_a, person_id="E-1")
    assert person.phone == "+447911123456" and person.metadata == {"Team": "Ops"}
    assert Participant.objects.get(person=person).role == "Manager"

    again = api_a.post(reverse("api:import-confirm", args=[body["id"]]))
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "This import cannot be confirmed: it is done."


def test_cancel_writes_nothing(tenancy, api_a):
    body = upload(api_a, tenancy.project_a).json()
    response = api_a.post(reverse("api:import-cancel", args=[body["id"]]))
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert not Person.objects.filter(person_id="E-1").exists()
    assert api_a.post(reverse("api:import-confirm", args=[body["id"]])).status_code == 409


def test_directory_import_and_options(tenancy, api_a):
    response = upload(
        api_a,
        rows=[["PersonID", "Phone"], ["E-5", "+1 415 555 0100"]],
        erase_empty="true",
        required_fields=["phone"],
        auto_commit="true",
    )
    body = response.json()
    assert response.status_code == 202, body
    assert (body["project"], body["status"], body["required_fields"]) == (None, "done", ["phone"])
    assert Person.objects.get(person_id="E-5").participations.count() == 0


def test_a_file_that_is_not_csv_is_refused_at_upload_with_its_reason(tenancy, api_a):
    from django.core.files.uploadedfile import SimpleUploadedFile

    xlsx = SimpleUploadedFile("people.xlsx", b"PK\x03\x04\x14\x00rest", content_type="x")
    response = api_a.post(reverse("api:import-list"), {"file": xlsx}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]["fields"]["file"]
    assert error.startswith("This is a ZIP archive, such as an Excel (.xlsx)")
    assert not ImportJob.objects.exists()


def test_empty_upload_and_unknown_fields_are_refused(tenancy, api_a):
    from django.core.files.uploadedfile import SimpleUploadedFile

    empty = SimpleUploadedFile("people.csv", b"")
    response = api_a.post(reverse("api:import-list"), {"file": empty}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["file"] == "The submitted file is empty."
    response = upload(api_a, tenancy.project_a, delimiter=";")
    assert response.status_code == 400 and "delimiter" in response.json()["error"]["fields"]


def test_uploads_over_the_limit_answer_413_with_the_limit(tenancy, api_a, settings):
    settings.RELAY_IMPORT_MAX_UPLOAD_BYTES = 1000
    big = [["PersonID", "Email"]] + [[f"E-{i}", f"p{i}@x.com"] for i in range(200)]
    response = upload(api_a, tenancy.project_a, rows=big)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert "the limit is 1 kB" in error["message"]
    assert error["fields"]["file"] == "Larger than 1 kB."
    assert not ImportJob.objects.exists()


def test_the_default_limit_is_50_mb():
    from participants.services import import_max_upload_bytes

    assert import_max_upload_bytes() == 50 * 1024 * 1024


def test_viewers_cannot_import_and_other_brands_see_nothing(tenancy, api_a, api_client_for):
    body = upload(api_a, tenancy.project_a).json()
    viewer = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.VIEWER))
    assert upload(viewer, tenancy.project_a).status_code == 403
    other = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_b, role=Role.BRAND_ADMIN))
    for name in ("api:import-detail", "api:import-errors"):
        response = other.get(reverse(name, args=[body["id"]]))
        assert response.status_code == 404, name
    for name in ("api:import-confirm", "api:import-cancel"):
        assert other.post(reverse(name, args=[body["id"]])).status_code == 404, name
    assert other.get(reverse("api:import-list")).json()["count"] == 0
    assert upload(other, tenancy.project_a).status_code == 404  # brand A's project
    assert ImportJob.objects.get(pk=body["id"]).status == "validated"


# --- Bulk upsert ------------------------------------------------------------------------------


def test_bulk_upsert_into_a_project(tenancy, api_a):
    url = reverse("api:participant-bulk", args=[tenancy.project_a.pk])
    records = [
        {"person_id": "B-1", "first_name": "Ann", "phone": "07911 123456", "role": "Lead"},
        {"person_id": "B-2", "email": "bo@x.com", "metadata": {"Team": "Ops"}},
    ]
    dry = api_a.post(url, {"records": records, "dry_run": True}, format="json")
    assert dry.status_code == 200 and not dry.json()["written"]
    assert (dry.json()["to_create"], dry.json()["error_rows"]) == (1, 1)
    assert (
        dry.json()["errors"][0]["message"] == "'07911 123456' is not a valid phone number for US."
    )
    records[0]["phone"] = "+44 7911 123456"
    done = api_a.post(url, {"records": records}, format="json")
    assert done.status_code == 200, done.json()
    assert (done.json()["created"], done.json()["written"]) == (2, True)
    assert (
        Participant.objects.filter(project=tenancy.project_a, person__person_id="B-1").get().role
        == "Lead"
    )
    again = api_a.post(url, {"records": records}, format="json").json()
    assert (again["to_create"], again["unchanged"]) == (0, 2)


def test_bulk_upsert_errors_name_each_record_and_write_nothing(tenancy, api_a):
    url = reverse("api:participant-bulk", args=[tenancy.project_a.pk])
    records = [{"person_id": "B-1"}, {"person_id": "B-1"}, {"email": "nope"}, "text"]
    response = api_a.post(url, {"records": records}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["message"] == "4 of 4 records are invalid; nothing was written."
    assert set(body["error"]["fields"]["records"]) == {"0", "1", "2", "3"}
    assert body["report"]["written"] is False
    assert not Person.objects.filter(person_id="B-1").exists()


def test_bulk_upsert_into_the_directory_and_limits(tenancy, api_a):
    url = reverse("api:person-bulk")
    response = api_a.post(url, {"records": [{"person_id": "D-1", "role": "x"}]}, format="json")
    assert response.status_code == 400
    assert "no project" in response.json()["error"]["fields"]["records"]["0"]["role"]
    response = api_a.post(url, {"records": [{}] * 10_001}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["records"] == (
        "10,001 records: send at most 10,000 per call."
    )
    response = api_a.post(url, {"records": [{"person_id": "D-1"}], "extra": 1}, format="json")
    assert response.status_code == 400 and "extra" in response.json()["error"]["fields"]


def test_bulk_upsert_into_another_brands_project_is_404(tenancy, api_a):
    url = reverse("api:participant-bulk", args=[tenancy.project_b.pk])
    response = api_a.post(url, {"records": [{"person_id": "X"}]}, format="json")
    assert response.status_code == 404
    assert not Person.objects.filter(person_id="X").exists()


def test_ten_thousand_records_in_one_call(tenancy, api_a):
    records = [
        {"person_id": f"M-{i}", "email": f"m{i}@x.com", "phone": f"+1415555{i % 100 + 100:04d}"}
        for i in range(10_000)
    ]
    response = api_a.post(
        reverse("api:participant-bulk", args=[tenancy.project_a.pk]),
        {"records": records},
        format="json",
    )
    assert response.status_code == 200, response.content[:500]
    assert response.json()["created"] == 10_000
    assert Participant.objects.filter(project=tenancy.project_a).count() == 10_001


# --- Participants API filters --------------------------------------------------------------------


def test_participant_list_filters_by_metadata_and_phone(tenancy, api_a):
    url = reverse("api:participant-list", args=[tenancy.project_a.pk])
    api_a.post(
        reverse("api:participant-bulk", args=[tenancy.project_a.pk]),
        {
            "records": [
                {"person_id": "F-1", "phone": "+44 7911 123456", "metadata": {"Team": "Ops"}},
                {"person_id": "F-2", "phone": "+1 415 555 0123", "metadata": {"Team": "Sales"}},
            ]
        },
        format="json",
    )
    found = api_a.get(url, {"metadata": "team:ops"}).json()["results"]
    assert found == []  # field names are exact; values ignore case
    found = api_a.get(url, {"metadata": "Team:OPS"}).json()["results"]
    assert [row["person_id"] for row in found] == ["F-1"]
    found = api_a.get(url, {"metadata": ["Team:Ops", "Team:Sales"]}).json()["results"]
    assert sorted(row["person_id"] for row in found) == ["F-1", "F-2"]
    found = api_a.get(url, {"q": "(415) 555-0123"}).json()["results"]
    assert [row["person_id"] for row in found] == ["F-2"]


def test_person_delete_removes_them_from_projects(tenancy, api_a):
    person = tenancy.participant_a.person
    response = api_a.delete(reverse("api:person-detail", args=[person.pk]))
    assert response.status_code == 204
    assert not Participant.objects.filter(pk=tenancy.participant_a.pk).exists()
