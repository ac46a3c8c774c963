"""The fan-out: send chunks of recipient rows through the brand's provider.

A chunk is a range of message ids. Sending one:
1. reconciles rows of the range left in Sending by a dead worker (asks the provider, never
   resends blindly);
2. leases the range's Pending rows (one conditional UPDATE: a row is leased by one task only);
3. drops rows whose address opted out meanwhile (Skipped (opt-out));
4. renders each body (links, piped fields), counts segments;
5. per window of ``SEND_WINDOW`` rows: waits for the sender's token bucket, checks opt-outs
   again and hands the window to the provider under the window's opt-out guard (an opt-out
   recorded meanwhile is never overtaken), records every result at once.
A row handed to the provider is never handed over again: Sent rows are never leased, and an
unknown outcome stays Sending until reconciliation decides.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from itertools import islice

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from credits.segments import count_segments
from distributions import throttle
from distributions.bulk import update_rows, update_rows_returning
from distributions.email_content import html_to_text, render_email
from distributions.models import Distribution, Message, MessageEvent, ProviderAccount
from distributions.providers.base import (
    Outcome,
    OutgoingEmail,
    OutgoingSms,
    SendResult,
    SmsProvider,
)
from distributions.providers.registry import channel_provider_for
from distributions.rendering import new_token, piped_fields, recipient_values, render
from distributions.services import distribution_finish_if_done
from distributions.verp import verp_address
from optouts.guard import handover_guard
from optouts.links import opt_out_url
from optouts.selectors import opted_out_addresses
from projects.models import SurveyLink
from webhooks.events import recipient_statuses_raised

logger = logging.getLogger(__name__)


def batched(iterable, size: int):
    """itertools.batched (Python 3.12) for 3.11."""
    iterator = iter(iterable)
    while batch := tuple(islice(iterator, size)):
        yield batch


MStatus = Message.Status
# Rows per send task: ~0.3 s of provider calls at 3,000 messages/s, so a task that is redone
# after a worker dies redoes little; 1,000 rows with bodies are about 1 MB of memory. Fewer,
# larger tasks and windows: 2,772 -> 3,091-3,143 messages/s in bench/sms_bench.py (500/250).
SEND_CHUNK_SIZE = 1000
# Rows handed to the provider concurrently (at most one second of the sender's rate: see
# ``window_size``); also the granularity of the opt-out re-check.
SEND_WINDOW = 500
# Retries of throttled (429) or failed-before-acceptance (5xx) rows inside one task.
IN_TASK_RETRIES = 4
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0
# Further attempts of a chunk through the queue before its remaining rows are Failed.
MAX_CHUNK_ATTEMPTS = 6


def lease_seconds() -> int:
    return settings.RELAY_SEND_LEASE_SECONDS


def window_size(account) -> int:
    """Rows per window for this sender: ``SEND_WINDOW``, or one second of its rate when that
    is less. A window takes its tokens at once, so a larger one would burst past the rate (the
    bucket holds one second of it) and wait longer than the throttle allows."""
    rate = int(getattr(account, "messages_per_second", 0) or 0)
    return max(1, min(SEND_WINDOW, rate)) if rate > 0 else SEND_WINDOW


def provider_account_for(brand) -> ProviderAccount:
    account = ProviderAccount.objects.filter(brand=brand).first()
    return account or ProviderAccount(
        brand=brand, provider=settings.RELAY_DEFAULT_SMS_PROVIDER, messages_per_second=100
    )


def channel_account_for(distribution: Distribution):
    """The brand's settings for the distribution's channel: SMS provider or email account."""
    if distribution.channel == Distribution.Channel.EMAIL:
        from distributions.email_services import email_account_for

        return email_account_for(distribution.project.brand)
    return provider_account_for(distribution.project.brand)


def channel_provider(distribution: Distribution) -> tuple[object, SmsProvider]:
    account = channel_account_for(distribution)
    return account, channel_provider_for(account, distribution.channel)


def status_callback_url(message_id: int) -> str:
    return settings.PUBLIC_BASE_URL + reverse("webhooks:twilio-status", args=[message_id])


def status_callback_template() -> str:
    """``status_callback_url`` as a format string: reversing a URL per message costs more
    than the rest of its bookkeeping."""
    marker = 987654321
    return status_callback_url(marker).replace(str(marker), "{}")


# --- credits: reserved at start, debited per accepted message, released at the end ---------
def reserve_credits(*, distribution: Distribution) -> None:
    from credits.hooks import credits_reserve_for_distribution

    credits_reserve_for_distribution(distribution=distribution)


def release_credits(*, distribution: Distribution) -> None:
    from credits.hooks import credits_release_for_distribution

    credits_release_for_distribution(distribution=distribution)


def _allowance(distribution: Distribution, rows: list[LeasedRow]) -> set[int]:
    """Message ids the brand's credits cover (all, for self-service brands)."""
    from credits.hooks import credits_covering

    return credits_covering(distribution=distribution, messages=rows)


