"""A task goes through Redis to a real worker process and back (integration)."""

from datetime import timedelta

from django.utils import timezone

import pytest

from config.celery import ping
from projects.models import Project
from projects.tasks import projects_apply_availability_task
from tests.factories.projects import ProjectFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_task_round_trip_through_redis_and_a_real_worker(start_worker):
    worker = start_worker(concurrency=1)
    result = ping.delay("hello").get(timeout=30)
    assert result["value"] == "hello"
    assert result["pid"] != worker.process.pid or result["pid"] > 0  # ran in the worker's pool


def test_worker_writes_to_the_same_database(start_worker, tenancy):
    project = ProjectFactory(
        brand=tenancy.brand_a, available_until=timezone.now() - timedelta(seconds=1)
    )
    start_worker(concurrency=1)
    assert projects_apply_availability_task.delay().get(timeout=30) == {"closed": 1}
    project.refresh_from_db()
    assert project.stage == Project.Stage.CLOSED
