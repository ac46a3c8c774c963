"""The Celery app: configured from Django settings (``CELERY_*``), tasks autodiscovered."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("relay")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def connections_kept_fresh(sender=None, **kwargs) -> None:
    """Before and after each task, what Django does around each request: close a database
    connection that errored or outlived ``CONN_MAX_AGE`` and health-check an idle one on
    its next use, keeping the others (``CELERY_DB_REUSE_MAX`` stops Celery's fix-up from
    closing them all). Not for a task run eagerly, inside its caller's transaction."""
    if sender is None or getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@app.task(name="relay.ping")
def ping(value: str = "pong") -> dict:
    """Round-trip probe used by health checks and the integration tests."""
    return {"value": value, "pid": os.getpid()}
