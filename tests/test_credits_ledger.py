"""The ledger: grants and their bad input, the derived balance, and a property-based proof that
the balance equals grants minus debits and never goes negative, whatever the interleaving."""

import os
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.utils import timezone

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from credits import services
from credits.models import CreditEntry, CreditHold, CreditReservation
from credits.selectors import credits_balance, credits_verify
from credits.services import credits_adjust, credits_grant
from distributions.charging import (
    distribution_cover,
    distribution_release,
    distribution_reserve,
    messages_debit,
    reservations_settle,
)
from distributions.models import Distribution, Message
from tests.factories.brands import BrandFactory
from tests.factories.credits import CountryRateFactory, set_default_rate
from tests.factories.distributions import DistributionFactory
from tests.factories.projects import ProjectFactory

pytestmark = pytest.mark.django_db
K = CreditEntry.Kind
S = Message.Status
D = Distribution.Status


# --- grants and their bad input ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-5", "positive"),
        ("0", "other than zero"),
        ("abc", "not a number"),
        ("", "not a number"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("1.23456", "4 decimal places"),
        ("1e12", "less than"),
        (None, "Enter a number"),
        (True, "Enter a number"),
    ],
)
def test_bad_grants_are_refused_and_nothing_is_written(tenancy, amount, message):
    with pytest.raises(ValidationError) as excinfo:
        credits_grant(brand=tenancy.brand_a, amount=amount)
    assert message in excinfo.value.message_dict["amount"][0]
    assert not CreditEntry.objects.exists()


def test_grant_and_purchase_add_to_the_balance(tenancy):
    credits_grant(brand=tenancy.brand_a, amount="100", actor=tenancy.admin_a, note="Welcome")
    credits_grant(brand=tenancy.brand_a, amount=Decimal("2.5"), kind=K.PURCHASE)
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == Decimal("102.5") and balance.available == Decimal("102.5")
    assert credits_balance(brand=tenancy.brand_b).balance == 0
    with pytest.raises(ValidationError):
        credits_grant(brand=tenancy.brand_a, amount="1", kind=K.DEBIT)


def test_a_repeated_idempotency_key_adds_credits_once(tenancy):
    first = credits_grant(brand=tenancy.brand_a, amount="10", idempotency_key="order-42")
    again = credits_grant(brand=tenancy.brand_a, amount="10", idempotency_key="order-42")
    assert again.pk == first.pk
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("10")
    with pytest.raises(ValidationError) as excinfo:
        credits_grant(brand=tenancy.brand_a, amount="11", idempotency_key="order-42")
    assert "already used" in excinfo.value.message_dict["idempotency_key"][0]
    # The same key in another brand is another grant.
    credits_grant(brand=tenancy.brand_b, amount="10", idempotency_key="order-42")
    assert credits_balance(brand=tenancy.brand_b).balance == Decimal("10")


def test_adjustment_cannot_take_more_than_is_available(tenancy):
    credits_grant(brand=tenancy.brand_a, amount="10")
    with pytest.raises(ValidationError) as excinfo:
        credits_adjust(brand=tenancy.brand_a, amount="-11", note="refund")
    assert "Only 10" in excinfo.value.message_dict["amount"][0]
    with pytest.raises(ValidationError):
        credits_adjust(brand=tenancy.brand_a, amount="-1", note="")
    credits_adjust(brand=tenancy.brand_a, amount="-4", note="refund")
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("6")


def test_the_cached_prefix_sum_always_equals_the_full_sum(tenancy, monkeypatch):
    monkeypatch.setattr(services, "CHECKPOINT_EVERY", 3)
    for index in range(10):
        credits_grant(brand=tenancy.brand_a, amount=index + 1)
        distribution = DistributionFactory(project=tenancy.project_a, status=D.IN_PROGRESS)
        distribution_reserve(distribution=distribution)  # no rows: moves the checkpoint
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("55")
    verdict = credits_verify(brand=tenancy.brand_a)
    assert verdict["consistent"] and verdict["balance"] == Decimal("55")
    assert tenancy.brand_a.credit_account.summed_upto_id > 0


