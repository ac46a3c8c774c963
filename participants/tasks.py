"""Thin tasks: load the import by id, call one service, return a small stats dict."""

from celery import shared_task

from participants.models import ImportJob
from participants.services import IMPORT_STALE_AFTER, import_commit, import_validate


@shared_task(name="participants.tasks.import_validate_task")
def import_validate_task(job_id: int) -> dict:
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        return {"missing": job_id}
    return import_validate(job=job)


@shared_task(name="participants.tasks.import_commit_task", bind=True, max_retries=2)
def import_commit_task(self, job_id: int) -> dict:
    """Write a confirmed import. If another worker holds it (or held it and died), look again
    once its claim has gone stale: a dead worker's import then resumes, a live one's is left
    alone (``import_commit`` re-checks under the directory lock)."""
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        return {"missing": job_id}
    result = import_commit(job=job)
    if result.get("skipped") == ImportJob.Status.IMPORTING:
        raise self.retry(countdown=IMPORT_STALE_AFTER.total_seconds() + 60)
    return result
