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

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from core.bulk import update_rows, update_rows_returning
from core.queueing import task_queue
from core.tokens import new_token
from credits.segments import count_segments
from distributions import fairqueue, metrics
from distributions.charging import (
    distribution_release,
    distribution_reserve,
    distributions_cover,
    messages_debit,
    messages_debit_many,
)
from distributions.email_content import html_to_text, render_email
from distributions.email_services import email_account_for
from distributions.events import recipient_statuses_raised
from distributions.finishing import distribution_finish_if_done
from distributions.models import (
    Distribution,
    Message,
    MessageEvent,
    ProviderAccount,
    SendLane,
)
from distributions.policies import link_expires_at, shared_invite_links
from distributions.providers.base import (
    HandedOver,
    Outcome,
    OutgoingEmail,
    OutgoingSms,
    Provider,
    SendResult,
    SentQuery,
)
from distributions.providers.loop import submit as handover_submit
from distributions.providers.registry import channel_provider_for
from distributions.two_way import sms_template
from distributions.verp import verp_address
from optouts.guard import handover_guard_many
from optouts.links import opt_out_url
from optouts.selectors import opted_out_many
from optouts.services import optout_record_bounce, optout_record_provider
from participants.rendering import piped_fields, recipient_values, render
from projects.models import SurveyLink
from webhooks.events import brands_subscribed
from webhooks.models import EventType

logger = logging.getLogger(__name__)


MStatus = Message.Status
SEND_WINDOW = fairqueue.SEND_WINDOW
# A row refused for now (throttled, a provider error before it took the message) waits its
# backoff and is tried again, at most this many times in all, then Failed.
MAX_SEND_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 60.0
# Stale rows settled per reconciliation pass of one distribution.
RECONCILE_BATCH = 5000
# A row its provider got without our worker reading the answer (reconciliation).
IN_DOUBT_REASON = (
    "unknown No answer after the message was sent (its worker stopped before the server's "
    "reply was recorded): it may have been delivered; not sent again."
)


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
        return email_account_for(distribution.project.brand)
    return provider_account_for(distribution.project.brand)


def channel_provider(distribution: Distribution, account=None) -> tuple[object, Provider]:
    account = account or channel_account_for(distribution)
    return account, channel_provider_for(account, distribution.channel)


def _accounts_for(distributions) -> dict[tuple[int, str], object]:
    """The SMS provider accounts of these distributions' brands (one query; a brand without
    one gets ``provider_account_for``'s default when asked). Email accounts are looked up
    one by one (``channel_account_for``)."""
    brands = {d.project.brand_id for d in distributions if d.channel == Distribution.Channel.SMS}
    if not brands:
        return {}
    return {
        (account.brand_id, Distribution.Channel.SMS): account
        for account in ProviderAccount.objects.filter(brand_id__in=brands)
    }


def status_callback_url(code: str, message_id: int) -> str:
    """Where provider ``code`` posts the statuses of message ``message_id``."""
    return settings.PUBLIC_BASE_URL + reverse("callbacks:status", args=[code, message_id])


def status_callback_template(code: str) -> str:
    """``status_callback_url`` as a format string: reversing a URL per message costs more
    than the rest of its bookkeeping."""
    marker = 987654321
    return status_callback_url(code, marker).replace(str(marker), "{}")


# --- credits: reserved at start, debited per accepted message, released at the end ---------
def reserve_credits(*, distribution: Distribution) -> None:
    """At start, inside the materialisation transaction."""
    distribution_reserve(distribution=distribution)


def release_credits(*, distribution: Distribution) -> None:
    """When the distribution finishes (or is cancelled)."""
    distribution_release(distribution=distribution)


def credits_covering_many(*, items) -> dict:
    """The rows each distribution's credits cover, for every distribution of a send batch:
    [(distribution, rows)] (all of them for self-service brands)."""
    return distributions_cover(items=items)


def credits_debit_many(*, items) -> None:
    """Debit what the provider accepted, for every distribution of a send batch:
    [(distribution, message ids)]."""
    messages_debit_many(items=items)


def _debit(distribution: Distribution, message_ids: list[int]) -> None:
    """Every message the provider accepted (also reconciled ones)."""
    messages_debit(distribution=distribution, message_ids=message_ids)


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
    """Send the rows a pump leased under ``lease`` (``fairqueue.pick``) and record what the
    providers answered: ``batch_start`` and its ``Batch.finish`` at once. Returns counts."""
    return batch_start(lease=lease, grants=grants).finish()


