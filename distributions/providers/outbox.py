"""The outbox: stores each message instead of sending it and simulates delivery receipts.

Receipts go through ``distributions.services.message_status_ingest``, the same path as real
provider callbacks, from a Celery task a moment after the send.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from core.queueing import task_queue
from distributions.models import OutboxMessage
from distributions.providers.base import (
    Outcome,
    OutgoingSms,
    SendResult,
    SentQuery,
    SmsProvider,
)

DELIVERY_DELAY_SECONDS = 1.0


class OutboxProvider(SmsProvider):
    code = "outbox"
    label = "Outbox (stores messages, simulates delivery)"

    def send_window(self, messages: list[OutgoingSms]) -> list[SendResult]:
        rows = [
            OutboxMessage(
                brand_id=self.account.brand_id,
                sid="OB" + secrets.token_hex(16),
                to=message.to,
                sender=message.sender,
                body=message.body,
            )
            for message in messages
        ]
        OutboxMessage.objects.bulk_create(rows)
        receipts = [[m.message_id, row.sid] for m, row in zip(messages, rows, strict=True)]
        task_queue(
            "distributions.tasks.outbox_deliver_task", receipts, countdown=DELIVERY_DELAY_SECONDS
        )
        return [
            SendResult(message_id=message.message_id, outcome=Outcome.ACCEPTED, provider_id=row.sid)
            for message, row in zip(messages, rows, strict=True)
        ]

    def find_sent(
        self,
        *,
        to: str,
        sender: str,
        since: datetime,
        body: str,
        message_id: int | None = None,
        lease: str = "",
    ) -> str | None:

        row = (
            OutboxMessage.objects.filter(
                brand_id=self.account.brand_id, to=to, body=body, created_at__gte=since
            )
            .order_by("created_at")
            .first()
        )
        return row.sid if row else None

    def find_sent_many(self, *, queries: list[SentQuery], sender: str) -> dict[int, str]:
        """One query for all: the outbox's rows to these numbers since the earliest lease."""

        if not queries:
            return {}
        since = min(query.since for query in queries)
        wanted = {(query.to, query.body): query for query in queries}
        found: dict[int, str] = {}
        rows = (
            OutboxMessage.objects.filter(
                brand_id=self.account.brand_id,
                to__in={query.to for query in queries},
                created_at__gte=since,
            )
            .order_by("created_at")
            .values_list("to", "body", "sid", "created_at")
        )
        for to, body, sid, created_at in rows.iterator(chunk_size=2000):
            query = wanted.get((to, body))
            if query is not None and query.message_id not in found and created_at >= query.since:
                found[query.message_id] = sid
        return found

    def check_credentials(self) -> None:
        return None
