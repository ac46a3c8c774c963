"""Writes for opt-outs. Every opt-out and opt-in is also an audit event."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from optouts.models import OptOut, OptOutEvent, Scope, Source

OPTED_OUT_FIELD = "Opted out"


def optout_record(
    *,
    brand_id: int,
    channel: str,
    address: str,
    source: str,
    scope: str = Scope.DIRECTORY,
    person=None,
    actor=None,
    message=None,
    reason: str = "",
    inbound_text: str = "",
) -> OptOut:
    """Opt ``address`` out of ``channel`` for the brand (idempotent: one active row)."""
    with transaction.atomic():
        optout = OptOut.objects.filter(
            brand_id=brand_id, channel=channel, address=address, active=True
        ).first()
        created = False
        if optout is None:
            try:
                with transaction.atomic():
                    optout = OptOut.objects.create(
                        brand_id=brand_id,
                        channel=channel,
                        address=address,
                        person=person,
                        source=source,
                        scope=scope,
                    )
                    created = True
            except IntegrityError:  # a concurrent opt-out of the same address won
                optout = OptOut.objects.get(
                    brand_id=brand_id, channel=channel, address=address, active=True
                )
        elif scope == Scope.DIRECTORY and optout.scope != Scope.DIRECTORY:
            optout.scope = Scope.DIRECTORY
            optout.save(update_fields=["scope"])
        OptOutEvent.objects.create(
            brand_id=brand_id,
            channel=channel,
            address=address,
            person=person,
            action=OptOutEvent.Action.OPT_OUT,
            source=source,
            scope=scope,
            actor=actor if getattr(actor, "pk", None) else None,
            message=message,
            reason=reason[:500] if created else (reason or "already opted out")[:500],
            inbound_text=inbound_text[:1600],
        )
        if scope == Scope.DIRECTORY:
            _flag_people(brand_id=brand_id, channel=channel, address=address, value="Yes")
    return optout


def optout_record_provider(*, message) -> OptOut:
    """The carrier says the recipient unsubscribed (Twilio 21610): never send again."""
    return optout_record(
        brand_id=message.distribution.project.brand_id,
        channel=message.distribution.channel,
        address=message.address,
        source=Source.PROVIDER,
        person=message.person,
        message=message,
        reason="Provider refused: recipient unsubscribed (21610)",
    )


def _flag_people(*, brand_id: int, channel: str, address: str, value: str) -> None:
    """Set ``Opted out: Yes/No`` in the directory and project metadata of people at ``address``."""
    from participants.models import Participant, Person

    field = "phone" if channel == "sms" else "email"
    people = list(Person.objects.filter(brand_id=brand_id, **{field: address}))
    now = timezone.now()
    for person in people:
        person.metadata = {**(person.metadata or {}), OPTED_OUT_FIELD: value}
        person.updated_at = now
    Person.objects.bulk_update(people, ["metadata", "updated_at"])
    participants = list(Participant.objects.filter(person__in=people))
    for participant in participants:
        participant.metadata = {**(participant.metadata or {}), OPTED_OUT_FIELD: value}
    Participant.objects.bulk_update(participants, ["metadata"])