def batch_start(*, lease: str, grants: list[fairqueue.Grant]) -> Batch:
    """Check, price and render the rows a pump leased under ``lease`` and hand them to their
    providers: every distribution of the batch goes through each step together (one opt-out
    query, one credits transaction, one hand-over, one record), so that a batch of many slow
    senders' one-message windows costs about what one window does.

    Async providers' requests run on the hand-over loop (``providers.loop``), each window at
    its moment: the returned ``Batch`` is in flight until ``finish`` records the answers, and
    the pump prepares its next batch meanwhile (``Batch.pipelined``)."""
    stats = _new_stats()
    # In the fair order of the pick: a small distribution's rows do not wait for a big one's.
    rows_by_distribution: dict[int, list[LeasedRow]] = {g.distribution_id: [] for g in grants}
    for row in leased_rows(lease):
        rows_by_distribution.setdefault(row.distribution_id, []).append(row)
    senders = {grant.distribution_id: grant.sender_id for grant in grants}
    not_before = {grant.distribution_id: grant.not_before for grant in grants}
    distributions = Distribution.objects.select_related("project__brand").in_bulk(
        list(rows_by_distribution)
    )
    batch = Batch(lease, stats, list(rows_by_distribution))
    accounts = _accounts_for(distributions.values())
    try:
        for distribution_id, rows in rows_by_distribution.items():
            if not rows:
                continue
            stats["leased"] += len(rows)
            distribution = distributions.get(distribution_id)
            if distribution is None or distribution.status != Distribution.Status.IN_PROGRESS:
                # Stopped after these rows were picked (cancelled, or refused by the
                # provider): they are not sent.
                failed = distribution is not None and distribution.status == "failed"
                reason = "Not sent: the distribution failed." if failed else STOPPED_REASON
                _close_rows(rows, lease, MStatus.SKIPPED, reason)
                continue
            key = (distribution.project.brand_id, distribution.channel)
            if key not in batch.providers:
                batch.providers[key] = channel_provider(distribution, accounts.get(key))
            account, provider = batch.providers[key]
            lane = Lane(distribution, account, provider, senders.get(distribution_id), rows)
            lane.not_before = not_before.get(distribution_id)
            batch.lanes.append(lane)
        batch.start()
    except BaseException:
        batch.abort()
        raise
    return batch


class Batch:
    """A send batch from its hand-over to its record. ``start`` keeps the batch's lease fresh
    (``LeaseKeeper``) and hands its windows over under their opt-out guard (``Flight``);
    ``finish`` waits for the answers (it returns at once when ``done``), records them, gives
    back the senders of windows never handed over and finishes the distributions left with
    nothing to send.

    ``pipelined``: the batch may stay in flight while its pump picks and starts the next one
    (PostgreSQL, whose opt-out guard is a session lock that outlives the pump's next
    transactions; SQLite's guard is a transaction, so its batches finish at once)."""

    def __init__(self, lease: str, stats: dict, distribution_ids: list[int]):
        self.lease = lease
        self.stats = stats
        self.distribution_ids = distribution_ids
        self.lanes: list[Lane] = []
        self.providers: dict[tuple, tuple] = {}
        self.flight: Flight | None = None
        self._keeper: LeaseKeeper | None = None
        self._finished = False
        self.pipelined = connection.vendor == "postgresql"

    def start(self) -> None:
        self._keeper = LeaseKeeper(self.lease).__enter__()
        self.flight = Flight.start(self.lanes, self.lease, self.stats)

    def done(self) -> bool:
        """Whether ``finish`` would not wait (every window handed over and answered)."""
        return self.flight is None or self.flight.done()

    def moment(self) -> float:
        """The latest moment (Unix time) a window of this batch waits for (0: none)."""
        return self.flight.moment if self.flight is not None else 0.0

    def future(self):
        """The future of the requests in flight on the hand-over loop (None: none)."""
        return self.flight.future if self.flight is not None else None

    def finish(self) -> dict:
        """Wait for the answers, record them and close the batch (once). Returns counts."""
        if self._finished:
            return self.stats
        self._finished = True
        try:
            if self.flight is not None:
                self.flight.finish()
        finally:
            self._close()
        for distribution_id in fairqueue.lanes_idle(distribution_ids=self.distribution_ids):
            distribution_finish_if_done(distribution_id=distribution_id)
        return self.stats

    def abort(self) -> None:
        """Close the batch without recording (its pump is failing): what was handed over
        stays Sending under the lease, for reconciliation to settle with the provider."""
        if self._finished:
            return
        self._finished = True
        try:
            if self.flight is not None:
                self.flight.abort()
        finally:
            self._close()

    def _close(self) -> None:
        try:
            if self._keeper is not None:
                self._keeper.__exit__(None, None, None)
            for _account, provider in self.providers.values():
                provider.close()
        finally:
            fairqueue.senders_release(
                sender_ids=[
                    lane.sender_id for lane in self.lanes if lane.sender_id and not lane.handed
                ]
            )


