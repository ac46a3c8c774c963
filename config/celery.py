"""The Celery app: configured from Django settings (``CELERY_*``), tasks autodiscovered."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("relay")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="relay.ping")
def ping(value: str = "pong") -> dict:
    """Round-trip probe used by health checks and the integration tests."""
    return {"value": value, "pid": os.getpid()}
