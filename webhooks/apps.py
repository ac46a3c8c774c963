from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Outbound webhooks"

    def ready(self) -> None:
        # Services queue these tasks by name (core.queueing): register them in every process.
        from webhooks import tasks  # noqa: F401
