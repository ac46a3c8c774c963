"""Writes of credits: grants, and the reservation → cover → debit → release cycle of a send.

What callers can rely on (``docs/credits.md`` tells why it holds):

* every ledger row of a brand is written while that brand's ``CreditAccount`` row is locked
  (``credits.lock_objects``), so the checks below see every earlier write;
* **available = balance - reserved never goes below zero**, and so neither does the balance:
  a reservation, a top-up and a hold take at most what is available, and a message can only
  be sent once its exact cost is held for it (``distribution_cover``);
* a message is debited at most once (unique constraint) and, once handed to the provider,
  at least once: ``distribution_release`` debits a handed-over message whose worker died
  before debiting it;
* what a distribution reserved and did not use is released when it finishes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Sum

from brands.models import Brand
from credits.lock_objects import credit_account_lock
from credits.models import (
    AMOUNT_DIGITS,
    AMOUNT_PLACES,
    ZERO,
    CreditAccount,
    CreditEntry,
    CreditHold,
    CreditReservation,
)
from credits.rates import quantize

logger = logging.getLogger(__name__)

Kind = CreditEntry.Kind
MAX_AMOUNT = Decimal(10) ** (AMOUNT_DIGITS - AMOUNT_PLACES - 1)  # 1,000,000,000 credits
# Accounts and reservations cache the sums of the ledger up to an entry; the checkpoint moves
# forward once this many entries were added after it (a balance then sums at most this many
# rows, plus a batch's: a send batch of 50 brands' one-message windows summed 4,900 rows in
# 6-7 ms with 200 here).
CHECKPOINT_EVERY = 50


# --- amounts ----------------------------------------------------------------------------------
def plain_amount(amount: Decimal) -> str:
    """12.5000 -> "12.5" (for notes people read)."""
    return f"{amount.normalize():f}"


def parse_amount(value, *, allow_negative: bool = False, field: str = "amount") -> Decimal:
    """A number of credits: finite, not zero, at most 4 decimals, not negative unless allowed.

    Raises ValidationError({field: ...}) with a message a person can act on.
    """
    if isinstance(value, bool) or value is None:
        raise ValidationError({field: "Enter a number of credits."})
    text = str(value).strip()
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError) as exc:
        raise ValidationError({field: f"'{text[:40]}' is not a number."}) from exc
    if not amount.is_finite():
        raise ValidationError({field: "Enter a finite number of credits."})
    if amount == 0:
        raise ValidationError({field: "Enter a number of credits other than zero."})
    if amount < 0 and not allow_negative:
        raise ValidationError({field: "Credits to add must be a positive number."})
    if abs(amount) >= MAX_AMOUNT:  # first: quantizing a huge number raises InvalidOperation
        raise ValidationError({field: f"Enter less than {MAX_AMOUNT:,.0f} credits."})
    if amount != quantize(amount):
        raise ValidationError({field: f"Use at most {AMOUNT_PLACES} decimal places."})
    return amount


# --- the brand's figures, under its lock ---------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    balance: Decimal
    reserved: Decimal

    @property
    def available(self) -> Decimal:
        return self.balance - self.reserved


def account_figures(account: CreditAccount, *, checkpoint: bool = False) -> Figures:
    """Balance and reserved credits: the account's prefix sums plus the entries after them.

    With ``checkpoint`` (only under the account's lock) the prefix moves forward when many
    entries were added after it.
    """
    tail = _tail_sums("brand_id", [(account.brand_id, account.summed_upto_id)]).get(
        account.brand_id, EMPTY_TAIL
    )
    balance = account.summed_amount + tail.amount
    reserved = account.summed_held + tail.held
    if checkpoint and tail.count >= CHECKPOINT_EVERY:
        CreditAccount.objects.filter(pk=account.pk).update(
            summed_upto_id=tail.last, summed_amount=balance, summed_held=reserved
        )
        account.summed_upto_id, account.summed_amount, account.summed_held = (
            tail.last,
            balance,
            reserved,
        )
    return Figures(balance=balance, reserved=reserved)


def reservation_held(reservation: CreditReservation) -> Decimal:
    """What the reservation holds (its checkpoint plus the entries after it)."""
    tail = _tail_sums("reservation_id", [(reservation.pk, reservation.summed_upto_id)])
    return reservation.summed_held + tail.get(reservation.pk, EMPTY_TAIL).held


def holds_total(reservation: CreditReservation) -> Decimal:
    return CreditHold.objects.filter(reservation=reservation).aggregate(s=Sum("cost"))["s"] or ZERO


# --- grants ------------------------------------------------------------------------------------
def credits_grant(
    *,
    brand: Brand,
    amount,
    kind: str = Kind.GRANT,
    actor=None,
    note: str = "",
    idempotency_key: str = "",
) -> CreditEntry:
    """Add credits to a brand (a grant, or a purchase recorded by a brand admin or operator).

    ``idempotency_key``: the same key for the same brand answers the first entry instead of
    adding credits twice (a client retrying after a timeout); reusing it for another amount
    or kind is refused.
    """
    value = parse_amount(amount)
    if kind not in CreditEntry.CREDITING:
        raise ValidationError({"kind": "Choose a grant or a purchase."})
    key = (idempotency_key or "").strip()
    if len(key) > 100:
        raise ValidationError({"idempotency_key": "Use at most 100 characters."})
    with transaction.atomic():
        credit_account_lock(brand_id=brand.pk)
        if key:
            earlier = CreditEntry.objects.filter(brand=brand, idempotency_key=key).first()
            if earlier is not None:
                if earlier.kind != kind or earlier.amount != value:
                    raise ValidationError(
                        {"idempotency_key": "This key was already used for another grant."}
                    )
                return earlier
        entry = CreditEntry.objects.create(
            brand=brand,
            kind=kind,
            amount=value,
            actor=actor if getattr(actor, "pk", None) else None,
            note=(note or "").strip()[:300],
            idempotency_key=key,
        )
    return entry


def credits_adjust(*, brand: Brand, amount, actor=None, note: str = "") -> CreditEntry:
    """An operator's correction (either sign). Refused if it would take more than is available."""
    value = parse_amount(amount, allow_negative=True)
    if not (note or "").strip():
        raise ValidationError({"note": "Say why the balance is adjusted."})
    with transaction.atomic():
        account = credit_account_lock(brand_id=brand.pk)
        figures = account_figures(account)
        if value < 0 and figures.available + value < 0:
            raise ValidationError(
                {
                    "amount": f"Only {plain_amount(figures.available)} credits are available "
                    f"({plain_amount(figures.reserved)} are reserved by running distributions)."
                }
            )
        return CreditEntry.objects.create(
            brand=brand,
            kind=Kind.ADJUST,
            amount=value,
            actor=actor if getattr(actor, "pk", None) else None,
            note=note.strip()[:300],
        )


def credits_debit_once(
    *,
    brand: Brand,
    key: str,
    country: str,
    segments: int,
    rate: Decimal,
    project_id: int | None = None,
    note: str = "",
) -> CreditEntry:
    """Debit one message that belongs to no distribution (a two-way conversation's text or
    a reply it received) at ``rate`` × ``segments``: once per ``key`` whatever the retries
    (the brand's unique idempotency key), a usage row for a self-service brand. A message
    already sent or received is owed: this never refuses, the caller checks beforehand."""
    cost = quantize(rate * segments)
    with transaction.atomic():
        credit_account_lock(brand_id=brand.pk)
        earlier = CreditEntry.objects.filter(brand=brand, idempotency_key=key).first()
        if earlier is not None:
            return earlier
        self_service = brand.is_self_service
        return CreditEntry.objects.create(
            brand=brand,
            kind=Kind.USAGE if self_service else Kind.DEBIT,
            amount=ZERO if self_service else -cost,
            project_id=project_id,
            country=country,
            segments=segments,
            rate=rate,
            note=note[:300],
            idempotency_key=key[:100],
        )


def reservation_pools(
    reservations: list[CreditReservation], *, checkpoint: bool = False
) -> dict[int, Decimal]:
    """What each reservation holds and has not yet held for a message: its checkpoint plus
    the entries after it, less its holds. With ``checkpoint`` (only under its brand's lock)
    the checkpoint moves forward when many entries were added after it."""
    ids = [reservation.pk for reservation in reservations]
    sums = _tail_sums(
        "reservation_id",
        [(reservation.pk, reservation.summed_upto_id) for reservation in reservations],
    )
    holds = dict(
        CreditHold.objects.filter(reservation_id__in=ids)
        .values("reservation_id")
        .annotate(s=Sum("cost"))
        .values_list("reservation_id", "s")
        .order_by()
    )
    pools = {}
    for reservation in reservations:
        tail = sums.get(reservation.pk, EMPTY_TAIL)
        held = reservation.summed_held + tail.held
        if checkpoint and tail.count >= CHECKPOINT_EVERY:
            CreditReservation.objects.filter(pk=reservation.pk).update(
                summed_upto_id=tail.last, summed_held=held
            )
            reservation.summed_upto_id, reservation.summed_held = tail.last, held
        pools[reservation.pk] = held - (holds.get(reservation.pk) or ZERO)
    return pools


@dataclass(frozen=True)
class Tail:
    """The ledger entries of one account or reservation after its checkpoint: their sums,
    how many, and the last one's id."""

    amount: Decimal = ZERO
    held: Decimal = ZERO
    count: int = 0
    last: int | None = None


EMPTY_TAIL = Tail()
_PLACES = Decimal(1).scaleb(-AMOUNT_PLACES)


def _exact(value) -> Decimal:
    """A SUM as the database returned it: a Decimal (PostgreSQL) or a float (SQLite, as the
    ORM's own sums there), to the ledger's places."""
    if value is None:
        return ZERO
    return value if isinstance(value, Decimal) else Decimal(repr(value)).quantize(_PLACES)


def _tail_sums(key: str, checkpoints: list[tuple[int, int | None]]) -> dict[int, Tail]:
    """Each key's entries after its checkpoint (``key``: ``brand_id`` or ``reservation_id``),
    in one statement whatever their number: the (key, checkpoint) pairs are a VALUES list,
    each pair's entries read by the (key, id) index. It runs with every send batch's cover, for
    every distribution of the batch: as an ORM filter, one OR branch per pair cost more to
    build and compile in Python than the database took to answer.

    On PostgreSQL each pair is summed in a LATERAL subquery, so that the plan is an index
    range scan per pair (the tail after a checkpoint: at most about ``CHECKPOINT_EVERY``
    entries) whatever the table's statistics say: as a plain join, the planner hashed the
    VALUES list and read the whole table (0.1-0.3 s a cover at 350,000 entries, a third of
    the send pumps' time with 200 slow senders)."""
    if not checkpoints:
        return {}
    assert key in ("brand_id", "reservation_id")
    table = connection.ops.quote_name(CreditEntry._meta.db_table)
    pairs = ", ".join(["(%s, %s)"] * len(checkpoints))
    params = [value for pk, upto in checkpoints for value in (pk, upto or 0)]
    # the table and the column are ours, the values are bound
    if connection.vendor == "postgresql":
        sql = f"""SELECT v.k, t.amount, t.held, t.n, t.last
            FROM (VALUES {pairs}) AS v(k, upto) CROSS JOIN LATERAL (
                SELECT SUM(e.amount) AS amount, SUM(e.held) AS held, COUNT(e.id) AS n,
                    MAX(e.id) AS last
                FROM {table} e WHERE e.{key} = v.k AND e.id > v.upto
            ) t
            WHERE t.n > 0"""  # noqa: S608
    else:  # SQLite's planner walks the (key, id) index for each pair of the join
        sql = f"""WITH v(k, upto) AS (VALUES {pairs})
            SELECT e.{key}, SUM(e.amount), SUM(e.held), COUNT(e.id), MAX(e.id)
            FROM {table} e JOIN v ON e.{key} = v.k AND e.id > v.upto
            GROUP BY e.{key}"""  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            row[0]: Tail(_exact(row[1]), _exact(row[2]), row[3], row[4])
            for row in cursor.fetchall()
        }


def accounts_available(accounts: list[CreditAccount]) -> dict[int, Decimal]:
    """Each locked account's available credits (one query; checkpoints moved as needed)."""
    if not accounts:
        return {}
    sums = _tail_sums(
        "brand_id", [(account.brand_id, account.summed_upto_id) for account in accounts]
    )
    available = {}
    for account in accounts:
        tail = sums.get(account.brand_id, EMPTY_TAIL)
        balance = account.summed_amount + tail.amount
        reserved = account.summed_held + tail.held
        if tail.count >= CHECKPOINT_EVERY:
            CreditAccount.objects.filter(pk=account.pk).update(
                summed_upto_id=tail.last, summed_amount=balance, summed_held=reserved
            )
        available[account.brand_id] = balance - reserved
    return available
