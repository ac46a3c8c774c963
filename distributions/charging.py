"""What one distribution's sends cost, through the credits ledger: reserve at start, cover a
leased chunk before it is sent, debit what the provider accepted, release at the end, settle
what a stopped distribution left open; and the estimate shown before scheduling.

These read recipient rows, so they live with the engine; ``credits`` keeps the ledger, rates,
segment counting and the estimate of a queryset it is given, and never imports
distributions (docs/architecture.md, docs/credits.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, OuterRef, Q
from django.utils import timezone

from brands.models import Brand
from core.bulk import insert_rows
from credits.estimate import estimate_cost, link_placeholder, opt_out_placeholder
from credits.lock_objects import credit_account_lock, credit_accounts_lock
from credits.models import ZERO, CreditEntry, CreditHold, CreditReservation
from credits.rates import RateTable, disabled_reason, phone_country, quantize, rate_table
from credits.segments import count_segments, normalize_line_breaks
from credits.selectors import credits_balance
from credits.services import (
    account_figures,
    accounts_available,
    holds_total,
    plain_amount,
    reservation_held,
    reservation_pools,
)
from distributions.audiences import recipients_queryset
from distributions.conditions import conditions_clean
from distributions.models import Distribution, Message
from distributions.two_way import sms_template
from optouts.links import opt_out_url
from optouts.selectors import optout_active_exists
from participants.rendering import piped_fields, recipient_values, render
from participants.selectors import metadata_spellings
from projects.models import Project
from surveys.sms import sms_followup_texts

logger = logging.getLogger(__name__)
Kind = CreditEntry.Kind
Mode = Distribution.Mode

MStatus = Message.Status


# Rows per INSERT of credit entries and holds (a send chunk is at most 1,000 messages).
HOLD_BATCH = 1000


HOLD_COLUMNS = (
    "message_id",
    "reservation_id",
    "country",
    "segments",
    "rate",
    "cost",
    "created_at",
)


# Closed without being handed to the provider: a hold on such a message goes back to the pool.
CLOSED_UNSENT = (
    MStatus.FAILED,
    MStatus.BLOCKED,
    MStatus.SKIPPED,
    MStatus.SKIPPED_OPTOUT,
    MStatus.SKIPPED_FREQUENCY,
    MStatus.DUPLICATED,
)


def _open_reservation(distribution: Distribution) -> CreditReservation:
    """The distribution's reservation; one with nothing reserved if it started without one."""
    reservation = CreditReservation.objects.filter(distribution=distribution).first()
    if reservation is not None:
        return reservation
    brand = distribution.project.brand
    with transaction.atomic():
        credit_account_lock(brand_id=brand.pk)
        reservation, _ = CreditReservation.objects.get_or_create(
            distribution=distribution,
            defaults={
                "brand": brand,
                "project_id": distribution.project_id,
                "self_service": brand.is_self_service,
            },
        )
    return reservation


def distribution_reserve(*, distribution: Distribution) -> CreditReservation | None:
    """Reserve the estimated cost of the distribution's Pending rows (once; SMS only).

    Runs inside the materialisation transaction. Reserves at most what is available: what
    the reservation cannot cover is refused chunk by chunk when sending, and the distribution
    ends Interrupted. A self-service brand gets a reservation without credits (its usage is
    still recorded).
    """
    if distribution.channel != Distribution.Channel.SMS:
        return None
    brand = distribution.project.brand
    pending = Message.objects.filter(distribution=distribution, status=MStatus.PENDING)
    last_id = pending.aggregate(last=Max("pk"))["last"]
    table = rate_table()
    estimate = estimate_cost(
        pending,
        template=sms_template(distribution),
        rates=table,
        phone_path="address",
        person_prefix="person__",
        participant_prefix="participant__",
        opt_out_link=opt_out_placeholder(last_id) if last_id else None,
    )
    self_service = brand.is_self_service
    with transaction.atomic():
        account = credit_account_lock(brand_id=brand.pk)
        existing = CreditReservation.objects.filter(distribution=distribution).first()
        if existing is not None:
            return existing
        _settle_finished(brand_id=brand.pk)
        reservation = CreditReservation.objects.create(
            brand=brand,
            distribution=distribution,
            project_id=distribution.project_id,
            self_service=self_service,
            estimate=estimate.credits,
            rates=table.snapshot(estimate.countries),
        )
        if self_service:
            return reservation
        available = account_figures(account, checkpoint=True).available
        amount = min(estimate.credits, max(available, ZERO))
        if amount > 0:
            short = ""
            if amount != estimate.credits:
                short = f"; only {plain_amount(amount)} were available"
            CreditEntry.objects.create(
                brand=brand,
                kind=Kind.RESERVE,
                held=amount,
                reservation=reservation,
                distribution=distribution,
                project_id=distribution.project_id,
                note=(
                    f"Estimate for {estimate.recipients} recipients, {estimate.segments} "
                    f"segments: {plain_amount(estimate.credits)} credits{short}."
                )[:300],
            )
    return reservation


