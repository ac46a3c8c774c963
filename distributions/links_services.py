"""Writes on recipient rows caused by survey links (the respondent pages call these).

Same rules as ``services.message_status_ingest``: a status only moves forward
(``Message.STATUS_RANK``) and each change is one ``MessageEvent``, here with source ``link``.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from distributions.events import recipient_statuses_raised
from distributions.models import Message, MessageEvent

MStatus = Message.Status
# Rows that may become Opened: handed to the provider (or reported failed: the recipient
# opening the link proves otherwise) and ranked below Opened. Pending and Sending rows are left
# alone: the worker is still recording their send and must find them as it left them.
OPENABLE = tuple(
    status
    for status, rank in Message.STATUS_RANK.items()
    if rank < Message.STATUS_RANK[MStatus.OPENED] and status not in Message.OPEN_STATUSES
)


def message_mark_opened(*, message_id: int, at: datetime | None = None) -> bool:
    """The recipient opened the personal link this message carried: Opened, with its time.

    One conditional UPDATE: repeated or late calls change nothing. True if it changed.
    """
    at = at or timezone.now()
    changed = Message.objects.filter(pk=message_id, status__in=OPENABLE).update(
        status=MStatus.OPENED, status_changed_at=at
    )
    if changed:
        MessageEvent.objects.create(
            message_id=message_id,
            status=MStatus.OPENED,
            at=at,
            source=MessageEvent.Source.LINK,
            detail="Personal link opened",
        )
        distribution_id = Message.objects.values_list("distribution_id", flat=True).get(
            pk=message_id
        )
        recipient_statuses_raised(
            distribution_id=distribution_id, changes=[(message_id, MStatus.OPENED)], at=at
        )
    return bool(changed)
