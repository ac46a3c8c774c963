from celery import shared_task

from projects.services import projects_apply_availability


@shared_task(name="projects.tasks.projects_apply_availability_task")
def projects_apply_availability_task() -> dict:
    return {"closed": projects_apply_availability()}