class Coverage(set):
    """Message ids the credits cover; ``skipped`` maps ids not to send to the reason why."""

    def __init__(self, ids=(), skipped: dict[int, str] | None = None):
        super().__init__(ids)
        self.skipped = dict(skipped or {})


@dataclass(frozen=True)
class RowCost:
    country: str
    segments: int
    rate: Decimal
    cost: Decimal


def _segments_as_sent(distribution: Distribution, row, fields: set[str]) -> int:
    """The segments of the text this row will be sent with (before it is rendered).

    Rendered like ``distributions.sending._render`` from the same loaded person and
    participant; the personal link is replaced by a string of its exact length and alphabet,
    the opt-out link is the real one (it depends only on the message id).
    """
    values, metadata = recipient_values(
        person=row.person,
        participant=row.participant,
        link=link_placeholder() if "link" in fields else "",
        opt_out_link=opt_out_url(row.pk) if "opt_out_link" in fields else "",
    )
    return count_segments(render(sms_template(distribution), values, metadata))


def _row_costs(
    distribution: Distribution, rows: list, table: RateTable
) -> tuple[dict[int, RowCost], dict[int, str]]:
    fields = set(piped_fields(sms_template(distribution)))
    costs: dict[int, RowCost] = {}
    skipped: dict[int, str] = {}
    for row in rows:
        country = phone_country(row.address)
        if not table.enabled(country):
            skipped[row.pk] = disabled_reason(country)
            continue
        segments = _segments_as_sent(distribution, row, fields)
        rate = table.rate(country)
        costs[row.pk] = RowCost(country, segments, rate, quantize(rate * segments))
    return costs, skipped


def _drop_stale_holds(reservation: CreditReservation) -> int:
    """Holds of messages closed without being handed over go back to the reservation."""
    return _drop_stale_holds_of([reservation.pk])


def _drop_stale_holds_of(reservation_ids: list[int]) -> int:
    """Runs with every batch's cover, so it starts from the reservations' holds (the rows in
    flight, by their index) and looks up only those messages: one statement that joined
    first would let PostgreSQL start from every closed unsent message of the database (a
    cancelled distribution's 100,000 rows: 0.3-1 s a batch, measured in the fairness bench)."""
    held = list(
        CreditHold.objects.filter(reservation_id__in=reservation_ids).values_list(
            "message_id", flat=True
        )
    )
    if not held:
        return 0
    stale = Message.objects.filter(
        pk__in=held, status__in=CLOSED_UNSENT, sent_at__isnull=True, provider_id=""
    ).values_list("pk", flat=True)
    closed = list(stale)
    if not closed:
        return 0
    return CreditHold.objects.filter(message_id__in=closed).delete()[0]


def _open_reservations(distributions: list[Distribution]) -> dict[int, CreditReservation]:
    """Each distribution's reservation (one query; one made for any that started without)."""
    found = {
        reservation.distribution_id: reservation
        for reservation in CreditReservation.objects.filter(
            distribution_id__in=[distribution.pk for distribution in distributions]
        )
    }
    for distribution in distributions:
        if distribution.pk not in found:
            found[distribution.pk] = _open_reservation(distribution)
    return found


def distribution_cover(*, distribution: Distribution, messages) -> Coverage:
    """Decide which of a leased window's rows may be sent, and hold their exact cost
    (``distributions_cover`` for one distribution)."""
    return distributions_cover(items=[(distribution, list(messages))])[distribution.pk]