STOPPED_REASON = "Not sent: the distribution was cancelled."


def _new_stats() -> dict:
    return {
        "leased": 0,
        "sent": 0,
        "failed": 0,
        "skipped_optout": 0,
        "deferred": 0,
        "ahead_seconds": 0.0,
    }


class Lane:
    """One distribution's rows in a send batch, as they go through the pipeline (rows are
    dropped from ``rows`` as they are closed)."""

    __slots__ = ("distribution", "account", "provider", "sender_id", "rows", "handed", "not_before")

    def __init__(self, distribution, account, provider, sender_id, rows):
        self.distribution = distribution
        self.account = account
        self.provider = provider
        self.sender_id = sender_id
        self.rows = list(rows)
        self.handed = False  # the sender's hand-over was recorded (its bucket refills from it)
        # Picked ahead of its sender's bucket (``fairqueue.pick``): not handed over before.
        self.not_before = None

    def wait(self) -> float:
        """Seconds until this lane may be handed over (0 when it may now)."""
        if self.not_before is None:
            return 0.0
        return max(0.0, self.not_before.timestamp() - time.time())

    @property
    def rate(self) -> int:
        return int(self.account.messages_per_second or 0)

    @property
    def brand_id(self) -> int:
        return self.distribution.project.brand_id


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
    provider: Provider,
    rows: list,
    lease: str,
    stats: dict,
    *,
    sender_id: int | None,
) -> None:
    """One distribution's leased rows through the pipeline (the foreground send)."""
    lane = Lane(distribution, account, provider, sender_id, rows)
    try:
        _send_lanes([lane], lease, stats)
    finally:
        if sender_id and not lane.handed:
            fairqueue.senders_release(sender_ids=[sender_id])


def _send_lanes(lanes: list[Lane], lease: str, stats: dict) -> None:
    """Check, price, render and hand over every lane's rows, then record what the providers
    answered. A row the provider refused for now waits (``_defer``)."""
    flight = Flight.start(lanes, lease, stats)
    if flight is not None:
        flight.finish()


