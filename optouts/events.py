"""The webhook event of opt-outs: ``participant.opted_out`` (built here, delivered by
``webhooks``; see docs/webhooks.md)."""

from __future__ import annotations

from optouts.models import OptOut
from webhooks.events import events_raise, iso
from webhooks.models import EventType


def opted_out_raised(*, optout: OptOut, reason: str = "") -> int:
    """An address was opted out of a channel (STOP reply, opt-out link, provider, admin)."""

    def build():
        person = optout.person
        yield (
            f"optout:{optout.channel}:{optout.address}",
            {
                "opt_out_id": optout.pk,
                "channel": optout.channel,
                "address": optout.address,
                "scope": optout.scope,
                "source": optout.source,
                "reason": reason,
                "person_id": person.person_id if person else None,
                "directory_person": person.pk if person else None,
                "opted_out_at": iso(optout.created_at),
            },
        )

    return events_raise(
        brand_id=optout.brand_id,
        event_type=EventType.PARTICIPANT_OPTED_OUT,
        build=build,
        at=optout.created_at,
    )
