"""Data: point the consent events written before 0004 to their consent.

A grant and its consent share the inbound yes. A withdrawal was written with the consent's
``withdrawn_at`` (a moment before the event's ``created_at``) and the project's name at the end
of its reason: the nearest such consent of the number is the one. Events that match nothing
stay unlinked (still in the audit trail by number)."""

from datetime import timedelta

from django.db import migrations

BATCH = 500  # events read per round trip
WINDOW = timedelta(minutes=1)  # between a withdrawal's update and its event


def link(apps, schema_editor):
    Consent = apps.get_model("optouts", "Consent")
    OptOutEvent = apps.get_model("optouts", "OptOutEvent")
    events = OptOutEvent.objects.filter(
        action__in=["consent", "consent_withdrawn"], consent__isnull=True
    ).order_by("pk")
    for event in events.iterator(chunk_size=BATCH):
        candidates = Consent.objects.filter(brand_id=event.brand_id, address=event.address)
        if event.action == "consent":
            found = (
                candidates.filter(inbound_id=event.inbound_id).order_by("pk").first()
                if event.inbound_id
                else None
            )
        else:
            found = None
            nearby = candidates.filter(
                active=False,
                withdrawn_at__gte=event.created_at - WINDOW,
                withdrawn_at__lte=event.created_at,
            ).select_related("project")
            for consent in nearby.order_by("-withdrawn_at", "-pk"):
                if event.reason.endswith(f"project {consent.project.name}"[:500]):
                    found = consent
                    break
        if found is not None:
            OptOutEvent.objects.filter(pk=event.pk).update(consent=found)


class Migration(migrations.Migration):
    dependencies = [("optouts", "0004_optoutevent_consent")]

    operations = [migrations.RunPython(link, migrations.RunPython.noop)]