class Flight:
    """Lanes handed over and not yet recorded: checked, priced and rendered, then handed to
    their providers under the batch's opt-out guard, which is held until every request has
    been answered (an opt-out of one of the addresses waits for the hand-over, or the
    hand-over sees it: ``optouts.guard``).

    Async providers' windows go to the hand-over loop, each at its moment (``Lane.not_before``,
    at most the pick-ahead away); sync providers' windows go at once when due, else at
    ``finish`` (which waits for their moment if it comes to that before it)."""

    def __init__(self, lanes: list[Lane], lease: str, stats: dict):
        self.lanes, self.lease, self.stats = lanes, lease, stats
        self.results: list[list[SendResult]] = [[] for _ in lanes]
        self.answered: list[datetime | None] = [None for _ in lanes]
        self.handed: dict[int, datetime] = {}
        self.later: list[tuple[int, list]] = []  # sync lanes waiting for their moment
        self.future = None  # the async lanes' requests on the hand-over loop
        self._concurrent: list[int] = []
        self._guard = contextlib.ExitStack()
        self.moment = max(
            (lane.not_before.timestamp() for lane in lanes if lane.not_before), default=0.0
        )

    @classmethod
    def start(cls, lanes: list[Lane], lease: str, stats: dict) -> Flight | None:
        """Check, price, render and hand over the lanes' rows; None when none is left to
        send."""
        _drop_opted_out_lanes(lanes, lease, stats)
        _cover_lanes(lanes, lease, stats)
        lanes = [lane for lane in lanes if lane.rows]
        if not lanes:
            return None
        _render_lanes(lanes)
        _reclaim_lanes(lanes, lease)
        flight = cls(lanes, lease, stats)
        keys = [
            (lane.brand_id, lane.distribution.channel, r.address)
            for lane in lanes
            for r in lane.rows
        ]
        flight._guard.enter_context(handover_guard_many(keys=keys))
        try:
            _drop_opted_out_lanes(lanes, lease, stats)
            flight.handed = _handed_over_now(lanes)
            flight._hand_over()
        except BaseException:
            flight.abort()
            raise
        return flight

    def _hand_over(self) -> None:
        coroutines = []
        for index, lane in enumerate(self.lanes):
            if not lane.rows:
                continue
            outgoing = _outgoing(lane, self.lease)
            start = getattr(lane.provider, "send_window_coroutine", None)
            made = start(outgoing) if start is not None else None
            if made is None:
                if lane.wait() > 0:
                    self.later.append((index, outgoing))
                else:
                    self._send_now(index, outgoing)
            else:
                self._concurrent.append(index)
                coroutines.append(_at(lane.not_before, made[1]))
        if coroutines:
            self.future = handover_submit(_gather(coroutines))

    def _send_now(self, index: int, outgoing: list) -> None:
        lane = self.lanes[index]
        self.results[index] = lane.provider.send_window(outgoing)
        self.answered[index] = timezone.now()

    def done(self) -> bool:
        """Every window handed over and answered (``finish`` would not wait), or a sync
        window's moment has come (``finish`` hands it over at once)."""
        return (self.future is None or self.future.done()) and time.time() >= self.moment

    def finish(self) -> None:
        """Wait for every answer (the windows' moments first), release the guard, then
        record the results."""
        try:
            waited = max(0.0, self.moment - time.time())
            for index, outgoing in self.later:
                wait = self.lanes[index].wait()
                if wait > 0:
                    time.sleep(wait)
                self._send_now(index, outgoing)
            if self.future is not None:
                gathered = self.future.result()
                for index, (done, sent) in zip(self._concurrent, gathered, strict=True):
                    self.results[index], self.answered[index] = sent, done
            self.stats["ahead_seconds"] = self.stats.get("ahead_seconds", 0.0) + waited
        finally:
            self._guard.close()
        lanes = self.lanes
        fairqueue.senders_answered(
            senders=[
                (lane.sender_id, self.handed[lane.sender_id], self.answered[index])
                for index, lane in enumerate(lanes)
                if lane.sender_id in self.handed and self.answered[index] is not None
            ]
        )
        _record_lanes(lanes, self.results, self.lease, self.stats)

    def abort(self) -> None:
        """Release the guard once the requests in flight are over, recording nothing."""
        try:
            if self.future is not None:
                timeout = settings.RELAY_PROVIDER_TIMEOUT_SECONDS + 5
                concurrent.futures.wait([self.future], timeout=timeout)
        finally:
            self._guard.close()


def _drop_opted_out_lanes(lanes: list[Lane], lease: str, stats: dict) -> None:
    """Close the rows whose address opted out meanwhile (one query for every lane)."""
    opted = opted_out_many(
        keys=[
            (lane.brand_id, lane.distribution.channel, row.address)
            for lane in lanes
            for row in lane.rows
        ]
    )
    if not opted:
        return
    for lane in lanes:
        key = (lane.brand_id, lane.distribution.channel)
        dropped = [row for row in lane.rows if (*key, row.address) in opted]
        if dropped:
            _close_rows(dropped, lease, MStatus.SKIPPED_OPTOUT, "Opted out")
            stats["skipped_optout"] += len(dropped)
            lane.rows = [row for row in lane.rows if (*key, row.address) not in opted]


