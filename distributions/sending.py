"""The fan-out: send the rows a pump leased through the brand's provider.

A pump (``distributions.pump``) takes a fair batch from the fair queue
(``distributions.fairqueue.pick``: rows already leased, their sender's tokens paid) and hands
it here (``send_batch``). For each distribution of the batch:
1. drops rows whose address opted out meanwhile (Skipped (opt-out));
2. covers them with credits (rows the balance cannot pay for fail), renders each body (links,
   piped fields) and counts its segments;
3. refreshes the lease, checks opt-outs again and hands the window to the provider under the
   window's opt-out guard (an opt-out recorded meanwhile is never overtaken), then records
   every result at once;
4. a row the provider refused for now waits (Pending, ``due_at`` after its backoff; the sender
   paused when it was throttled): no worker waits for it.
A row handed to the provider is never handed over again: Sent rows are never leased, and an
unknown outcome stays Sending until reconciliation asks the provider (``reconcile_range``).
A live worker keeps its lease fresh while its rows are in flight (``LeaseKeeper``), so a dead
worker's rows are settled one lease after it died (``distributions_recover``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from itertools import islice

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from credits.segments import count_segments
from distributions import fairqueue, metrics
from distributions.bulk import update_rows, update_rows_returning
from distributions.email_content import html_to_text, render_email
from distributions.models import (
    Distribution,
    Message,
    MessageEvent,
    ProviderAccount,
    SendLane,
)
from distributions.providers.base import (
    Outcome,
    OutgoingEmail,
    OutgoingSms,
    SendResult,
    SentQuery,
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
SEND_WINDOW = fairqueue.SEND_WINDOW
# A row refused for now (throttled, a provider error before it took the message) waits its
# backoff and is tried again, at most this many times in all, then Failed.
MAX_SEND_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 60.0
# Stale rows settled per reconciliation pass of one distribution.
RECONCILE_BATCH = 5000


def lease_seconds() -> int:
    return settings.RELAY_SEND_LEASE_SECONDS


def window_size(account) -> int:
    """Rows a sender hands over at once: ``SEND_WINDOW``, or one second of its rate when that
    is less (its token bucket holds one second of the rate)."""
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


# --- into the fair queue ------------------------------------------------------------------
def sender_identity(distribution: Distribution, account) -> str:
    """Who the messages come from: the From address, else the chosen sender, the brand's
    default sender or its messaging service."""
    if distribution.channel == Distribution.Channel.EMAIL:
        return distribution.from_address
    return distribution.sender or account.default_sender or account.messaging_service_sid


def distribution_sender_id(distribution: Distribution, account=None) -> int:
    """The fair queue's sender of this distribution (its token bucket and turn)."""
    account = account or channel_account_for(distribution)
    brand_id = distribution.project.brand_id
    key = f"{account.provider}:{brand_id}:{sender_identity(distribution, account) or 'default'}"
    return fairqueue.sender_ensure(
        key=key, brand_id=brand_id, rate=int(account.messages_per_second or 0)
    )


def distribution_enqueue(*, distribution: Distribution, account=None) -> int:
    """Put the distribution's Pending rows in the fair queue; pumps are kicked after commit.
    Returns how many rows are Pending (0: nothing to send)."""
    pending = Message.objects.filter(distribution=distribution, status=MStatus.PENDING).count()
    if pending:
        fairqueue.lane_open(
            distribution_id=distribution.pk,
            brand_id=distribution.project.brand_id,
            sender_id=distribution_sender_id(distribution, account),
        )
        fairqueue.pumps_kick()
    return pending


def send_batch(*, lease: str, grants: list[fairqueue.Grant]) -> dict:
    """Send the rows a pump leased under ``lease`` (``fairqueue.pick``), distribution by
    distribution, keeping their lease fresh while they are in flight. Returns counts."""
    stats = {"leased": 0, "sent": 0, "failed": 0, "skipped_optout": 0, "deferred": 0}
    # In the fair order of the pick: a small distribution's rows do not wait for a big one's.
    rows_by_distribution: dict[int, list[LeasedRow]] = {g.distribution_id: [] for g in grants}
    for row in leased_rows(lease):
        rows_by_distribution.setdefault(row.distribution_id, []).append(row)
    senders = {grant.distribution_id: grant.sender_id for grant in grants}
    distributions = Distribution.objects.select_related("project__brand").in_bulk(
        list(rows_by_distribution)
    )
    providers: dict[tuple, tuple] = {}
    with LeaseKeeper(lease):
        try:
            for distribution_id, rows in rows_by_distribution.items():
                if not rows:
                    continue
                distribution = distributions.get(distribution_id)
                stats["leased"] += len(rows)
                if distribution is None or distribution.status != Distribution.Status.IN_PROGRESS:
                    # Stopped after these rows were picked (cancelled, or refused by the
                    # provider): they are not sent.
                    reason = (
                        STOPPED_REASON
                        if distribution is None or distribution.status != "failed"
                        else "Not sent: the distribution failed."
                    )
                    _close_rows(rows, lease, MStatus.SKIPPED, reason)
                    continue
                key = (distribution.project.brand_id, distribution.channel)
                if key not in providers:
                    providers[key] = channel_provider(distribution)
                account, provider = providers[key]
                _send_rows(
                    distribution,
                    account,
                    provider,
                    rows,
                    lease,
                    stats,
                    sender_id=senders.get(distribution_id),
                )
        finally:
            for _account, provider in providers.values():
                provider.close()
    for distribution_id in rows_by_distribution:
        distribution_finish_if_done(distribution_id=distribution_id)
    return stats


