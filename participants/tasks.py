"""Thin tasks: load the import by id, call one service, return a small stats dict."""

from celery import shared_task

from participants.models import ImportJob
from participants.services import import_commit, import_validate


@shared_task(name="participants.tasks.import_validate_task")
def import_validate_task(job_id: int) -> dict:
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        return {"missing": job_id}
    return import_validate(job=job)


@shared_task(name="participants.tasks.import_commit_task")
def import_commit_task(job_id: int) -> dict:
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is None:
        return {"missing": job_id}
    return import_commit(job=job)
