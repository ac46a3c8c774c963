"""Give every existing project its anonymous-link token (before the column becomes unique)."""

import secrets

from django.db import migrations

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def fill_tokens(apps, schema_editor):
    Project = apps.get_model("projects", "Project")
    used = set(Project.objects.exclude(public_token=None).values_list("public_token", flat=True))
    for project in Project.objects.filter(public_token=None).only("pk").iterator():
        token = "".join(secrets.choice(ALPHABET) for _ in range(10))
        while token in used:
            token = "".join(secrets.choice(ALPHABET) for _ in range(10))
        used.add(token)
        Project.objects.filter(pk=project.pk).update(public_token=token)


class Migration(migrations.Migration):
    dependencies = [("projects", "0003_survey_questions_responses_and_links")]

    operations = [migrations.RunPython(fill_tokens, migrations.RunPython.noop)]