def test_a_reservations_checkpoint_moves_and_its_pool_stays_exact(tenancy, monkeypatch):
    """What a reservation has left sums only the entries after its checkpoint (a 100,000
    message send summed every one of them each batch); the sums stay exact."""
    monkeypatch.setattr(services, "CHECKPOINT_EVERY", 3)
    set_default_rate("1")
    credits_grant(brand=tenancy.brand_a, amount="100")
    distribution = DistributionFactory(project=tenancy.project_a, status=D.IN_PROGRESS)
    reservation = distribution_reserve(distribution=distribution)
    for index in range(8):
        CreditEntry.objects.create(
            brand=tenancy.brand_a,
            kind=K.RESERVE,
            held=Decimal(index + 1),
            reservation=reservation,
            distribution=distribution,
        )
    full = reservation.entries.aggregate(s=Sum("held"))["s"]
    assert services.reservation_pools([reservation], checkpoint=True) == {reservation.pk: full}
    reservation.refresh_from_db()
    assert reservation.summed_upto_id > 0 and reservation.summed_held == full
    CreditEntry.objects.create(
        brand=tenancy.brand_a, kind=K.RESERVE, held=Decimal("2"), reservation=reservation
    )
    assert services.reservation_held(reservation) == full + 2
    stale = CreditReservation.objects.get(pk=reservation.pk)
    stale.summed_upto_id, stale.summed_held = 0, Decimal(0)  # read before a checkpoint moved
    assert services.reservation_pools([stale]) == {reservation.pk: full + 2}


def test_deleting_a_brand_takes_its_ledger_with_it(tenancy):
    credits_grant(brand=tenancy.brand_b, amount="5")
    tenancy.brand_b.delete()
    assert not CreditEntry.objects.exists()


# --- the property: any interleaving of reserve, cover, debit, release --------------------------
ADDRESSES = {
    "US": "+14155550{:03d}",  # 1 credit a segment
    "GB": "+4474001{:05d}",  # 2 credits
    "DE": "+4915112{:05d}",  # the default: 3 credits
    "FR": "+336123{:05d}",  # disabled
}
ROWS_PER_DISTRIBUTION = 6
DISTRIBUTIONS = 3

_index = st.integers(0, DISTRIBUTIONS - 1)
# Weighted like a real send: covering and accepting are frequent, stopping is rare.
operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(min_value=0, max_value=8)),
    st.tuples(st.just("start"), _index),
    st.tuples(st.just("cover"), _index, st.integers(1, 4)),
    st.tuples(st.just("cover"), _index, st.integers(1, 4)),
    st.tuples(st.just("accept"), _index, st.integers(1, 4)),
    st.tuples(st.just("accept"), _index, st.integers(1, 4)),
    st.tuples(st.just("accept"), _index, st.integers(1, 4)),
    st.tuples(st.just("lost_debit"), _index, st.integers(1, 2)),
    st.tuples(st.just("reject"), _index, st.integers(1, 2)),
    st.tuples(st.just("requeue"), _index, st.integers(1, 3)),
    st.tuples(st.just("redebit"), _index),
    st.tuples(st.sampled_from(["finish", "finish", "finish", "cancel"]), _index),
)


