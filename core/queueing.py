"""Queue a Celery task by its name once the current transaction commits.

Tasks are thin and sit above the services they call (``tasks.py`` imports ``services.py``),
so a service that must queue work names the task instead of importing its module: no cycle,
and no function-local import to hide one. The task's module is imported at start-up by its
app's ``AppConfig.ready()``, so the call goes through the registered task (eager in tests
that ask for it, routed to its queue) exactly like ``task.apply_async``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from celery import current_app


def task_queue(name: str, *args: Any, countdown: float | None = None, **kwargs: Any) -> None:
    """Queue task ``name`` with ``args`` and ``kwargs`` after commit (at once outside a
    transaction), ``countdown`` seconds later if given."""

    def queue() -> None:
        task = current_app.tasks[name]  # KeyError: its app's ready() did not import it
        if countdown is None:
            task.delay(*args, **kwargs)
        else:
            task.apply_async(args, kwargs, countdown=countdown)

    transaction.on_commit(queue)
