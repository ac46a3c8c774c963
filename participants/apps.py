from django.apps import AppConfig


class ParticipantsConfig(AppConfig):
    name = "participants"
    verbose_name = "Participants"

    def ready(self) -> None:
        # Services queue these tasks by name (core.queueing): register them in every process.
        from participants import tasks  # noqa: F401
