"""The directory's ``Time zone`` column (docs/import.md, docs/policies.md): validated per row
with the field named, created and updated on both import paths (Python everywhere, set-based
SQL on PostgreSQL)."""

import pytest

from participants.models import ImportJob, Person
from participants.services import import_confirm, import_create
from tests.factories.participants import (
    celery_eager,  # noqa: F401
    csv_upload,
    import_media,  # noqa: F401
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("import_media")]


@pytest.fixture(autouse=True)
def inline_imports(settings):
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 10 * 1024 * 1024


def run(tenancy, rows) -> ImportJob:
    job = import_create(
        brand=tenancy.brand_a,
        project=tenancy.project_a,
        upload=csv_upload(rows),
        actor=tenancy.project_admin_a,
    )
    return import_confirm(job=job, actor=tenancy.project_admin_a)


def test_time_zone_column_creates_updates_and_refuses_unknown_zones(tenancy):
    job = run(
        tenancy,
        [
            ["PersonID", "Email", "Phone", "Time zone"],
            ["T-1", "t1@x.com", "+12125550100", "America/Chicago"],
            ["T-2", "t2@x.com", "+12125550101", ""],
            ["T-3", "t3@x.com", "+12125550102", "Mars/Olympus"],
        ],
    )
    assert job.status == ImportJob.Status.DONE
    zones = dict(
        Person.objects.filter(brand=tenancy.brand_a, person_id__startswith="T-").values_list(
            "person_id", "time_zone"
        )
    )
    assert zones == {"T-1": "America/Chicago", "T-2": ""}
    (error,) = job.report["errors"]
    assert (error["row"], error["column"]) == (4, "Time zone")
    assert "IANA" in error["message"]

    run(
        tenancy,
        [["PersonID", "timezone"], ["T-1", "Europe/Paris"], ["T-2", "Asia/Tokyo"]],
    )
    zones = dict(
        Person.objects.filter(brand=tenancy.brand_a, person_id__startswith="T-").values_list(
            "person_id", "time_zone"
        )
    )
    assert zones == {"T-1": "Europe/Paris", "T-2": "Asia/Tokyo"}