class Ledger:
    """Drives the services the way the engine does, on one brand and a few distributions."""

    def __init__(self, countries: list[str], long_text: list[bool]):
        self.brand = BrandFactory()
        project = ProjectFactory(brand=self.brand)
        self.distributions = []
        serial = 0
        for index in range(DISTRIBUTIONS):
            text = ("Hello " * 30) if long_text[index] else "Hi ${first_name}"
            distribution = DistributionFactory(project=project, message=text)
            rows = []
            for _ in range(ROWS_PER_DISTRIBUTION):
                country = countries[serial % len(countries)]
                rows.append(
                    Message(
                        distribution=distribution,
                        address=ADDRESSES[country].format(serial),
                        status=S.PENDING,
                        status_changed_at=timezone.now(),
                    )
                )
                serial += 1
            Message.objects.bulk_create(rows)
            self.distributions.append(distribution)

    def rows(self, index, *statuses, limit=None):
        queryset = Message.objects.filter(
            distribution=self.distributions[index], status__in=statuses
        ).order_by("pk")
        return list(queryset[:limit] if limit else queryset)

    def started(self, index) -> bool:
        return CreditReservation.objects.filter(distribution=self.distributions[index]).exists()

    def apply(self, op):
        name, *args = op
        if name == "grant":
            if args[0]:
                credits_grant(brand=self.brand, amount=args[0])
            return
        index = args[0]
        distribution = self.distributions[index]
        distribution.refresh_from_db()
        if distribution.status == D.SCHEDULED:
            # Any step of a distribution not started yet starts it first (claim + reserve).
            Distribution.objects.filter(pk=distribution.pk).update(status=D.IN_PROGRESS)
            distribution.status = D.IN_PROGRESS
            distribution_reserve(distribution=distribution)
        if name == "start":
            return
        if distribution.status != D.IN_PROGRESS:
            if name == "redebit":
                self.redebit(distribution, index)
            return
        if name == "cover":
            rows = self.rows(index, S.PENDING, limit=args[1])
            Message.objects.filter(pk__in=[r.pk for r in rows]).update(status=S.SENDING)
            coverage = distribution_cover(distribution=distribution, messages=rows)
            for row in rows:
                if row.pk in coverage.skipped:
                    Message.objects.filter(pk=row.pk).update(status=S.SKIPPED)
                elif row.pk not in coverage:
                    Message.objects.filter(pk=row.pk).update(status=S.FAILED)
        elif name in ("accept", "lost_debit"):
            rows = self.rows(index, S.SENDING, limit=args[1])
            now = timezone.now()
            for row in rows:
                segments = 2 if len(distribution.message) > 160 else 1
                Message.objects.filter(pk=row.pk).update(
                    status=S.SENT, sent_at=now, provider_id=f"SM{row.pk}", segments=segments
                )
            if name == "accept":
                messages_debit(distribution=distribution, message_ids=[r.pk for r in rows])
        elif name == "reject":
            rows = self.rows(index, S.SENDING, limit=args[1])
            Message.objects.filter(pk__in=[r.pk for r in rows]).update(status=S.FAILED)
        elif name == "requeue":
            rows = self.rows(index, S.SENDING, limit=args[1])
            Message.objects.filter(pk__in=[r.pk for r in rows]).update(status=S.PENDING)
        elif name == "redebit":
            self.redebit(distribution, index)
        elif name == "cancel":
            Message.objects.filter(distribution=distribution, status=S.PENDING).update(
                status=S.SKIPPED
            )
            Distribution.objects.filter(pk=distribution.pk).update(status=D.INTERRUPTED)
            reservations_settle(brand=self.brand)
        elif name == "finish" and not self.rows(index, S.PENDING, S.SENDING):
            Distribution.objects.filter(pk=distribution.pk).update(status=D.SENT)
            distribution_release(distribution=distribution)

    def redebit(self, distribution, index):
        sent = [row.pk for row in self.rows(index, S.SENT)]
        if sent:
            messages_debit(distribution=distribution, message_ids=sent)

    def check(self):
        ledger = CreditEntry.objects.filter(brand=self.brand)
        granted = ledger.filter(kind__in=CreditEntry.CREDITING).aggregate(s=Sum("amount"))["s"]
        debited = ledger.filter(kind=K.DEBIT).aggregate(s=Sum("amount"))["s"]
        granted, debited = granted or Decimal(0), -(debited or Decimal(0))
        balance = credits_balance(brand=self.brand)
        assert balance.balance == granted - debited
        assert balance.balance >= 0
        assert balance.reserved >= 0
        assert balance.available >= 0, balance
        per_message = (
            ledger.filter(kind=K.DEBIT).values("message_id").annotate(n=Count("pk")).order_by()
        )
        assert all(row["n"] == 1 for row in per_message)
        for reservation in CreditReservation.objects.filter(brand=self.brand):
            held = reservation.entries.aggregate(s=Sum("held"))["s"] or Decimal(0)
            holds = CreditHold.objects.filter(reservation=reservation).aggregate(s=Sum("cost"))
            assert held >= 0
            assert held >= (holds["s"] or Decimal(0))
            # The checkpointed sum (moved every 2 entries here) is the full sum.
            assert services.reservation_held(reservation) == held
            (pool,) = services.reservation_pools([reservation]).values()
            assert pool == held - (holds["s"] or Decimal(0))
        # Nothing was handed over without its cost being held or debited.
        handed = Message.objects.filter(
            distribution__project__brand=self.brand, status=S.SENT
        ).values_list("pk", flat=True)
        paid = set(ledger.filter(kind=K.DEBIT).values_list("message_id", flat=True))
        held_ids = set(CreditHold.objects.values_list("message_id", flat=True))
        assert set(handed) <= paid | held_ids

    def finish_everything(self):
        for index, distribution in enumerate(self.distributions):
            distribution.refresh_from_db()
            # Rows still in flight (also of a cancelled run) end: refused by the provider.
            for row in self.rows(index, S.SENDING):
                Message.objects.filter(pk=row.pk).update(status=S.FAILED)
            if distribution.status == D.IN_PROGRESS:
                Message.objects.filter(distribution=distribution, status=S.PENDING).update(
                    status=S.SKIPPED
                )
                Distribution.objects.filter(pk=distribution.pk).update(status=D.SENT)
                distribution_release(distribution=distribution)
        reservations_settle(brand=self.brand)


