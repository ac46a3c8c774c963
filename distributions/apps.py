from django.apps import AppConfig


class DistributionsConfig(AppConfig):
    name = "distributions"
    verbose_name = "Distributions"

    def ready(self) -> None:
        # The fair queue queues pumps through the task that runs them, which sits above it.
        # Lower apps trigger distributions through hooks, never an import (docs/architecture.md).
        from distributions import fairqueue, hooks, tasks
        from projects.hooks import project_resumed
        from surveys.hooks import link_opened, response_completed

        fairqueue.register_pump_task(tasks.send_pump_task)
        project_resumed.register(hooks.on_project_resumed)
        link_opened.register(hooks.on_link_opened)
        response_completed.register(hooks.on_response_completed)
