"""A task goes through Redis to a real worker process and back (integration)."""

import time
from datetime import timedelta

from django.db import connection
from django.utils import timezone

import pytest

from config.celery import ping
from config.postgresql.base import HEALTH_CHECK_AFTER_IDLE
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


def _worker_sessions() -> set[int]:
    """The PostgreSQL sessions of the test database other than this process's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return {row[0] for row in cursor.fetchall()}


def test_a_worker_keeps_its_connection_across_tasks_and_replaces_a_dead_one(start_worker):
    """Each task had opened a new PostgreSQL session (Celery's fix-up closed it after the
    task); a worker now keeps it, as a web process does, and replaces it when it dies."""
    if connection.vendor != "postgresql":
        pytest.skip("pg_stat_activity: PostgreSQL")
    start_worker(concurrency=1)
    seen = []
    for _ in range(5):
        assert projects_apply_availability_task.delay().get(timeout=30) == {"closed": 0}
        seen.append(_worker_sessions())
    assert len(seen[0]) == 1 and all(sessions == seen[0] for sessions in seen), seen
    (dead,) = seen[0]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [dead])
    # Idle for longer than the health check's threshold: the next task checks it, finds it
    # gone and connects again (a busier connection fails one task, then is replaced).
    time.sleep(HEALTH_CHECK_AFTER_IDLE + 0.2)
    assert projects_apply_availability_task.delay().get(timeout=30) == {"closed": 0}
    assert len(_worker_sessions() - {dead}) == 1
