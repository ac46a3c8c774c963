from django.apps import AppConfig


class OptoutsConfig(AppConfig):
    name = "optouts"
    verbose_name = "Optouts"
