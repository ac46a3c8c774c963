"""A real browser (Debian's Chromium through Playwright) imports a file: upload, report, confirm."""

from pathlib import Path

import pytest

from brands.roles import Role
from participants import tasks
from participants.models import ImportJob, Participant, Person
from tests.browser import browser_user, login
from tests.factories.participants import csv_bytes, import_media  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("import_media"),
]

ROWS = [
    ["PersonID", "First name", "Last name", "Email", "Phone", "Role", "Department"],
    ["W-1", "Ada", "Lovelace", "ada@example.com", "+44 7911 123456", "Manager", "R&D"],
    ["W-2", "Alan", "Turing", "alan@example.com", "(415) 555-0123", "Employee", "R&D"],
    ["W-3", "Bad", "Phone", "bad@example.com", "555-12", "Employee", "Sales"],
    ["W-4", "Bad", "Cell", "cell@example.com", "+1 415 555 0124", "Employee", "=1+1"],
]


@pytest.fixture
def admin_page(page, live_server, tenancy):
    login(page, live_server, browser_user(tenancy.brand_a, role=Role.PROJECT_ADMIN))
    return page


def write_file(tmp_path) -> Path:
    path = tmp_path / "team.csv"
    path.write_bytes(csv_bytes(ROWS, delimiter=";", encoding="cp1252"))
    return path


def test_upload_see_the_report_and_confirm(tenancy, admin_page, live_server, tmp_path):
    page = admin_page
    page.goto(f"{live_server.url}/projects/{tenancy.project_a.pk}/participants/")
    page.get_by_role("link", name="Import CSV").click()
    page.set_input_files("input[type=file]", str(write_file(tmp_path)))
    page.get_by_label("Phone number").check()  # this SMS project needs phones
    page.get_by_role("button", name="Check the file").click()

    page.wait_for_selector("#import-report")
    assert page.inner_text('[data-metric="to_create"]') == "2"
    assert page.inner_text('[data-metric="errors"]') == "2"
    errors = page.inner_text("#import-errors")
    assert "'555-12' is not a valid phone number for US." in errors
    assert "Starts with '='" in errors
    assert "separated by semicolons" in page.inner_text("#import-report")
    assert not Person.objects.filter(person_id__startswith="W-").exists()

    page.get_by_role("button", name="Import 2 valid rows and skip 2 with errors").click()
    page.wait_for_selector("text=Imported")
    assert page.inner_text('[data-metric="created"]') == "2"
    ada = Person.objects.get(brand=tenancy.brand_a, person_id="W-1")
    assert (ada.phone, ada.metadata) == ("+447911123456", {"Department": "R&D"})
    assert Participant.objects.get(person=ada).role == "Manager"
    assert not Person.objects.filter(person_id__in=["W-3", "W-4"]).exists()
    assert page.js_errors == []


def test_a_queued_import_shows_live_progress(
    tenancy, admin_page, live_server, tmp_path, settings, monkeypatch
):
    """The page polls (htmx) while a worker validates, then writes: no reload by the user."""
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 0
    queued: list[tuple[str, int]] = []  # the broker: we play the worker below
    monkeypatch.setattr(tasks.import_validate_task, "delay", lambda pk: queued.append(("v", pk)))
    monkeypatch.setattr(tasks.import_commit_task, "delay", lambda pk: queued.append(("c", pk)))

    page = admin_page
    page.goto(f"{live_server.url}/projects/{tenancy.project_a.pk}/participants/import/")
    page.set_input_files("input[type=file]", str(write_file(tmp_path)))
    page.get_by_role("button", name="Check the file").click()
    page.wait_for_selector("text=Checking the file")
    assert page.locator("progress").count() == 1
    job = ImportJob.objects.get()
    assert queued == [("v", job.pk)]

    assert tasks.import_validate_task(job.pk)["create"] == 2  # the worker runs the task
    page.wait_for_selector("#import-report")  # htmx swapped the report in
    page.get_by_role("button", name="Import 2 valid rows and skip 2 with errors").click()
    page.wait_for_selector("text=Waiting for a worker to start the import")
    assert queued[-1] == ("c", job.pk)

    assert tasks.import_commit_task(job.pk)["created"] == 2
    page.wait_for_selector("text=Imported")
    assert Person.objects.filter(brand=tenancy.brand_a, person_id__startswith="W-").count() == 2
    assert page.js_errors == []
