"""Sending a conversation's texts (the questions after the invite, corrections, thank-you and
closed notices) through the same parts as every send: the brand's provider from the
registry, the rate card and the ledger, the opt-out check under the hand-over guard.

What callers can rely on:
- a turn is handed to the provider at most once: a send claims its Pending turns with one
  conditional UPDATE under a lease, and only claimed turns go;
- nothing goes to a number opted out before its window was checked (``optouts.guard``);
- a turn the brand's credits do not cover is not sent (Failed); an accepted turn is debited
  once (``credits_debit_once``, keyed by the turn), at the rate of the recipient's country;
- a turn the provider refuses for now is Pending again and retried after a delay, without a
  worker waiting for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from brands.models import Brand
from conversations.models import Session, Turn
from core.bulk import insert_objects
from core.queueing import task_queue
from core.tokens import new_token
from credits.rates import disabled_reason, phone_country, rate_table
from credits.segments import count_segments
from credits.selectors import credits_balance
from credits.services import credits_debit_once
from distributions.providers.base import Outcome, OutgoingSms
from distributions.providers.registry import channel_provider_for
from distributions.sending import provider_account_for, retry_delay
from optouts.guard import handover_guard_many
from optouts.selectors import opted_out_many

logger = logging.getLogger(__name__)

SEND_TASK = "conversations.tasks.turns_send_task"
MAX_TURN_ATTEMPTS = 6
SMS = "sms"
TStatus = Turn.Status


_batch: ContextVar[list[int] | None] = ContextVar("conversation_turns", default=None)


@contextlib.contextmanager
def turns_batch() -> Iterator[None]:
    """Within it, the turns recorded (texts to send, replies to debit) are queued as one
    task after commit, when it ends: a reply costs one publish to the broker, and a batch of
    replies (``conversations.replies``) one for the batch. Nested, the outermost one queues."""
    if _batch.get() is not None:
        yield
        return
    ids: list[int] = []
    token = _batch.set(ids)
    try:
        yield
    finally:
        _batch.reset(token)
    if ids:
        task_queue(SEND_TASK, ids)


def turn_enqueue(turn_id: int) -> None:
    """Hand a recorded turn to the send task (after commit): sent if it is an outbound
    Pending text, debited at the inbound rate if it is a reply."""
    batch = _batch.get()
    if batch is None:
        task_queue(SEND_TASK, [turn_id])
    else:
        batch.append(turn_id)


def _turn_record(turn: Turn) -> Turn:
    turn.save(force_insert=True)
    turn_enqueue(turn.pk)
    return turn


def turns_record_many(turns: list[Turn]) -> None:
    """Record turns built by ``text_turn``/``reply_turn`` in one INSERT and hand them to the
    send task like ``turn_queue``/``reply_record`` do one by one."""
    insert_objects(turns)
    for turn in turns:
        turn_enqueue(turn.pk)


def text_turn(*, session: Session, kind: str, body: str, question=None, now=None) -> Turn:
    """An outbound text of ``session``, Pending (not saved)."""
    return Turn(
        brand_id=session.brand_id,
        session=session,
        direction=Turn.Direction.OUT,
        kind=kind,
        question=question,
        address=session.address,
        sender=session.sender,
        body=body,
        segments=count_segments(body),
        status=TStatus.PENDING,
        created_at=now or timezone.now(),
    )


def reply_turn(*, session: Session | None, inbound, kind: str, question=None) -> Turn:
    """A reply in the session's history (not saved)."""
    return Turn(
        brand_id=inbound.brand_id,
        session=session,
        direction=Turn.Direction.IN,
        kind=kind,
        question=question,
        address=inbound.from_number,
        sender=inbound.to_number,
        body=inbound.body,
        segments=1,
        status=TStatus.RECEIVED,
        inbound=inbound,
        created_at=inbound.received_at,
    )


def turn_queue(*, session: Session, kind: str, body: str, question=None, now=None) -> Turn:
    """Record an outbound text of ``session`` (Pending) and queue its send after commit."""
    return _turn_record(
        text_turn(session=session, kind=kind, body=body, question=question, now=now)
    )


def reply_record(*, session: Session | None, inbound, kind: str, question=None) -> Turn:
    """Record a reply in the session's history; the send task debits it (every reply that
    reaches a conversation costs the inbound rate of its country, once)."""
    return _turn_record(reply_turn(session=session, inbound=inbound, kind=kind, question=question))


def turn_debit_key(turn_id: int) -> str:
    return f"sms-turn:{turn_id}"


def _claim(turn_ids: list[int]) -> tuple[str, list[Turn]]:
    lease = new_token()[:16]
    Turn.objects.filter(pk__in=turn_ids, status=TStatus.PENDING).update(
        status=TStatus.SENDING, status_reason=f"lease:{lease}", attempts=F("attempts") + 1
    )
    turns = list(
        Turn.objects.filter(
            pk__in=turn_ids, status=TStatus.SENDING, status_reason=f"lease:{lease}"
        ).select_related("brand", "session")
    )
    return lease, turns


def _close(turns: list[Turn], status: str, reason: str) -> None:
    if turns:
        Turn.objects.filter(pk__in=[t.pk for t in turns]).update(
            status=status, status_reason=reason[:300]
        )


def turns_send(*, turn_ids: list[int]) -> dict:
    """Send the Pending turns among ``turn_ids`` (grouped by brand) and debit the replies
    among them. Returns counts."""
    stats = {"sent": 0, "failed": 0, "skipped_optout": 0, "retry": 0}
    stats["debited"] = replies_debit(turn_ids=turn_ids)
    _lease, turns = _claim(turn_ids)
    by_brand: dict[int, list[Turn]] = defaultdict(list)
    for turn in turns:
        by_brand[turn.brand_id].append(turn)
    for brand_turns in by_brand.values():
        _send_brand(brand_turns[0].brand, brand_turns, stats)
    return stats


