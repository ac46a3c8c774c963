from celery import shared_task

from core.locks import periodic_lock
from projects.services import projects_apply_availability


@shared_task(name="projects.tasks.projects_apply_availability_task")
def projects_apply_availability_task() -> dict:
    return {"closed": projects_apply_availability()}


@shared_task(name="projects.tasks.distribution_series_run_due_task")
def distribution_series_run_due_task() -> dict:
    """Make the due runs of recurring messages (Lifecycle projects). Each occurrence is claimed
    under a row lock, so the Redis lock only saves a second beat the duplicate work."""
    from distributions.series import series_run_due

    with periodic_lock("series-run-due", timeout=120) as acquired:
        if not acquired:
            return {"skipped": "another series run is in progress"}
        return series_run_due()