STOPPED_REASON = "Not sent: the distribution was cancelled."


class LeaseKeeper:
    """Keeps a batch's lease fresh while its rows are in flight: a thread renews
    ``leased_at`` every quarter of the lease, so that recovery takes back the rows of a
    dead worker after one lease, never the rows of a live one in a long hand-over (an SMTP
    relay answering slowly, a provider at its timeout)."""

    def __init__(self, lease: str):
        self.lease = lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        if connection.vendor == "postgresql":  # SQLite: one machine, one writer at a time
            self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from django.db import connections

        every = max(0.5, lease_seconds() / 4)
        try:
            while not self._stop.wait(every):
                Message.objects.filter(lease=self.lease, status=MStatus.SENDING).update(
                    leased_at=timezone.now()
                )
        except Exception:  # noqa: BLE001 - best effort: a lapsed lease is reconciled, not lost
            logger.exception("could not renew lease %s", self.lease)
        finally:
            connections.close_all()


def send_chunk(*, distribution_id: int, first_id: int, last_id: int, attempt: int = 0) -> dict:
    """Send the due Pending rows of one distribution with ids in [first_id, last_id] now, in
    the foreground: what the pumps do for them, window by window, paying the sender's
    tokens and waiting for them in the caller's thread (never call it from a worker: pumps
    do the sending there). For operators (``manage.py send_distribution``) and tests."""
    distribution = Distribution.objects.select_related("project__brand").get(pk=distribution_id)
    stats = {"leased": 0, "sent": 0, "failed": 0, "skipped_optout": 0, "deferred": 0}
    if distribution.status != Distribution.Status.IN_PROGRESS:
        return {"skipped": distribution.status}
    account, provider = channel_provider(distribution)
    sender_id = distribution_sender_id(distribution, account)
    try:
        while True:
            lease = fairqueue.new_lease()
            count, wait = fairqueue.take_range(
                sender_id=sender_id,
                distribution_id=distribution_id,
                first_id=first_id,
                last_id=last_id,
                lease=lease,
            )
            if count:
                rows = leased_rows(lease)
                stats["leased"] += len(rows)
                with LeaseKeeper(lease):
                    _send_rows(
                        distribution, account, provider, rows, lease, stats, sender_id=sender_id
                    )
                continue
            if wait is None:
                break
            time.sleep(wait)
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