def _debit(distribution: Distribution, message_ids: list[int]) -> None:
    from credits.hooks import credits_debit_messages

    credits_debit_messages(distribution=distribution, message_ids=message_ids)


# --- chunks -------------------------------------------------------------------------------
def distribution_enqueue_chunks(*, distribution: Distribution, countdown: float = 0) -> int:
    """Queue one send task per ``SEND_CHUNK_SIZE`` Pending rows (after commit)."""
    from distributions.tasks import send_chunk_task

    ids = Message.objects.filter(distribution=distribution, status=MStatus.PENDING).order_by("pk")
    ranges = []
    for batch in batched(
        ids.values_list("pk", flat=True).iterator(chunk_size=10_000), SEND_CHUNK_SIZE
    ):
        ranges.append((batch[0], batch[-1]))
    distribution_id = distribution.pk

    def queue():
        for first, last in ranges:
            send_chunk_task.apply_async(args=[distribution_id, first, last], countdown=countdown)

    transaction.on_commit(queue)
    return len(ranges)


def send_chunk(*, distribution_id: int, first_id: int, last_id: int, attempt: int = 0) -> dict:
    distribution = Distribution.objects.select_related("project__brand").get(pk=distribution_id)
    if distribution.status != Distribution.Status.IN_PROGRESS:
        return {"skipped": distribution.status}
    account, provider = channel_provider(distribution)
    try:
        stats = {
            "reconciled": reconcile_range(
                distribution=distribution, provider=provider, first_id=first_id, last_id=last_id
            )
        }
        lease = uuid.uuid4().hex
        now = timezone.now()
        leased = Message.objects.filter(
            distribution=distribution, pk__gte=first_id, pk__lte=last_id, status=MStatus.PENDING
        ).update(status=MStatus.SENDING, lease=lease, leased_at=now, attempts=F("attempts") + 1)
        if leased:
            stats.update(_send_leased(distribution, account, provider, lease, attempt))
    finally:
        provider.close()
    distribution_finish_if_done(distribution_id=distribution_id)
    return stats


class Recipient:
    """A person's or participant's fields that a message's text may pipe in."""

    __slots__ = ("first_name", "last_name", "email", "person_id", "username", "role", "metadata")

    def __init__(self, **values):
        for name in self.__slots__:
            setattr(self, name, values.get(name, ""))


