from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "conversations"
    verbose_name = "Two-way SMS conversations"

    def ready(self) -> None:
        # distributions (below) fires the inbound hook; the receiver lives here.
        from conversations import receivers, tasks  # noqa: F401 - registers the task names
        from distributions.inbound import inbound_received

        inbound_received.register(receivers.on_inbound_received)