@settings(
    # Each example is a whole ledger's life on a real database (about a second): enough to
    # find what the 60 of earlier runs found; explore with RELAY_LEDGER_EXAMPLES=200.
    max_examples=int(os.environ.get("RELAY_LEDGER_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    countries=st.lists(st.sampled_from(sorted(ADDRESSES)), min_size=1, max_size=4),
    long_text=st.lists(st.booleans(), min_size=DISTRIBUTIONS, max_size=DISTRIBUTIONS),
    initial=st.integers(min_value=0, max_value=30),
    operations=st.lists(operation, min_size=10, max_size=50),
)
def test_balance_is_grants_minus_debits_and_never_negative(
    db, monkeypatch, countries, long_text, initial, operations
):
    monkeypatch.setattr(services, "CHECKPOINT_EVERY", 2)  # checkpoints move all the time
    set_default_rate("3")
    CountryRateFactory(country="US", rate=Decimal("1"))
    CountryRateFactory(country="GB", rate=Decimal("2"))
    CountryRateFactory(country="FR", rate=Decimal("1"), enabled=False)
    ledger = Ledger(countries, long_text)
    for op in [("grant", initial), *operations]:
        ledger.apply(op)
        ledger.check()
    ledger.finish_everything()
    ledger.check()
    kinds = set(CreditEntry.objects.filter(brand=ledger.brand).values_list("kind", flat=True))
    event(f"debited: {K.DEBIT in kinds}, topped up or released: {K.RELEASE in kinds}")
    refused = Message.objects.filter(distribution__project__brand=ledger.brand, status=S.FAILED)
    event(f"rows refused or rejected: {bool(refused.exists())}")
    balance = credits_balance(brand=ledger.brand)
    assert balance.reserved == 0  # everything unused was released
    assert not CreditHold.objects.filter(reservation__brand=ledger.brand).exists()
    # Every message handed over was debited exactly once, at its country's price.
    for message in Message.objects.filter(distribution__project__brand=ledger.brand, status=S.SENT):
        debit = CreditEntry.objects.get(message=message, kind=K.DEBIT)
        assert debit.amount == -debit.rate * debit.segments
    assert credits_verify(brand=ledger.brand)["consistent"]