class LeasedRow:
    """A leased message as the send needs it, with its person and participant.

    Read in one query into plain objects: Django model instances of a message, its person
    and its participant (their ``__init__``, signals and related-object caches) were a tenth
    of a sending worker's time. Consumers read the attributes a ``Message`` has (``pk``,
    ``address``, ``person``, ``participant``...) and set ``body``, ``segments``, ``email``.
    """

    __slots__ = (
        "pk",
        "distribution_id",
        "participant_id",
        "person_id",
        "address",
        "person",
        "participant",
        "body",
        "segments",
        "email",
    )

    PERSON = ("first_name", "last_name", "email", "person_id", "username", "metadata")
    PARTICIPANT = ("role", "metadata")
    COLUMNS = (
        "pk",
        "distribution_id",
        "participant_id",
        "person_id",
        "address",
        *(f"person__{name}" for name in PERSON),
        *(f"participant__{name}" for name in PARTICIPANT),
    )

    def __init__(self, values: tuple):
        self.pk, self.distribution_id, self.participant_id, self.person_id, self.address = values[
            :5
        ]
        person = values[5 : 5 + len(self.PERSON)]
        participant = values[5 + len(self.PERSON) :]
        self.person = (
            Recipient(**dict(zip(self.PERSON, person, strict=True)))
            if self.person_id is not None
            else None
        )
        self.participant = (
            Recipient(**dict(zip(self.PARTICIPANT, participant, strict=True)))
            if self.participant_id is not None
            else None
        )
        self.body, self.segments, self.email = "", 0, None


def leased_rows(lease: str) -> list[LeasedRow]:
    """The rows Sending under ``lease``, in id order."""
    query = (
        Message.objects.filter(lease=lease, status=MStatus.SENDING)
        .order_by("pk")
        .values_list(*LeasedRow.COLUMNS)
    )
    return [LeasedRow(values) for values in query]


def _send_leased(distribution, account, provider: SmsProvider, lease: str, attempt: int) -> dict:
    rows = leased_rows(lease)
    stats = {"leased": len(rows), "sent": 0, "failed": 0, "skipped_optout": 0, "retry": 0}
    rows = _drop_opted_out(distribution, rows, lease, stats)
    if not rows:
        return stats

    covered = _allowance(distribution, rows)
    # Rows the rate card does not send to (a disabled country) are Skipped with its reason.
    skipped = getattr(covered, "skipped", {})
    for reason in set(skipped.values()):
        dropped = [row for row in rows if skipped.get(row.pk) == reason]
        _close_rows(dropped, lease, MStatus.SKIPPED, reason)
        stats["skipped"] = stats.get("skipped", 0) + len(dropped)
    rows = [row for row in rows if row.pk not in skipped]
    if len(covered) < len(rows):
        uncovered = [row for row in rows if row.pk not in covered]
        _close_rows(uncovered, lease, MStatus.FAILED, "Not sent: not enough credits.")
        rows = [row for row in rows if row.pk in covered]
        stats["failed"] += len(uncovered)

    _render(distribution, rows)
    if distribution.channel == Distribution.Channel.EMAIL:
        sender = distribution.from_address
    else:
        sender = distribution.sender or account.default_sender or account.messaging_service_sid
    bucket_key = f"{account.provider}:{account.brand_id}:{sender or 'default'}"
    callback = (
        status_callback_template() if getattr(provider, "wants_status_callback", False) else ""
    )
    by_id = {row.pk: row for row in rows}
    pending = rows
    last_error = ""
    for retry in range(IN_TASK_RETRIES + 1):
        retry_rows: list[LeasedRow] = []
        retry_after = 0.0
        for window in batched(pending, window_size(account)):
            throttle.acquire(bucket_key, rate=account.messages_per_second, tokens=len(window))
            window = _reclaim(list(window), lease)
            if not window:
                continue
            # The opt-out check and the hand-over hold the window's opt-out guard: an opt-out
            # of one of its numbers waits for this window, or this window sees it
            # (optouts.guard).
            with handover_guard(
                brand_id=distribution.project.brand_id,
                channel=distribution.channel,
                addresses=[row.address for row in window],
            ):
                window = _drop_opted_out(distribution, list(window), lease, stats)
                if not window:
                    continue
                outgoing = (
                    [_outgoing_email(distribution, row, lease) for row in window]
                    if distribution.channel == Distribution.Channel.EMAIL
                    else [
                        OutgoingSms(
                            message_id=row.pk,
                            to=row.address,
                            sender=sender,
                            body=row.body,
                            status_callback=callback.format(row.pk) if callback else "",
                        )
                        for row in window
                    ]
                )
                results = provider.send_window(outgoing)
            fatal = _apply_results(distribution, results, lease, stats)
            if fatal:
                _stop_distribution(distribution, fatal)
                return stats
            for result in results:
                if result.outcome == Outcome.RETRY:
                    retry_rows.append(by_id[result.message_id])
                    retry_after = max(retry_after, result.retry_after or 0.0)
                    last_error = result.error_message or last_error
        if not retry_rows:
            return stats
        pending = retry_rows
        if retry < IN_TASK_RETRIES:
            delay = min(RETRY_MAX_SECONDS, max(retry_after, RETRY_BASE_SECONDS * 2**retry))
            time.sleep(delay)
    # Still throttled: give the rows back and try this range again later through the queue.
    stats["retry"] = len(pending)
    ids = [row.pk for row in pending]
    if attempt + 1 >= MAX_CHUNK_ATTEMPTS:
        reason = (
            f"Not sent after {MAX_CHUNK_ATTEMPTS} attempts: {last_error}"
            if distribution.channel == Distribution.Channel.EMAIL and last_error
            else "The provider kept refusing (throttled)."
        )
        _close_rows(pending, lease, MStatus.FAILED, reason)
        return stats
    Message.objects.filter(pk__in=ids, lease=lease, status=MStatus.SENDING).update(
        status=MStatus.PENDING, lease="", leased_at=None
    )
    from distributions.tasks import send_chunk_task

    send_chunk_task.apply_async(
        args=[distribution.pk, min(ids), max(ids)],
        kwargs={"attempt": attempt + 1},
        countdown=min(300, 15 * 2**attempt),
    )
    return stats


