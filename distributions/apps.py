from django.apps import AppConfig


class DistributionsConfig(AppConfig):
    name = "distributions"
    verbose_name = "Distributions"

    def ready(self) -> None:
        # The fair queue queues pumps through the task that runs them, which sits above it.
        # Lower apps trigger distributions through hooks, never an import (docs/architecture.md).
        from django.db.models.signals import post_delete, post_save

        from brands.models import Brand
        from distributions import fairqueue, hooks, tasks
        from distributions.models import ProviderAccount
        from distributions.selectors import inbound_accounts_forget
        from projects.hooks import project_resumed
        from surveys.hooks import link_opened, response_completed

        fairqueue.register_pump_task(tasks.send_pump_task)
        project_resumed.register(hooks.on_project_resumed)
        link_opened.register(hooks.on_link_opened)
        response_completed.register(hooks.on_response_completed)
        # The inbound webhook's kept accounts (``inbound_accounts``): a change saved in this
        # process is seen by its next request.
        for model in (ProviderAccount, Brand):
            for signal in (post_save, post_delete):
                signal.connect(inbound_accounts_forget, sender=model, weak=False)