def distributions_cover(*, items: list[tuple[Distribution, list]]) -> dict[int, Coverage]:
    """Decide which rows of a send batch may be sent, and hold their exact cost: one
    transaction for every distribution of the batch (their brands' accounts locked together,
    in primary-key order).

    Each row's cost is its country's rate times the segments of its own rendered text. A
    distribution's rows are covered in id order while their cost fits in its reservation
    not yet held for other messages plus its brand's available credits (shared by the
    brand's distributions in the batch); what comes from the latter is reserved first (a
    top-up). A row already held (sent again after a retry or a worker restart) keeps its
    hold. Rows in a disabled country are in ``skipped``, not covered. Rows: ``Message``
    instances or the send's ``LeasedRow`` objects (pk, address, person, participant).
    """
    result: dict[int, Coverage] = {}
    sms: list[tuple[Distribution, list]] = []
    for distribution, rows in items:
        if not rows:
            result[distribution.pk] = Coverage()
        elif distribution.channel != Distribution.Channel.SMS:
            result[distribution.pk] = Coverage(row.pk for row in rows)
        else:
            sms.append((distribution, rows))
    if not sms:
        return result
    reservations = _open_reservations([distribution for distribution, _ in sms])
    table = rate_table()
    paid = []
    for distribution, rows in sms:
        reservation = reservations[distribution.pk]
        costs, skipped = _row_costs(distribution, rows, table.with_snapshot(reservation.rates))
        if reservation.self_service:
            result[distribution.pk] = Coverage(costs, skipped)
        else:
            paid.append((distribution, reservation, costs, skipped))
    if not paid:
        return result
    reservation_ids = [reservation.pk for _, reservation, _, _ in paid]
    with transaction.atomic():
        accounts = credit_accounts_lock(brand_ids=[r.brand_id for _, r, _, _ in paid])
        _drop_stale_holds_of(reservation_ids)
        already = set(
            CreditHold.objects.filter(
                message_id__in=[pk for _, _, costs, _ in paid for pk in costs]
            ).values_list("message_id", flat=True)
        )
        pools = reservation_pools([reservation for _, reservation, _, _ in paid], checkpoint=True)
        available = accounts_available(accounts)
        new: list[tuple] = []  # CreditHold rows, in HOLD_COLUMNS order
        top_ups: list[CreditEntry] = []
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        for distribution, reservation, costs, skipped in paid:
            pool = pools[reservation.pk]
            budget = pool + available[reservation.brand_id]
            covered: set[int] = set()
            need, added = ZERO, 0
            for pk in sorted(costs):
                if pk in already:
                    covered.add(pk)
                    continue
                cost = costs[pk]
                if cost.cost <= budget:
                    budget -= cost.cost
                    need += cost.cost
                    added += 1
                    covered.add(pk)
                    new.append(
                        (pk, reservation.pk, cost.country, cost.segments, cost.rate, cost.cost, now)
                    )
            top_up = need - pool
            if added and top_up > 0:
                available[reservation.brand_id] -= top_up
                top_ups.append(
                    CreditEntry(
                        brand_id=reservation.brand_id,
                        kind=Kind.RESERVE,
                        held=top_up,
                        reservation=reservation,
                        distribution=distribution,
                        project_id=distribution.project_id,
                        note="Top-up: these messages cost more than the reservation had left.",
                    )
                )
            result[distribution.pk] = Coverage(covered, skipped)
        CreditEntry.objects.bulk_create(top_ups)
        insert_rows(CreditHold, HOLD_COLUMNS, new)
    return result


def messages_debit(*, distribution: Distribution, message_ids) -> int:
    """Debit messages the provider accepted, at their exact cost (``messages_debit_many``
    for one distribution). Returns rows written."""
    return messages_debit_many(items=[(distribution, message_ids)])