def _reclaim(rows: list, lease: str) -> list:
    """Refresh the lease of a window just before it is handed over.

    Rows wait in a chunk while earlier windows go out (long, for a slow sender); recovery may
    have taken back rows whose lease looked stale. Those are no longer ours to send: the
    conditional UPDATE here and the one in ``reconcile_range`` (which re-checks staleness)
    cannot both win for a row.
    """
    ids = [row.pk for row in rows]
    with transaction.atomic():
        # Visible to recovery at once; not worth a WAL flush: these rows are durably Sending
        # under our lease already, and if this refresh were lost in a database crash they
        # would be reconciled (asked of the provider), never sent again blindly.
        _commit_without_flush()
        refreshed = Message.objects.filter(pk__in=ids, lease=lease, status=MStatus.SENDING).update(
            leased_at=timezone.now()
        )
    if refreshed == len(ids):
        return rows
    owned = set(
        Message.objects.filter(pk__in=ids, lease=lease, status=MStatus.SENDING).values_list(
            "pk", flat=True
        )
    )
    return [row for row in rows if row.pk in owned]


def _drop_opted_out(
    distribution, rows: list[LeasedRow], lease: str, stats: dict
) -> list[LeasedRow]:
    opted = opted_out_addresses(
        brand_id=distribution.project.brand_id,
        channel=distribution.channel,
        addresses=[row.address for row in rows],
    )
    if not opted:
        return rows
    dropped = [row for row in rows if row.address in opted]
    _close_rows(dropped, lease, MStatus.SKIPPED_OPTOUT, "Opted out")
    stats["skipped_optout"] += len(dropped)
    return [row for row in rows if row.address not in opted]


def _close_rows(rows: list[LeasedRow], lease: str, status: str, reason: str) -> None:
    if not rows:
        return
    now = timezone.now()
    ids = [row.pk for row in rows]
    Message.objects.filter(pk__in=ids, lease=lease, status=MStatus.SENDING).update(
        status=status, status_reason=reason[:300], status_changed_at=now
    )
    MessageEvent.objects.bulk_create(
        [
            MessageEvent(message_id=pk, status=status, at=now, source="worker", detail=reason[:300])
            for pk in ids
        ]
    )
    recipient_statuses_raised(
        distribution_id=rows[0].distribution_id, changes=[(pk, status) for pk in ids], at=now
    )