def _covered(brand: Brand, turns: list[Turn], table) -> list[Turn]:
    """The turns the brand's available credits cover, in order; the others fail, and so do
    turns to a country the rate card does not send to."""
    covered = []
    available = None if brand.is_self_service else credits_balance(brand=brand).available
    for turn in turns:
        country = phone_country(turn.address)
        if not table.enabled(country):
            _close([turn], TStatus.FAILED, disabled_reason(country))
            continue
        cost = table.rate(country) * turn.segments
        if available is not None:
            if cost > available:
                _close([turn], TStatus.FAILED, "Not sent: not enough credits.")
                continue
            available -= cost
        covered.append(turn)
    return covered


def _send_brand(brand: Brand, turns: list[Turn], stats: dict) -> None:
    table = rate_table()
    turns = _covered(brand, turns, table)
    if not turns:
        return
    account = provider_account_for(brand)
    provider = channel_provider_for(account, SMS)
    try:
        keys = [(brand.pk, SMS, turn.address) for turn in turns]
        with handover_guard_many(keys=keys):
            opted = opted_out_many(keys=keys)
            dropped = [t for t in turns if (brand.pk, SMS, t.address) in opted]
            _close(dropped, TStatus.SKIPPED_OPTOUT, "Opted out")
            stats["skipped_optout"] += len(dropped)
            turns = [t for t in turns if (brand.pk, SMS, t.address) not in opted]
            # A turn is no recipient row: its id goes negative so that nothing that reads
            # message ids (delivery receipts of the outbox) can take it for one.
            results = (
                provider.send_window(
                    [
                        OutgoingSms(message_id=-t.pk, to=t.address, sender=t.sender, body=t.body)
                        for t in turns
                    ]
                )
                if turns
                else []
            )
    finally:
        provider.close()
    _record(brand, turns, results, table, stats)


def _record(brand: Brand, turns: list[Turn], results, table, stats: dict) -> None:
    by_id = {-t.pk: t for t in turns}
    now = timezone.now()
    retry: list[tuple[Turn, float]] = []
    with transaction.atomic():
        for result in results:
            turn = by_id[result.message_id]
            if result.outcome in (Outcome.ACCEPTED, Outcome.UNKNOWN):
                # UNKNOWN may have gone: recorded as sent, never handed over again.
                Turn.objects.filter(pk=turn.pk).update(
                    status=TStatus.SENT,
                    status_reason="" if result.outcome == Outcome.ACCEPTED else "Unconfirmed",
                    provider_id=result.provider_id[:64],
                    sent_at=now,
                )
                country = phone_country(turn.address)
                credits_debit_once(
                    brand=brand,
                    key=turn_debit_key(turn.pk),
                    country=country,
                    segments=turn.segments,
                    rate=table.rate(country),
                    project_id=turn.session.project_id if turn.session_id else None,
                    note=f"Two-way SMS: {turn.get_kind_display().lower()} to {turn.address}",
                )
                stats["sent"] += 1
            elif result.outcome == Outcome.RETRY and turn.attempts < MAX_TURN_ATTEMPTS:
                retry.append((turn, retry_delay(turn.attempts, result.retry_after)))
            else:
                _close(
                    [turn],
                    TStatus.FAILED,
                    f"{result.error_code} {result.error_message}".strip() or result.outcome,
                )
                stats["failed"] += 1
        for turn, delay in retry:
            Turn.objects.filter(pk=turn.pk).update(status=TStatus.PENDING, status_reason="")
            task_queue(SEND_TASK, [turn.pk], countdown=delay)
            stats["retry"] += 1


def inbound_debit_key(inbound_id: int) -> str:
    return f"sms-inbound:{inbound_id}"


def replies_debit(*, turn_ids: list[int]) -> int:
    """Debit the replies among ``turn_ids`` at the inbound rate of their country, once each
    (keyed by the stored inbound message). In the worker, not the webhook: the ledger's
    brand lock is not held by requests."""
    replies = list(
        Turn.objects.filter(
            pk__in=turn_ids, direction=Turn.Direction.IN, inbound__isnull=False
        ).select_related("brand", "session", "inbound__message__distribution")
    )
    if not replies:
        return 0
    table = rate_table()
    for turn in replies:
        country = phone_country(turn.address)
        credits_debit_once(
            brand=turn.brand,
            key=inbound_debit_key(turn.inbound_id),
            country=country,
            segments=1,
            rate=table.inbound_rate(country),
            project_id=_reply_project_id(turn),
            note=f"Two-way SMS: reply from {turn.address}",
        )
    return len(replies)


def _reply_project_id(turn: Turn) -> int | None:
    """The project a reply is charged to: its session's, else (a reply to a consent request)
    that of the message it answered."""
    if turn.session_id:
        return turn.session.project_id
    message = turn.inbound.message if turn.inbound_id else None
    return message.distribution.project_id if message is not None else None


def turns_send_stale(*, older_than: timedelta = timedelta(minutes=5)) -> int:
    """Queue again the Pending turns whose task was lost (a broker outage): periodic."""
    stale = list(
        Turn.objects.filter(
            status=TStatus.PENDING, created_at__lt=timezone.now() - older_than
        ).values_list("pk", flat=True)[:1000]
    )
    if stale:
        task_queue(SEND_TASK, stale)
    return len(stale)