def messages_debit_many(*, items: list[tuple[Distribution, list[int]]]) -> int:
    """Debit messages the provider accepted, at their exact cost: one transaction for every
    distribution of a send batch. Returns rows written.

    Idempotent: a message already debited is left alone (and the unique constraint would
    refuse a second debit anyway). A self-service brand's messages are recorded as usage
    (amount 0) without touching any balance.
    """
    wanted = [
        (distribution, sorted({int(pk) for pk in ids}))
        for distribution, ids in items
        if distribution.channel == Distribution.Channel.SMS
    ]
    wanted = [(distribution, ids) for distribution, ids in wanted if ids]
    if not wanted:
        return 0
    reservations = _open_reservations([distribution for distribution, _ in wanted])
    paid, usage = [], []
    for distribution, ids in wanted:
        reservation = reservations[distribution.pk]
        (usage if reservation.self_service else paid).append((distribution, reservation, ids))
    written = _record_usage_many(usage)
    if not paid:
        return written
    with transaction.atomic():
        credit_accounts_lock(brand_ids=[reservation.brand_id for _, reservation, _ in paid])
        exact = set(_debit_held_exactly_many([pk for _, _, ids in paid for pk in ids]))
        if exact:
            CreditHold.objects.filter(message_id__in=exact).delete()
        written += len(exact)
        for distribution, reservation, ids in paid:
            rest = [pk for pk in ids if pk not in exact]
            if rest:
                written += _debit_computed(distribution, reservation, rest)
        # Messages that were in flight when their distribution was stopped: its reservation
        # was kept open for them, and closes now.
        for reservation in CreditReservation.objects.filter(
            pk__in=[reservation.pk for _, reservation, _ in paid],
            closed_at__isnull=True,
            distribution__status__in=Distribution.FINISHED,
        ).select_related("distribution"):
            _release_locked(reservation)
    return written


def _entry_for(
    distribution: Distribution | None,
    reservation: CreditReservation,
    row: dict,
    *,
    kind: str,
    country: str,
    segments: int,
    rate: Decimal,
    amount: Decimal,
    held: Decimal,
    now,
) -> CreditEntry:
    return CreditEntry(
        brand_id=reservation.brand_id,
        kind=kind,
        amount=amount,
        held=held,
        reservation=reservation,
        distribution_id=distribution.pk if distribution is not None else None,
        project_id=reservation.project_id,
        message_id=row["pk"],
        country=country,
        segments=segments,
        rate=rate,
        created_at=now,
    )


def _message_rows(ids: list[int]) -> list[dict]:
    return list(Message.objects.filter(pk__in=ids).values("pk", "address", "segments", "body"))


def _debit_held_exactly(
    distribution: Distribution | None, reservation: CreditReservation, ids: list[int]
) -> list[int]:
    """The usual case in one statement: a message whose hold is for the segments it was sent
    with costs exactly what was held, all of it from the reservation. Returns the message
    ids debited; the rest (no hold, other segments, already debited) is left to the caller.
    """
    entry, hold, message = (
        connection.ops.quote_name(model._meta.db_table)
        for model in (CreditEntry, CreditHold, Message)
    )
    if len(ids) > HOLD_BATCH:
        return [
            pk
            for start in range(0, len(ids), HOLD_BATCH)
            for pk in _debit_held_exactly(
                distribution, reservation, ids[start : start + HOLD_BATCH]
            )
        ]
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {entry} (brand_id, kind, amount, held, reservation_id, distribution_id,
                project_id, message_id, country, segments, rate, actor_id, note,
                idempotency_key, created_at)
            SELECT %s, %s, -h.cost, -h.cost, %s, %s, %s, h.message_id, h.country, h.segments,
                h.rate, NULL, '', '', %s
            FROM {hold} h JOIN {message} m ON m.id = h.message_id
            WHERE h.message_id IN ({marks}) AND (m.segments = h.segments OR m.segments = 0)
              AND NOT EXISTS (
                SELECT 1 FROM {entry} e WHERE e.message_id = h.message_id AND e.kind IN (%s, %s)
              )
            RETURNING message_id
            """,  # noqa: S608 - table names are ours, values are bound
            [
                reservation.brand_id,
                Kind.DEBIT,
                reservation.pk,
                distribution.pk if distribution is not None else None,
                reservation.project_id,
                timezone.now(),
                *ids,
                *CreditEntry.PER_MESSAGE,
            ],
        )
        return [row[0] for row in cursor.fetchall()]


def _debit_held_exactly_many(ids: list[int]) -> list[int]:
    """``_debit_held_exactly`` for messages of any distributions at once (their reservations
    give each entry its brand, project and distribution). Returns the message ids debited."""
    if not ids:
        return []
    entry, hold, message, reservation = (
        connection.ops.quote_name(model._meta.db_table)
        for model in (CreditEntry, CreditHold, Message, CreditReservation)
    )
    debited: list[int] = []
    now = timezone.now()
    for start in range(0, len(ids), HOLD_BATCH):
        batch = ids[start : start + HOLD_BATCH]
        marks = ", ".join(["%s"] * len(batch))
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {entry} (brand_id, kind, amount, held, reservation_id,
                    distribution_id, project_id, message_id, country, segments, rate, actor_id,
                    note, idempotency_key, created_at)
                SELECT r.brand_id, %s, -h.cost, -h.cost, r.id, r.distribution_id, r.project_id,
                    h.message_id, h.country, h.segments, h.rate, NULL, '', '', %s
                FROM {hold} h JOIN {message} m ON m.id = h.message_id
                    JOIN {reservation} r ON r.id = h.reservation_id
                WHERE h.message_id IN ({marks}) AND (m.segments = h.segments OR m.segments = 0)
                  AND NOT EXISTS (
                    SELECT 1 FROM {entry} e
                    WHERE e.message_id = h.message_id AND e.kind IN (%s, %s)
                  )
                RETURNING message_id
                """,  # noqa: S608 - table names are ours, values are bound
                [Kind.DEBIT, now, *batch, *CreditEntry.PER_MESSAGE],
            )
            debited += [row[0] for row in cursor.fetchall()]
    return debited