def _render(distribution: Distribution, rows: list[LeasedRow]) -> None:
    """Render every body (creating personal links when the text asks for one). An email's
    subject, HTML and text parts are kept on the row objects (``row.email``) for the send; its
    text part is stored as the row's body."""
    is_email = distribution.channel == Distribution.Channel.EMAIL
    template = distribution.message
    text_template = ""
    if is_email:
        template = " ".join([distribution.subject, distribution.message, distribution.text_body])
        # The generated text part is made once from the template, not once per recipient.
        text_template = distribution.text_body.strip() or html_to_text(distribution.message)
    fields = set(piped_fields(template))
    links: list[SurveyLink] = []
    existing = {}
    if "link" in fields:
        existing = {
            link.message_id: link
            for link in SurveyLink.objects.filter(message_id__in=[row.pk for row in rows])
        }
    for row in rows:
        link_url = ""
        if "link" in fields:
            link = existing.get(row.pk)
            if link is None:
                link = SurveyLink(
                    token=new_token(),
                    project_id=distribution.project_id,
                    participant_id=row.participant_id,
                    distribution_id=distribution.pk,
                    message_id=row.pk,
                )
                links.append(link)
            link_url = link.url
        values, metadata = recipient_values(
            person=row.person,
            participant=row.participant,
            link=link_url,
            opt_out_link=opt_out_url(row.pk) if "opt_out_link" in fields or is_email else "",
        )
        if is_email:
            row.email = render_email(
                subject=distribution.subject,
                html_body=distribution.message,
                text_body=text_template,
                values=values,
                metadata=metadata,
            )
            row.body, row.segments = row.email.text, 0
            continue
        row.body = render(distribution.message, values, metadata)
        row.segments = count_segments(row.body)
    if links:
        SurveyLink.objects.bulk_create(links)
    update_rows(Message, ["body", "segments"], [(row.pk, row.body, row.segments) for row in rows])


def _outgoing_email(distribution: Distribution, row: LeasedRow, lease: str) -> OutgoingEmail:
    return OutgoingEmail(
        message_id=row.pk,
        to=row.address,
        from_name=distribution.from_name,
        from_address=distribution.from_address,
        reply_to=distribution.reply_to,
        subject=row.email.subject,
        html=row.email.html,
        text=row.email.text,
        unsubscribe_url=opt_out_url(row.pk),
        return_path=verp_address(row.pk),
        lease=lease,
    )


def _rejected_status(result: SendResult) -> str:
    if result.blocked:
        return MStatus.BLOCKED
    return MStatus.BOUNCED if result.bounced else MStatus.FAILED


def _commit_without_flush() -> None:
    """Let the current transaction commit without waiting for its WAL flush (PostgreSQL).

    Only for records of what the provider answered: if PostgreSQL itself crashed within the
    next few hundred milliseconds, those rows would be found still Sending under their lease
    and settled by reconciliation (asking the provider; never sent again), and their debit
    with them. Leases, taken before the hand-over, keep durable commits.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _record_sent_events(ids: list[int], lease: str, now) -> None:
    """A Sent event per row of ``ids`` that is now Sent under ``lease`` (set-based: its
    detail is the provider id just stored)."""
    events = connection.ops.quote_name(MessageEvent._meta.db_table)
    messages = connection.ops.quote_name(Message._meta.db_table)
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {events} (message_id, status, at, source, detail)
            SELECT m.id, m.status, %s, %s, m.provider_id FROM {messages} m
            WHERE m.id IN ({marks}) AND m.lease = %s AND m.status = %s
            """,  # noqa: S608 - table names are ours, values are bound
            [now, MessageEvent.Source.WORKER, *ids, lease, MStatus.SENT],
        )


