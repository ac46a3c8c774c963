"""A large import goes through Redis to a real worker process, validated then written."""

import time

import pytest

from participants.models import ImportJob, Participant
from participants.services import import_confirm, import_create
from tests.factories.participants import csv_upload

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def wait_for(job: ImportJob, statuses: set[str], timeout: float = 90) -> list[float]:
    """Poll like the page does; return the progress values seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        seen.append(job.progress)
        if job.status in statuses:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"import {job.pk} still {job.status} after {timeout}s")


def test_a_large_file_is_validated_and_written_by_a_worker(
    start_worker, tenancy, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"  # the worker gets the same through RELAY_VAR_DIR
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 0
    start_worker(concurrency=1, extra_env={"RELAY_VAR_DIR": str(tmp_path)})
    rows = [["PersonID", "Email", "Phone", "Team"]]
    rows += [[f"R-{i}", f"r{i}@x.com", f"+44 7911 {i:06d}", "Ops"] for i in range(8000)]
    rows.append(["R-1", "dup@x.com", "", ""])

    job = import_create(brand=tenancy.brand_a, project=tenancy.project_a, upload=csv_upload(rows))
    assert job.status == ImportJob.Status.VALIDATING  # queued, not run in this process
    wait_for(job, {"validated", "failed"})
    assert job.status == "validated", job.failure
    assert (job.to_create, job.error_rows) == (7999, 2)
    assert not Participant.objects.filter(person__person_id="R-5").exists()

    job = import_confirm(job=job)
    seen = wait_for(job, {"done", "failed"})
    assert job.status == "done", job.failure
    assert job.created_count == 7999 and job.progress == 1.0
    assert any(0 < value < 1 for value in seen), seen  # progress was visible while writing
    assert Participant.objects.filter(project=tenancy.project_a).count() == 8000