def _debit_locked(
    distribution: Distribution | None, reservation: CreditReservation, ids: list[int]
) -> int:
    """The debit itself; the caller holds the brand's account lock."""
    exact = _debit_held_exactly(distribution, reservation, ids)
    if exact:
        CreditHold.objects.filter(message_id__in=exact).delete()
        if len(exact) == len(ids):
            return len(exact)
        debited = set(exact)
        ids = [pk for pk in ids if pk not in debited]
    return len(exact) + _debit_computed(distribution, reservation, ids)


def _debit_computed(
    distribution: Distribution | None, reservation: CreditReservation, ids: list[int]
) -> int:
    """Messages without a hold for their segments: cost from the rate card, row by row."""
    done = set(
        CreditEntry.objects.filter(message_id__in=ids, kind__in=CreditEntry.PER_MESSAGE)
        .values_list("message_id", flat=True)
        .order_by()
    )
    todo = [pk for pk in ids if pk not in done]
    if not todo:
        return 0
    holds = {hold.message_id: hold for hold in CreditHold.objects.filter(message_id__in=todo)}
    table = rate_table().with_snapshot(reservation.rates)
    pool: Decimal | None = None  # the reservation's credits not held for a message, if needed
    now = timezone.now()
    entries = []
    for row in _message_rows(todo):
        hold = holds.get(row["pk"])
        country = hold.country if hold else phone_country(row["address"])
        rate = hold.rate if hold else table.rate(country)
        segments = row["segments"] or (hold.segments if hold else count_segments(row["body"]))
        cost = quantize(rate * segments)
        held_for_it = hold.cost if hold else ZERO
        if cost <= held_for_it:
            from_reservation = cost
        else:
            # Not expected (the cover holds the exact cost): take the difference from what
            # the reservation has left; anything beyond is taken from the balance.
            if pool is None:
                pool = reservation_held(reservation) - holds_total(reservation)
            extra = min(cost - held_for_it, max(pool, ZERO))
            pool -= extra
            from_reservation = held_for_it + extra
            logger.warning(
                "credits: message %s cost %s but %s was held for it", row["pk"], cost, held_for_it
            )
        entries.append(
            _entry_for(
                distribution,
                reservation,
                row,
                kind=Kind.DEBIT,
                country=country,
                segments=segments,
                rate=rate,
                amount=-cost,
                held=-from_reservation,
                now=now,
            )
        )
    CreditEntry.objects.bulk_create(entries, batch_size=HOLD_BATCH)
    CreditHold.objects.filter(message_id__in=[entry.message_id for entry in entries]).delete()
    return len(entries)