def _apply_results(distribution, results: list[SendResult], lease: str, stats: dict) -> str:
    """Record a window's results in one transaction of a few statements (committed without
    waiting for the disk: see ``_commit_without_flush``). Returns a fatal reason, if any."""
    with transaction.atomic():
        _commit_without_flush()
        fatal = _record_results(distribution, results, lease, stats)
    # Opt-outs learnt from the provider's refusals: durable, each in its own transaction.
    for result in results:
        if result.outcome != Outcome.REJECTED:
            continue
        if result.blocked:
            from optouts.services import optout_record_provider

            message = Message.objects.select_related("distribution__project", "person").get(
                pk=result.message_id
            )
            optout_record_provider(message=message)
        if result.suppress:
            from optouts.services import optout_record_bounce

            message = Message.objects.select_related("distribution__project", "person").get(
                pk=result.message_id
            )
            optout_record_bounce(message=message, reason=result.error_message)
    return fatal


def _record_results(distribution, results: list[SendResult], lease: str, stats: dict) -> str:
    now = timezone.now()
    accepted = [r for r in results if r.outcome == Outcome.ACCEPTED]
    rejected = [r for r in results if r.outcome == Outcome.REJECTED]
    fatal = next((r for r in results if r.outcome == Outcome.FATAL), None)
    events: list[MessageEvent] = []
    changes: list[tuple[int, str]] = []
    if accepted:
        ids = [r.message_id for r in accepted]
        # A provider callback may have moved a row on already (it waits for this transaction
        # otherwise, under the row's lock): only rows still Sending become Sent, with an event.
        marked = update_rows_returning(
            Message,
            ["status", "sent_at", "status_changed_at", "provider_id"],
            [(r.message_id, MStatus.SENT, now, now, r.provider_id) for r in accepted],
            where="t.lease = %s AND t.status = %s",
            params=[lease, MStatus.SENDING],
        )
        if marked:
            _record_sent_events(marked, lease, now)
        changes += [(pk, MStatus.SENT) for pk in marked]
        _debit(distribution, ids)  # every accepted message is paid for, whatever its status
        stats["sent"] += len(accepted)
    update_rows(
        Message,
        ["status", "status_reason", "error_code", "status_changed_at"],
        [
            (
                r.message_id,
                _rejected_status(r),
                f"{r.error_code} {r.error_message}".strip()[:300],
                r.error_code[:20],
                now,
            )
            for r in rejected
        ],
        where="t.lease = %s AND t.status = %s",
        params=[lease, MStatus.SENDING],
    )
    for result in rejected:
        status = _rejected_status(result)
        reason = f"{result.error_code} {result.error_message}".strip()[:300]
        events.append(
            MessageEvent(
                message_id=result.message_id, status=status, at=now, source="worker", detail=reason
            )
        )
        if result.bounced:
            stats["bounced"] = stats.get("bounced", 0) + 1
        else:
            stats["failed"] += 1
    if fatal:
        fatal_rows = [r.message_id for r in results if r.outcome in (Outcome.FATAL,)]
        reason = (
            f"Not sent: the provider refused the account ({fatal.error_code} {fatal.error_message})"
        )
        Message.objects.filter(pk__in=fatal_rows, lease=lease, status=MStatus.SENDING).update(
            status=MStatus.FAILED,
            status_reason=reason[:300],
            error_code=fatal.error_code[:20],
            status_changed_at=now,
        )
        events += [
            MessageEvent(
                message_id=pk, status=MStatus.FAILED, at=now, source="worker", detail=reason[:300]
            )
            for pk in fatal_rows
        ]
    MessageEvent.objects.bulk_create(events)
    recipient_statuses_raised(
        distribution_id=distribution.pk,
        changes=changes + [(event.message_id, event.status) for event in events],
        at=now,
    )
    return (
        f"the provider refused the account ({fatal.error_code} {fatal.error_message})".strip()
        if fatal
        else ""
    )