def _cover_lanes(lanes: list[Lane], lease: str, stats: dict) -> None:
    """Hold each row's exact cost (one credits transaction for every lane); close the rows
    the balance cannot pay for (Failed) and those the rate card does not send to (Skipped)."""
    coverage = credits_covering_many(
        items=[(lane.distribution, lane.rows) for lane in lanes if lane.rows]
    )
    for lane in lanes:
        covered = coverage.get(lane.distribution.pk)
        if covered is None:
            continue
        skipped = covered.skipped
        for reason in set(skipped.values()):
            dropped = [row for row in lane.rows if skipped.get(row.pk) == reason]
            _close_rows(dropped, lease, MStatus.SKIPPED, reason)
            stats["skipped"] = stats.get("skipped", 0) + len(dropped)
        rows = [row for row in lane.rows if row.pk not in skipped]
        uncovered = [row for row in rows if row.pk not in covered]
        if uncovered:
            _close_rows(uncovered, lease, MStatus.FAILED, Message.REASON_NO_CREDITS)
            stats["failed"] += len(uncovered)
        lane.rows = [row for row in rows if row.pk in covered]


def _reclaim_lanes(lanes: list[Lane], lease: str) -> None:
    """Just before the hand-over: refresh the rows' lease (rows recovery took back meanwhile
    are dropped: see ``_reclaim``)."""
    owned = {row.pk for row in _reclaim([row for lane in lanes for row in lane.rows], lease)}
    for lane in lanes:
        lane.rows = [row for row in lane.rows if row.pk in owned]


def _handed_over_now(lanes: list[Lane]) -> dict[int, datetime]:
    """The moment the windows leave: each sender's refill starts again from it
    (``fairqueue.senders_handed_over``), until its answer (``fairqueue.senders_answered``)."""
    handed = fairqueue.senders_handed_over(
        senders=[(lane.sender_id, lane.rate) for lane in lanes if lane.sender_id and lane.rows],
        at=timezone.now(),
    )
    for lane in lanes:
        lane.handed = lane.handed or bool(lane.rows)
    return handed


async def _at(not_before: datetime | None, coroutine) -> tuple[datetime, list]:
    """A lane's requests, at their moment; with when their last answer came."""
    if not_before is not None:
        delay = not_before.timestamp() - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
    sent = await coroutine
    return timezone.now(), sent


async def _gather(coroutines: list) -> list:
    return await asyncio.gather(*coroutines)  # gathered inside the loop that runs them


def _outgoing(lane: Lane, lease: str) -> list:
    distribution = lane.distribution
    if distribution.channel == Distribution.Channel.EMAIL:
        return [_outgoing_email(distribution, row, lease) for row in lane.rows]
    sender = sender_identity(distribution, lane.account)
    callback = (
        status_callback_template(lane.provider.code) if lane.provider.wants_status_callback else ""
    )
    return [
        OutgoingSms(
            message_id=row.pk,
            to=row.address,
            sender=sender,
            body=row.body,
            status_callback=callback.format(row.pk) if callback else "",
        )
        for row in lane.rows
    ]


