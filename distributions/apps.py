from django.apps import AppConfig


class DistributionsConfig(AppConfig):
    name = "distributions"
    verbose_name = "Distributions"

    def ready(self) -> None:
        # The fair queue queues pumps through the task that runs them, which sits above it.
        from distributions import fairqueue, tasks

        fairqueue.register_pump_task(tasks.send_pump_task)