def _record_usage(
    distribution: Distribution, reservation: CreditReservation, ids: list[int]
) -> int:
    """Self-service: one usage row per message (no balance, so no lock is needed)."""
    return _record_usage_many([(distribution, reservation, ids)])


def _record_usage_many(items: list[tuple[Distribution, CreditReservation, list[int]]]) -> int:
    """``_record_usage`` for several distributions at once (one query of each kind)."""
    ids = [pk for _, _, message_ids in items for pk in message_ids]
    if not ids:
        return 0
    done = set(
        CreditEntry.objects.filter(message_id__in=ids, kind__in=CreditEntry.PER_MESSAGE)
        .values_list("message_id", flat=True)
        .order_by()
    )
    rows = {row["pk"]: row for row in _message_rows([pk for pk in ids if pk not in done])}
    table = rate_table()
    now = timezone.now()
    entries = []
    for distribution, reservation, message_ids in items:
        rates = table.with_snapshot(reservation.rates)
        for pk in message_ids:
            row = rows.get(pk)
            if row is None:
                continue
            country = phone_country(row["address"])
            segments = row["segments"] or count_segments(row["body"])
            entries.append(
                _entry_for(
                    distribution,
                    reservation,
                    row,
                    kind=Kind.USAGE,
                    country=country,
                    segments=segments,
                    rate=rates.rate(country),
                    amount=ZERO,
                    held=ZERO,
                    now=now,
                )
            )
    CreditEntry.objects.bulk_create(entries, batch_size=HOLD_BATCH, ignore_conflicts=True)
    return len(entries)


def distribution_release(*, distribution: Distribution) -> Decimal:
    """Settle a finished distribution: debit what was handed over but not yet debited, then
    release what its reservation holds for nothing. Idempotent. Returns the credits released.
    """
    reservation = CreditReservation.objects.filter(distribution=distribution).first()
    if reservation is None or reservation.closed_at is not None:
        return ZERO
    with transaction.atomic():
        credit_account_lock(brand_id=reservation.brand_id)
        reservation.refresh_from_db()
        if reservation.closed_at is not None:
            return ZERO
        return _release_locked(reservation)


def _release_locked(reservation: CreditReservation) -> Decimal:
    """The caller holds the account lock. Messages still being sent keep their holds (the
    reservation stays open until they are settled)."""
    distribution = reservation.distribution
    handed_over = CreditHold.objects.filter(reservation=reservation).filter(
        Q(message__sent_at__isnull=False)
        | ~Q(message__provider_id="")
        | Q(message__status__in=Message.HANDED_OVER)
    )
    late = list(handed_over.values_list("message_id", flat=True))
    if late:
        logger.info("credits: debiting %s handed-over messages at release", len(late))
        _debit_locked(distribution, reservation, late)
    _drop_stale_holds(reservation)
    if distribution is None:
        # Its distribution was deleted: nothing will be sent for the remaining holds.
        CreditHold.objects.filter(reservation=reservation).delete()
    elif distribution.status in Distribution.FINISHED:
        # Rows of a stopped distribution left Sending with an unknown outcome are never
        # reconciled (only running distributions are): they will never be debited either.
        stale_before = timezone.now() - timedelta(seconds=settings.RELAY_SEND_LEASE_SECONDS)
        CreditHold.objects.filter(
            reservation=reservation,
            message__status=MStatus.SENDING,
            message__leased_at__lt=stale_before,
        ).delete()
    in_flight = holds_total(reservation)
    unused = reservation_held(reservation) - in_flight
    if unused > 0:
        CreditEntry.objects.create(
            brand_id=reservation.brand_id,
            kind=Kind.RELEASE,
            held=-unused,
            reservation=reservation,
            distribution=distribution,
            project_id=reservation.project_id,
            note="Released: reserved but not used (skipped, failed before sending, or stopped).",
        )
    if not CreditHold.objects.filter(reservation=reservation).exists():
        CreditReservation.objects.filter(pk=reservation.pk).update(closed_at=timezone.now())
        reservation.closed_at = timezone.now()
    return max(unused, ZERO)


