from decimal import Decimal

from django.db import migrations


def create_rate_card(apps, schema_editor):
    RateCard = apps.get_model("credits", "RateCard")
    RateCard.objects.get_or_create(pk=1, defaults={"default_rate": Decimal("0")})


def delete_rate_card(apps, schema_editor):
    apps.get_model("credits", "RateCard").objects.filter(pk=1).delete()


class Migration(migrations.Migration):
    dependencies = [("credits", "0001_ledger_rate_card_and_reservations")]

    operations = [migrations.RunPython(create_rate_card, delete_rate_card)]
