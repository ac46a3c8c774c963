"""Two indexes every new link paid for and no query uses.

- ``SurveyLink.token``: unique by a constraint instead of ``unique=True``. The constraint is
  the one ``unique=True`` made (same name, kept, never without it); only PostgreSQL's second
  index on the column, ``varchar_pattern_ops`` for ``LIKE``, is dropped: tokens are only
  ever looked up whole.
- ``Transaction.project``: no index of its own; both unique constraints start with it.
"""

import django.db.models.deletion
from django.db import migrations, models


def drop_like_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = apps.get_model("projects", "SurveyLink")._meta.db_table
    name = schema_editor._create_index_name(table, ["token"], suffix="_like")
    schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def create_like_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("projects", "SurveyLink")
    schema_editor.execute(
        schema_editor._create_like_index_sql(model, model._meta.get_field("token"))
    )


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0009_transactional_link_function"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="surveylink",
                    name="token",
                    field=models.CharField(max_length=16),
                ),
                migrations.AddConstraint(
                    model_name="surveylink",
                    constraint=models.UniqueConstraint(
                        fields=("token",), name="projects_surveylink_token_key"
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_like_index, create_like_index)],
        ),
        migrations.AlterField(
            model_name="transaction",
            name="project",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="transactions",
                to="projects.project",
            ),
        ),
    ]
