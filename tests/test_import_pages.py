"""Import pages: upload, report, confirm or cancel, progress fragment, errors, limits, tenancy."""

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

import pytest

from participants.models import ImportJob, Person
from participants.services import import_create
from tests.factories.participants import csv_upload, import_media  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("import_media")]

ROWS = [
    ["PersonID", "First name", "Email", "Phone", "Role"],
    ["E-1", "Ann", "ann@x.com", "+44 7911 123456", "Manager"],
    ["E-2", "Bo", "bo@x.com", "555-12", ""],
]


def test_upload_shows_the_report_then_confirm_imports(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    form = client.get(reverse("participants:project-import", args=[tenancy.project_a.pk]))
    assert form.status_code == 200 and b"Nothing is written until you confirm" in form.content
    response = client.post(
        reverse("participants:project-import", args=[tenancy.project_a.pk]),
        {"file": csv_upload(ROWS), "metadata_target": "person", "required_fields": ["phone"]},
    )
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "participants:import", args=[job.pk]
    )
    page = client.get(response["Location"]).content.decode()
    assert 'data-metric="to_create">1<' in page and 'data-metric="errors">1<' in page
    assert "&#x27;555-12&#x27; is not a valid phone number for US." in page
    assert "Import 1 valid row and skip 1 with errors" in page
    assert not Person.objects.filter(person_id="E-1").exists()

    done = client.post(reverse("participants:import-confirm", args=[job.pk]), follow=True)
    assert b"Imported." in done.content and b'data-metric="created">1<' in done.content
    assert Person.objects.get(brand=tenancy.brand_a, person_id="E-1").phone == "+447911123456"


def test_cancel_from_the_report(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    client.post(
        reverse("participants:directory-import"),
        {"file": csv_upload(ROWS)},
    )
    job = ImportJob.objects.get()
    assert job.project is None
    page = client.post(reverse("participants:import-cancel", args=[job.pk]), follow=True)
    assert b"Import cancelled: nothing was written." in page.content
    assert not Person.objects.filter(person_id__in=["E-1", "E-2"]).exists()


@pytest.mark.parametrize(
    "content,message",
    [
        (b"First name,Phone\nAnn,+14155550100\n", b"no PersonID (or ExternalDataReference)"),
        (b"PersonID,Email\n", b"The file has a header row (row 1) but no data rows."),
    ],
)
def test_a_file_that_cannot_be_imported_shows_why(tenancy, page_client_for, content, message):
    client = page_client_for(tenancy.project_admin_a)
    page = client.post(
        reverse("participants:project-import", args=[tenancy.project_a.pk]),
        {"file": SimpleUploadedFile("x.csv", content)},
        follow=True,
    )
    assert message in page.content and b"Not imported" in page.content


def test_an_empty_file_is_refused_by_the_form(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    response = client.post(
        reverse("participants:project-import", args=[tenancy.project_a.pk]),
        {"file": SimpleUploadedFile("x.csv", b"")},
    )
    assert response.status_code == 400 and b"The submitted file is empty." in response.content


def test_an_upload_over_the_limit_is_refused_with_a_clear_message(
    tenancy, page_client_for, settings
):
    settings.RELAY_IMPORT_MAX_UPLOAD_BYTES = 2048
    client = page_client_for(tenancy.project_admin_a)
    big = [["PersonID", "Email"]] + [[f"E-{i}", f"p{i}@x.com"] for i in range(400)]
    response = client.post(
        reverse("participants:project-import", args=[tenancy.project_a.pk]),
        {"file": csv_upload(big)},
    )
    assert response.status_code == 413
    assert b"The file is larger than 2 kB" in response.content
    assert b"Split it into smaller files, each with the header row" in response.content
    assert not ImportJob.objects.exists()


def test_the_upload_size_guard_keeps_csrf_protection(tenancy, client):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(tenancy.project_admin_a)
    response = csrf_client.post(
        reverse("participants:project-import", args=[tenancy.project_a.pk]),
        {"file": csv_upload(ROWS)},
    )
    assert response.status_code == 403
    assert not ImportJob.objects.exists()


def test_the_status_fragment_polls_only_while_running(tenancy, page_client_for, settings):
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 0  # queued: stays "validating" (no worker here)
    job = import_create(brand=tenancy.brand_a, project=tenancy.project_a, upload=csv_upload(ROWS))
    client = page_client_for(tenancy.project_admin_a)
    url = reverse("participants:import-status", args=[job.pk])
    running = client.get(url).content.decode()
    assert f'hx-get="{url}"' in running and 'hx-trigger="every 1s"' in running
    assert "Checking the file" in running and "<progress" in running
    ImportJob.objects.filter(pk=job.pk).update(status="importing", progress=0.42)
    assert 'value="42"' in client.get(url).content.decode()
    ImportJob.objects.filter(pk=job.pk).update(status="failed", failure="Broken.")
    finished = client.get(url).content.decode()
    assert "hx-get" not in finished and "Broken." in finished


def test_the_errors_csv_download(tenancy, page_client_for):
    job = import_create(brand=tenancy.brand_a, project=tenancy.project_a, upload=csv_upload(ROWS))
    client = page_client_for(tenancy.project_admin_a)
    response = client.get(reverse("participants:import-errors", args=[job.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="people-errors.csv"'
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    assert text.splitlines()[1].startswith("3,Phone: '555-12' is not a valid phone number")


def test_import_history_lists_the_brands_imports_only(tenancy, page_client_for):
    import_create(brand=tenancy.brand_a, project=tenancy.project_a, upload=csv_upload(ROWS))
    import_create(
        brand=tenancy.brand_b, project=tenancy.project_b, upload=csv_upload(ROWS, name="b.csv")
    )
    page = page_client_for(tenancy.project_admin_a).get(reverse("participants:imports"))
    assert b"people.csv" in page.content and b"b.csv" not in page.content


def test_viewers_cannot_import(tenancy, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    url = reverse("participants:project-import", args=[tenancy.project_a.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"file": csv_upload(ROWS)}).status_code == 403
    assert not ImportJob.objects.exists()


def test_another_brands_imports_answer_404(tenancy, page_client_for):
    job_b = import_create(brand=tenancy.brand_b, project=tenancy.project_b, upload=csv_upload(ROWS))
    client = page_client_for(tenancy.admin_a)
    for name in ("participants:import", "participants:import-status", "participants:import-errors"):
        assert client.get(reverse(name, args=[job_b.pk])).status_code == 404, name
    for name in ("participants:import-confirm", "participants:import-cancel"):
        assert client.post(reverse(name, args=[job_b.pk])).status_code == 404, name
    url = reverse("participants:project-import", args=[tenancy.project_b.pk])
    assert client.get(url).status_code == 404
    assert client.post(url, {"file": csv_upload(ROWS)}).status_code == 404
    job_b.refresh_from_db()
    assert job_b.status == "validated"
    assert not Person.objects.filter(brand=tenancy.brand_b, person_id="E-1").exists()