def _send_rows(
    distribution,
    account,
    provider: SmsProvider,
    rows: list,
    lease: str,
    stats: dict,
    *,
    sender_id: int | None,
) -> None:
    """Check, price, render and hand over one distribution's leased rows, then record what
    the provider answered. A row the provider refused for now waits (``_defer``)."""
    rows = _drop_opted_out(distribution, rows, lease, stats)
    if not rows:
        return
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
    if not rows:
        return

    _render(distribution, rows)
    sender = sender_identity(distribution, account)
    callback = (
        status_callback_template() if getattr(provider, "wants_status_callback", False) else ""
    )
    by_id = {row.pk: row for row in rows}
    for window in batched(rows, fairqueue.SEND_WINDOW):
        window = _reclaim(list(window), lease)
        if not window:
            continue
        # The opt-out check and the hand-over hold the window's opt-out guard: an opt-out of
        # one of its numbers waits for this window, or this window sees it (optouts.guard).
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
            if sender_id is not None:
                fairqueue.sender_handed_over(
                    sender_id=sender_id,
                    rate=int(account.messages_per_second or 0),
                    at=timezone.now(),
                )
            results = provider.send_window(outgoing)
        fatal = _apply_results(distribution, results, lease, stats)
        metrics.count(
            metrics.outcome_counts(
                brand=distribution.project.brand.slug, provider=account.provider, results=results
            )
        )
        if fatal:
            _stop_distribution(distribution, fatal)
            return
        retry = [result for result in results if result.outcome == Outcome.RETRY]
        if retry:
            _defer(distribution, [by_id[r.message_id] for r in retry], retry, lease, stats)
            if sender_id is not None and any(r.throttled for r in retry):
                wait = max(r.retry_after or 0.0 for r in retry) or RETRY_BASE_SECONDS
                fairqueue.sender_pause(
                    sender_id=sender_id,
                    until=timezone.now() + timedelta(seconds=wait),
                    reason=f"The provider asked to wait {wait:g} s ({retry[0].error_code}).",
                )


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Seconds a row refused for now waits before its next attempt: what the provider asked
    for, else an exponential backoff from ``RETRY_BASE_SECONDS``, at most ``RETRY_MAX_SECONDS``."""
    backoff = RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    return min(RETRY_MAX_SECONDS, max(retry_after or 0.0, backoff))


def _defer(distribution, rows: list, results: list[SendResult], lease: str, stats: dict) -> None:
    """Rows the provider refused for now (throttled, an error before it took them): Pending
    again, due after their backoff, with an event saying until when; after
    ``MAX_SEND_ATTEMPTS`` attempts, Failed. No worker waits for them."""
    now = timezone.now()
    result_of = {result.message_id: result for result in results}
    attempts = dict(
        Message.objects.filter(pk__in=[row.pk for row in rows]).values_list("pk", "attempts")
    )
    spent = [row for row in rows if attempts.get(row.pk, 0) >= MAX_SEND_ATTEMPTS]
    if spent:
        last = result_of[spent[0].pk]
        detail = last.error_message or last.error_code
        reason = (
            f"Not sent after {MAX_SEND_ATTEMPTS} attempts: {detail}"
            if distribution.channel == Distribution.Channel.EMAIL and detail
            else "The provider kept refusing (throttled)."
        )
        _close_rows(spent, lease, MStatus.FAILED, reason)
        stats["failed"] += len(spent)
    waiting = [row for row in rows if row not in spent]
    if not waiting:
        return
    values, events = [], []
    for row in waiting:
        result = result_of[row.pk]
        due = now + timedelta(seconds=retry_delay(attempts.get(row.pk, 1), result.retry_after))
        why = f"{result.error_code} {result.error_message}".strip() or "refused for now"
        detail = f"Waiting until {due:%H:%M:%S} UTC: the provider refused it for now ({why})."
        values.append((row.pk, MStatus.PENDING, "", None, due, detail[:300]))
        events.append(
            MessageEvent(
                message_id=row.pk,
                status=MStatus.PENDING,
                at=now,
                source="worker",
                detail=detail[:300],
            )
        )
    update_rows(
        Message,
        ["status", "lease", "leased_at", "due_at", "status_reason"],
        values,
        where="t.lease = %s AND t.status = %s",
        params=[lease, MStatus.SENDING],
        casts={"leased_at": "timestamptz", "due_at": "timestamptz"},
    )
    MessageEvent.objects.bulk_create(events)
    stats["deferred"] += len(waiting)
    distribution_enqueue(distribution=distribution)


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
def _stale_rows(distribution, stale_before, first_id=None, last_id=None):
    stale = Message.objects.filter(
        distribution=distribution, status=MStatus.SENDING, leased_at__lt=stale_before
    )
    if first_id is not None:
        stale = stale.filter(pk__gte=first_id, pk__lte=last_id)
    return stale.order_by("pk")


def reconcile_range(*, distribution, provider: SmsProvider, first_id=None, last_id=None) -> int:
    """Settle rows left in Sending longer than the lease (their worker died): Sent if the
    provider has them, Pending again (to be sent) if it does not. The provider is asked once
    for all of them (``find_sent_many``: Twilio lists the time range in pages), not once per
    row. Returns how many rows were settled."""
    stale_before = timezone.now() - timedelta(seconds=lease_seconds())
    rows = list(
        _stale_rows(distribution, stale_before, first_id, last_id).values(
            "pk", "address", "body", "lease", "leased_at"
        )[:RECONCILE_BATCH]
    )
    if not rows:
        return 0
    is_email = distribution.channel == Distribution.Channel.EMAIL
    # A row without a body was never rendered, so never handed over (emails: their journal).
    asked = [row for row in rows if row["body"] or is_email]
    found = (
        provider.find_sent_many(
            queries=[
                SentQuery(
                    message_id=row["pk"],
                    to=row["address"],
                    body=row["body"],
                    lease=row["lease"],
                    since=row["leased_at"] - timedelta(seconds=5),
                )
                for row in asked
            ],
            sender=distribution.sender,
        )
        if asked
        else {}
    )
    now = timezone.now()
    sent = [
        (row["pk"], MStatus.SENT, found[row["pk"]], now, now) for row in rows if row["pk"] in found
    ]
    marked = _mark_reconciled(sent, {row["pk"]: row["lease"] for row in rows})
    if marked:
        MessageEvent.objects.bulk_create(
            [
                MessageEvent(
                    message_id=pk, status=MStatus.SENT, at=now, source="reconcile", detail=found[pk]
                )
                for pk in marked
            ]
        )
        recipient_statuses_raised(
            distribution_id=distribution.pk, changes=[(pk, MStatus.SENT) for pk in marked], at=now
        )
        _debit(distribution, marked)
    # Only rows whose lease is still stale now: a live task that refreshed it meanwhile
    # (``_reclaim``, ``LeaseKeeper``) is about to send them itself.
    reset = 0
    for lease in {row["lease"] for row in rows if row["pk"] not in found}:
        ids = [row["pk"] for row in rows if row["pk"] not in found and row["lease"] == lease]
        reset += Message.objects.filter(
            pk__in=ids, status=MStatus.SENDING, lease=lease, leased_at__lt=stale_before
        ).update(status=MStatus.PENDING, lease="", leased_at=None, due_at=now)
    if reset:
        distribution_enqueue(distribution=distribution)
    return len(marked) + reset


def _mark_reconciled(sent: list[tuple], leases: dict[int, str]) -> list[int]:
    """Rows the provider has: Sent with its id, if still Sending under the same lease."""
    marked: list[int] = []
    for lease in {leases[row[0]] for row in sent}:
        marked += update_rows_returning(
            Message,
            ["status", "provider_id", "sent_at", "status_changed_at"],
            [row for row in sent if leases[row[0]] == lease],
            where="t.status = %s AND t.lease = %s",
            params=[MStatus.SENDING, lease],
            casts={"sent_at": "timestamptz", "status_changed_at": "timestamptz"},
        )
    return marked


def distributions_recover(*, now=None) -> dict:
    """The safety net, every few seconds (beat, a worker's start, and again when a lease is
    about to lapse): settle stale Sending rows with the provider, put distributions with
    Pending rows back in the fair queue, kick pumps, finish what is done."""
    now = now or timezone.now()
    stats = {"reconciled": 0, "requeued": 0, "finished": 0}
    soonest_stale = None
    lanes = dict(SendLane.objects.values_list("distribution_id", "ready_at"))
    for distribution in Distribution.objects.filter(
        status=Distribution.Status.IN_PROGRESS
    ).select_related("project__brand"):
        account, provider = channel_provider(distribution)
        try:
            stats["reconciled"] += reconcile_range(distribution=distribution, provider=provider)
        finally:
            provider.close()
        oldest_lease = (
            Message.objects.filter(distribution=distribution, status=MStatus.SENDING)
            .order_by("leased_at")
            .values_list("leased_at", flat=True)
            .first()
        )
        if oldest_lease is not None:
            stale_at = oldest_lease + timedelta(seconds=lease_seconds())
            soonest_stale = min(soonest_stale or stale_at, stale_at)
        if lanes.get(distribution.pk) is None and distribution_enqueue(
            distribution=distribution, account=account
        ):
            stats["requeued"] += 1
        if distribution_finish_if_done(distribution_id=distribution.pk):
            stats["finished"] += 1
    if fairqueue.next_ready_at() is not None and not fairqueue.pumps_kick():
        # Every slot is held: by live pumps, or by a dead worker's until its claim lapses.
        lapse = fairqueue.pumps_next_lapse()
        if lapse is not None:
            _recover_again_at(lapse)
    if soonest_stale is not None:
        _recover_again_at(soonest_stale)
    return stats


def _recover_again_at(when) -> None:
    """Run recovery again at ``when`` (a lease or a pump's claim lapses), unless a run is
    already due sooner, so that a dead worker's rows and pumps are taken over a lease after
    it died, whatever beat's period."""
    from django.core.cache import cache

    from distributions.tasks import distributions_recover_task

    key = "relay:recover-at"
    scheduled = cache.get(key)
    # A run already due between now and then covers this one (a run that is due already may
    # be this very run, which looked before ``when``).
    if scheduled is not None and time.time() < scheduled <= when.timestamp() + 0.5:
        return
    delay = max(0.5, (when - timezone.now()).total_seconds() + 0.5)
    cache.set(key, when.timestamp(), timeout=int(delay) + 1)
    transaction.on_commit(lambda: distributions_recover_task.apply_async(countdown=delay))