def _record_lanes(
    lanes: list[Lane], results: list[list[SendResult]], lease: str, stats: dict
) -> None:
    """Record every lane's results (one transaction), then act on them: opt-outs learnt from
    the providers' refusals, metrics, distributions stopped by an account-wide refusal, rows
    deferred."""
    answered = [(lane, result) for lane, result in zip(lanes, results, strict=True) if result]
    if not answered:
        return
    with transaction.atomic():
        _commit_without_flush()
        fatal = _record_all(
            [(lane.distribution, result) for lane, result in answered], lease, stats
        )
    _learn_from_refusals([result for _, lane_results in answered for result in lane_results])
    metrics.count(
        [
            item
            for lane, result in answered
            for item in metrics.outcome_counts(
                brand=lane.distribution.project.brand.slug,
                provider=lane.account.provider,
                results=result,
            )
        ]
    )
    for lane, result in answered:
        reason = fatal.get(lane.distribution.pk)
        if reason:
            _stop_distribution(lane.distribution, reason)
            continue
        retry = [r for r in result if r.outcome == Outcome.RETRY]
        if not retry:
            continue
        by_id = {row.pk: row for row in lane.rows}
        _defer(lane.distribution, [by_id[r.message_id] for r in retry], retry, lease, stats)
        if lane.sender_id is not None and any(r.throttled for r in retry):
            wait = max(r.retry_after or 0.0 for r in retry) or RETRY_BASE_SECONDS
            fairqueue.sender_pause(
                sender_id=lane.sender_id,
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


def _template_of(distribution: Distribution) -> str:
    if distribution.channel == Distribution.Channel.EMAIL:
        return " ".join([distribution.subject, distribution.message, distribution.text_body])
    return sms_template(distribution)


def _render_lanes(lanes: list[Lane]) -> None:
    """Render every row's body (creating personal links where the text asks for one): one
    query for the links that exist, one insert of the new ones, one update of the bodies."""
    wants_link = [lane for lane in lanes if "link" in piped_fields(_template_of(lane.distribution))]
    existing = (
        {
            link.message_id: link
            for link in SurveyLink.objects.filter(
                message_id__in=[row.pk for lane in wants_link for row in lane.rows]
            )
        }
        if wants_link
        else {}
    )
    links: list[SurveyLink] = []
    for lane in lanes:
        links += _render_rows(lane.distribution, lane.rows, existing)
    if links:
        SurveyLink.objects.bulk_create(links)
    update_rows(
        Message,
        ["body", "segments"],
        [(row.pk, row.body, row.segments) for lane in lanes for row in lane.rows],
    )


def _render_rows(distribution: Distribution, rows: list, existing: dict) -> list[SurveyLink]:
    """Render the rows' bodies; returns the personal links to create. An email's subject,
    HTML and text parts are kept on the row objects (``row.email``) for the send; its text
    part is stored as the row's body."""
    is_email = distribution.channel == Distribution.Channel.EMAIL
    text_template = ""
    if is_email:
        # The generated text part is made once from the template, not once per recipient.
        text_template = distribution.text_body.strip() or html_to_text(distribution.message)
    fields = set(piped_fields(_template_of(distribution)))
    links: list[SurveyLink] = []
    # Send policies (docs/policies.md): links expire; a reminder shares its invite's links.
    expires_at, shared = None, {}
    if "link" in fields:
        expires_at = link_expires_at(distribution, now=timezone.now())
        shared = shared_invite_links(
            distribution=distribution, participant_ids={row.participant_id for row in rows}
        )
    for row in rows:
        link_url = ""
        if "link" in fields:
            link = existing.get(row.pk) or shared.get(row.participant_id)
            if link is None:
                link = SurveyLink(
                    token=new_token(),
                    project_id=distribution.project_id,
                    participant_id=row.participant_id,
                    distribution_id=distribution.pk,
                    message_id=row.pk,
                    expires_at=expires_at,
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
        row.body = render(sms_template(distribution), values, metadata)
        row.segments = count_segments(row.body)
    return links


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


def _learn_from_refusals(results: list[SendResult]) -> None:
    """Opt-outs learnt from the providers' refusals: durable, each in its own transaction
    (after the batch's record: see optouts.guard)."""
    for result in results:
        if result.outcome != Outcome.REJECTED or not (result.blocked or result.suppress):
            continue

        message = Message.objects.select_related("distribution__project", "person").get(
            pk=result.message_id
        )
        if result.blocked:
            optout_record_provider(message=message)
        if result.suppress:
            optout_record_bounce(message=message, reason=result.error_message)


def _record_results(distribution, results: list[SendResult], lease: str, stats: dict) -> str:
    """Record one distribution's results (the caller's transaction); its fatal reason, if
    the provider refused the account."""
    return _record_all([(distribution, results)], lease, stats).get(distribution.pk, "")


def _record_all(items: list[tuple], lease: str, stats: dict) -> dict[int, str]:
    """Record what the providers answered for a batch's distributions, set-based: a few
    statements for the whole batch, whatever the number of distributions. Returns the
    distributions whose account the provider refused, with the reason."""
    now = timezone.now()
    accepted = [(d, [r for r in rs if r.outcome == Outcome.ACCEPTED]) for d, rs in items]
    sent_values = [
        (r.message_id, MStatus.SENT, now, now, r.provider_id) for _, rs in accepted for r in rs
    ]
    # A provider callback may have moved a row on already (it waits for this transaction
    # otherwise, under the row's lock): only rows still Sending become Sent, with an event.
    marked = set(
        update_rows_returning(
            Message,
            ["status", "sent_at", "status_changed_at", "provider_id"],
            sent_values,
            where="t.lease = %s AND t.status = %s",
            params=[lease, MStatus.SENDING],
        )
    )
    if marked:
        _record_sent_events(sorted(marked), lease, now)
    # Every accepted message is paid for, whatever its status now.
    credits_debit_many(items=[(d, [r.message_id for r in rs]) for d, rs in accepted if rs])
    stats["sent"] += len(sent_values)

    rejected = [(d, r) for d, rs in items for r in rs if r.outcome == Outcome.REJECTED]
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
            for _, r in rejected
        ],
        where="t.lease = %s AND t.status = %s",
        params=[lease, MStatus.SENDING],
    )
    events: list[MessageEvent] = []
    changes: dict[int, list[tuple[int, str]]] = {}
    for distribution, result in rejected:
        status = _rejected_status(result)
        reason = f"{result.error_code} {result.error_message}".strip()[:300]
        events.append(
            MessageEvent(
                message_id=result.message_id, status=status, at=now, source="worker", detail=reason
            )
        )
        changes.setdefault(distribution.pk, []).append((result.message_id, status))
        if result.bounced:
            stats["bounced"] = stats.get("bounced", 0) + 1
        else:
            stats["failed"] += 1
    fatal: dict[int, str] = {}
    for distribution, results in items:
        refused = next((r for r in results if r.outcome == Outcome.FATAL), None)
        if refused is None:
            continue
        ids = [r.message_id for r in results if r.outcome == Outcome.FATAL]
        reason = (
            "Not sent: the provider refused the account "
            f"({refused.error_code} {refused.error_message})"
        )[:300]
        Message.objects.filter(pk__in=ids, lease=lease, status=MStatus.SENDING).update(
            status=MStatus.FAILED,
            status_reason=reason,
            error_code=refused.error_code[:20],
            status_changed_at=now,
        )
        events += [
            MessageEvent(
                message_id=pk, status=MStatus.FAILED, at=now, source="worker", detail=reason
            )
            for pk in ids
        ]
        changes.setdefault(distribution.pk, []).extend((pk, MStatus.FAILED) for pk in ids)
        fatal[distribution.pk] = (
            f"the provider refused the account ({refused.error_code} {refused.error_message})"
        ).strip()
    MessageEvent.objects.bulk_create(events)
    for distribution, results in accepted:
        for result in results:
            if result.message_id in marked:
                changes.setdefault(distribution.pk, []).append((result.message_id, MStatus.SENT))
    _raise_status_changes(items, changes, now)
    return fatal