def _finished_open_reservations(brand_id: int):
    return CreditReservation.objects.filter(brand_id=brand_id, closed_at__isnull=True).filter(
        Q(distribution__isnull=True) | Q(distribution__status__in=Distribution.FINISHED)
    )


def _settle_finished(*, brand_id: int) -> int:
    """Release reservations of distributions that ended without releasing (the caller holds
    the account lock): a distribution stopped while sending, or deleted."""
    settled = 0
    for reservation in _finished_open_reservations(brand_id).select_related("distribution"):
        _release_locked(reservation)
        settled += 1
    return settled


def reservations_settle(*, brand: Brand) -> int:
    """Settle the brand's finished distributions' reservations, if any (cheap when none)."""
    if not _finished_open_reservations(brand.pk).exists():
        return 0
    with transaction.atomic():
        credit_account_lock(brand_id=brand.pk)
        return _settle_finished(brand_id=brand.pk)


def credits_estimate(
    *,
    project: Project,
    message: str,
    conditions: list | None,
    kind: str = "invite",
    parent=None,
    mode: str = Distribution.Mode.LINK,
    audience: str = "",
) -> dict:
    """The cost of sending ``message`` to the participants ``conditions`` select, before
    scheduling, as the schedule page, the API's estimate and the affordability check see it:
    the participants the settings select now (with a phone number, not opted out, one per
    number), by country, and the brand's available credits. Invalid conditions raise
    ValidationError (as scheduling would)."""

    brand = project.brand
    draft = Distribution(
        project=project,
        kind=kind,
        parent=parent,
        audience=audience,
        conditions=conditions_clean(conditions),
        channel=Distribution.Channel.SMS,
        mode=mode,
        message=normalize_line_breaks(message or ""),
    )
    # As materialisation does: one recipient per number, none for a number that opted out.
    queryset = recipients_queryset(draft).exclude(
        optout_active_exists(
            brand_id=brand.pk, channel="sms", address_ref=OuterRef("person__phone")
        )
    )
    estimate = estimate_cost(
        queryset,
        template=sms_template(draft),
        rates=rate_table(),
        phone_path="person__phone",
        person_prefix="person__",
        participant_prefix="",
        one_per_number=True,
        spellings=metadata_spellings(project_id=project.pk),
    )
    self_service = brand.is_self_service
    available = None if self_service else credits_balance(brand=brand).available
    credits = ZERO if self_service else estimate.credits
    return {
        "recipients": estimate.recipients,
        "segments": estimate.segments,
        "segments_per_message": estimate.max_segments,
        "credits": credits,
        "available": available,
        "covered": True if self_service else credits <= available,
        "shortfall": ZERO if self_service else max(credits - available, ZERO),
        "skipped": estimate.skipped,
        "by_country": [
            {**cost.as_dict(), "credits": ZERO if self_service else cost.credits}
            for cost in estimate.by_country.values()
        ],
        "self_service": self_service,
        "two_way": two_way_estimate(project=project) if draft.mode == Mode.TWO_WAY else None,
    }


def two_way_estimate(*, project: Project) -> dict:
    """What a two-way conversation adds per respondent who answers every question: the
    follow-up texts (each later question, then the thank-you) and one inbound reply per
    question, each priced by the rate card of the recipient's country (docs/two-way.md)."""
    questions = list(project.questions.all())
    texts = sms_followup_texts(questions)
    return {
        "questions": len(questions),
        "outbound_texts": len(texts),
        "outbound_segments": sum(count_segments(text) for text in texts),
        "inbound_replies": len(questions),
    }


def reservations_settle_all() -> int:
    """Settle every brand's finished distributions' reservations (the periodic backstop)."""
    brand_ids = (
        CreditReservation.objects.filter(closed_at__isnull=True)
        .filter(Q(distribution__isnull=True) | Q(distribution__status__in=Distribution.FINISHED))
        .values_list("brand_id", flat=True)
        .distinct()
    )
    settled = 0
    for brand_id in list(brand_ids):
        with transaction.atomic():
            credit_account_lock(brand_id=brand_id)
            settled += _settle_finished(brand_id=brand_id)
    return settled