def _stop_distribution(distribution: Distribution, reason: str) -> None:
    """An account-wide refusal: every Pending row fails; rows other tasks are sending finish
    on their own (the provider refuses them too), then the run ends Failed or Interrupted."""
    now = timezone.now()
    detail = f"Not sent: {reason}"[:300]
    ids = list(
        Message.objects.filter(distribution=distribution, status=MStatus.PENDING).values_list(
            "pk", flat=True
        )
    )
    Message.objects.filter(pk__in=ids, status=MStatus.PENDING).update(
        status=MStatus.FAILED, status_reason=detail, status_changed_at=now
    )
    MessageEvent.objects.bulk_create(
        [
            MessageEvent(
                message_id=pk, status=MStatus.FAILED, at=now, source="system", detail=detail
            )
            for pk in ids
        ],
        batch_size=1000,
    )
    recipient_statuses_raised(
        distribution_id=distribution.pk, changes=[(pk, MStatus.FAILED) for pk in ids], at=now
    )
    distribution_finish_if_done(distribution_id=distribution.pk)


# --- reconciliation of rows whose fate is unknown ------------------------------------------
def reconcile_range(*, distribution, provider: SmsProvider, first_id=None, last_id=None) -> int:
    """Settle rows left in Sending longer than the lease: Sent if the provider has them,
    Pending again (to be sent) if it does not. Returns how many rows were settled."""
    stale_before = timezone.now() - timedelta(seconds=lease_seconds())
    stale = Message.objects.filter(
        distribution=distribution, status=MStatus.SENDING, leased_at__lt=stale_before
    )
    if first_id is not None:
        stale = stale.filter(pk__gte=first_id, pk__lte=last_id)
    settled = 0
    sender = distribution.sender
    is_email = distribution.channel == Distribution.Channel.EMAIL
    for row in stale.order_by("pk")[:SEND_CHUNK_SIZE]:
        since = row.leased_at - timedelta(seconds=5)
        provider_id = (
            provider.find_sent(
                to=row.address,
                sender=sender,
                since=since,
                body=row.body,
                message_id=row.pk,
                lease=row.lease,
            )
            if row.body or is_email
            else None
        )
        now = timezone.now()
        if provider_id:
            changed = Message.objects.filter(
                pk=row.pk, status=MStatus.SENDING, lease=row.lease
            ).update(
                status=MStatus.SENT, provider_id=provider_id, sent_at=now, status_changed_at=now
            )
            if changed:
                MessageEvent.objects.create(
                    message_id=row.pk,
                    status=MStatus.SENT,
                    at=now,
                    source="reconcile",
                    detail=provider_id,
                )
                recipient_statuses_raised(
                    distribution_id=distribution.pk, changes=[(row.pk, MStatus.SENT)], at=now
                )
                _debit(distribution, [row.pk])
        else:
            # Only if the lease is still stale now: a live task that refreshed it meanwhile
            # (``_reclaim``) is about to send this row itself.
            changed = Message.objects.filter(
                pk=row.pk, status=MStatus.SENDING, lease=row.lease, leased_at__lt=stale_before
            ).update(status=MStatus.PENDING, lease="", leased_at=None)
        settled += changed
    return settled


def distributions_recover(*, now=None) -> dict:
    """Periodic safety net: settle stale Sending rows, requeue stalled Pending rows, finish."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=lease_seconds())
    stats = {"reconciled": 0, "requeued": 0, "finished": 0}
    for distribution in Distribution.objects.filter(
        status=Distribution.Status.IN_PROGRESS
    ).select_related("project__brand"):
        _account, provider = channel_provider(distribution)
        try:
            stats["reconciled"] += reconcile_range(distribution=distribution, provider=provider)
        finally:
            provider.close()
        pending = Message.objects.filter(distribution=distribution, status=MStatus.PENDING)
        recently_active = Message.objects.filter(
            distribution=distribution, status_changed_at__gte=stale_before
        ).exists() or (distribution.started_at and distribution.started_at >= stale_before)
        if pending.exists() and not recently_active:
            stats["requeued"] += distribution_enqueue_chunks(distribution=distribution)
        if distribution_finish_if_done(distribution_id=distribution.pk):
            stats["finished"] += 1
    return stats