def _raise_status_changes(items: list[tuple], changes: dict[int, list], at) -> None:
    """Recipient status webhooks, for the brands that listen (one query to find them)."""
    brands = {d.pk: d.project.brand_id for d, _ in items}
    listening = brands_subscribed(
        event_type=EventType.RECIPIENT_STATUS_CHANGED,
        brand_ids={brands[pk] for pk, rows in changes.items() if rows},
    )
    for distribution_id, rows in changes.items():
        if rows and brands[distribution_id] in listening:
            recipient_statuses_raised(distribution_id=distribution_id, changes=rows, at=at)


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


def reconcile_range(*, distribution, provider: Provider, first_id=None, last_id=None) -> int:
    """Settle rows left in Sending longer than the lease (their worker died): Sent if the
    provider has them, Failed if they were handed over without a known answer (an email whose
    server reply never reached its worker: it may have been delivered, so it is not sent
    again), Pending again (to be sent) if the provider never got them. The provider is asked
    once for all of them (``find_handed_over``: Twilio lists the time range in pages), not
    once per row. Returns how many rows were settled."""
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
    handed = (
        provider.find_handed_over(
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
        else HandedOver(sent={})
    )
    found = handed.sent
    in_doubt = {pk: ref for pk, ref in handed.in_doubt.items() if pk not in found}
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
    failed = _fail_in_doubt(
        distribution, [row for row in rows if row["pk"] in in_doubt], now, stale_before
    )
    # Only rows whose lease is still stale now: a live task that refreshed it meanwhile
    # (``_reclaim``, ``LeaseKeeper``) is about to send them itself.
    reset = 0
    unsent = [row for row in rows if row["pk"] not in found and row["pk"] not in in_doubt]
    for lease in {row["lease"] for row in unsent}:
        ids = [row["pk"] for row in unsent if row["lease"] == lease]
        reset += Message.objects.filter(
            pk__in=ids, status=MStatus.SENDING, lease=lease, leased_at__lt=stale_before
        ).update(status=MStatus.PENDING, lease="", leased_at=None, due_at=now)
    if reset:
        distribution_enqueue(distribution=distribution)
    return len(marked) + len(failed) + reset


def _fail_in_doubt(distribution, rows: list[dict], now, stale_before) -> list[int]:
    """Rows handed over whose answer never reached their worker: Failed, as a timeout after
    the content is (``Outcome.REJECTED``, code ``unknown``), never sent again and, like it,
    not debited. Only rows still Sending under the same, still stale, lease."""
    failed: list[int] = []
    for lease in {row["lease"] for row in rows}:
        failed += update_rows_returning(
            Message,
            ["status", "status_reason", "error_code", "status_changed_at"],
            [
                (row["pk"], MStatus.FAILED, IN_DOUBT_REASON, "unknown", now)
                for row in rows
                if row["lease"] == lease
            ],
            where="t.status = %s AND t.lease = %s AND t.leased_at < %s",
            params=[MStatus.SENDING, lease, stale_before],
            casts={"status_changed_at": "timestamptz"},
        )
    if failed:
        MessageEvent.objects.bulk_create(
            [
                MessageEvent(
                    message_id=pk,
                    status=MStatus.FAILED,
                    at=now,
                    source="reconcile",
                    detail=IN_DOUBT_REASON,
                )
                for pk in failed
            ]
        )
        recipient_statuses_raised(
            distribution_id=distribution.pk,
            changes=[(pk, MStatus.FAILED) for pk in failed],
            at=now,
        )
    return failed


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


def distributions_recover(*, now=None, suspect_before: float | None = None) -> dict:
    """The safety net (beat every 5 s, a worker's start): settle stale Sending rows with the
    provider, put distributions with Pending rows back in the fair queue, kick pumps, finish
    what is done.

    After a worker died (a replacement started, or pump slots lapsed), rows may be held by
    the dead worker until their lease lapses: ``suspect_before`` (Unix time) names rows
    leased before then, and recovery runs again the moment the oldest of them lapses, and so
    on until none is left (beat's period would otherwise add up to 5 s). A dead worker's pump
    slots are claimed again when they lapse, likewise.
    """
    now = now or timezone.now()
    stats = {"reconciled": 0, "requeued": 0, "finished": 0}
    if fairqueue.pumps_lapsed(now=now):
        suspect_before = max(suspect_before or 0.0, now.timestamp())
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
        if suspect_before is not None:
            oldest = (
                Message.objects.filter(
                    distribution=distribution,
                    status=MStatus.SENDING,
                    leased_at__lte=datetime.fromtimestamp(suspect_before, UTC),
                )
                .order_by("leased_at")
                .values_list("leased_at", flat=True)
                .first()
            )
            if oldest is not None:
                stale_at = oldest + timedelta(seconds=lease_seconds())
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
            _recover_again_at(lapse, suspect_before)
    if soonest_stale is not None:
        _recover_again_at(soonest_stale, suspect_before)
    return stats


RECOVER_GENERATION_KEY = "relay:recover-generation"


def recoveries_forget_scheduled() -> None:
    """A worker starts: forget which recovery runs were asked for (``_recover_again_at``).

    The worker it replaces may have held them: a killed worker's countdown tasks come back
    only after the broker's visibility timeout, and a purge drops them, while their keys
    would turn away every later request for those seconds. A run whose worker is alive
    merely runs twice; recovery is idempotent."""
    cache.set(RECOVER_GENERATION_KEY, new_token(8), timeout=None)


def _recover_again_at(when, suspect_before: float | None) -> None:
    """Run recovery again just after ``when`` (a lease or a pump's claim lapses): once per
    second, however many runs ask for it. The run for a second starts after that second has
    ended, so that it finds stale everything that lapses within it: a run that started in the
    second may still ask for a lease that lapses later in it (taking it back at once rather
    than at beat's next run or a pump slot's lapse, 5-10 s later)."""
    second = math.ceil(when.timestamp())
    generation = cache.get(RECOVER_GENERATION_KEY, "")
    if not cache.add(f"relay:recover-at:{generation}:{second}", 1, timeout=300):
        return
    delay = max(0.5, second - time.time() + 0.5)
    task_queue(
        "distributions.tasks.distributions_recover_task",
        countdown=delay,
        suspect_before=suspect_before,
    )
