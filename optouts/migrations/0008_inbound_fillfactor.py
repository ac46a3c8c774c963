"""Room on each page of the inbound replies for their claim (PostgreSQL).

The applier claims each stored reply (``conversations.replies``: its ``claim`` and
``claimed_until``, neither indexed) moments after the webhook inserted it. With pages filled
to the brim the new row version lands on another page and every index of the table is
written again; with room left on the page it is a HOT update, with no index write."""

from django.db import migrations

TABLE = "optouts_inboundmessage"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} SET (fillfactor = 80)")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("optouts", "0007_inbound_brand_index_dropped")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
