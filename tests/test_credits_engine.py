"""Credits through the distribution engine (outbox provider): reserve, cover, debit, release."""

from decimal import Decimal

from django.utils import timezone

import pytest

from brands.models import Brand
from credits.models import CreditEntry, CreditHold, CreditReservation
from credits.selectors import credits_balance, credits_verify, distribution_consumed
from distributions.charging import (
    distribution_cover,
    distribution_release,
    distribution_reserve,
    messages_debit,
)
from distributions.models import Distribution, Message
from distributions.services import (
    distribution_cancel,
    distribution_create,
    distribution_materialise,
)
from tests.factories.credits import CountryRateFactory, grant, set_default_rate
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db
S = Message.Status
D = Distribution.Status
K = CreditEntry.Kind


def add(project, first, phone, **extra):
    person = PersonFactory(brand=project.brand, first_name=first, phone=phone, **extra)
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def priced(db):
    """US costs 1 credit a segment, GB 2, France is disabled, the rest 3."""
    set_default_rate("3")
    CountryRateFactory(country="US", rate=Decimal("1"))
    CountryRateFactory(country="GB", rate=Decimal("2"))
    CountryRateFactory(country="FR", rate=Decimal("1.5"), enabled=False)


@pytest.fixture
def crowd(tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    return {
        "ada": add(project, "Ada", "+14155550101"),
        "alan": add(project, "Alan", "+447400123456"),
        "grace": add(project, "Grace", "+14155550102"),
        "nophone": add(project, "Nemo", ""),
    }


def send_now(project, capture, message="Hi ${first_name}", **kwargs):
    with capture(execute=True):
        distribution = distribution_create(project=project, message=message, **kwargs)
    distribution.refresh_from_db()
    return distribution


def entries(brand, kind):
    return CreditEntry.objects.filter(brand=brand, kind=kind)


def test_a_sent_distribution_is_debited_per_country_and_releases_nothing_left(
    tenancy, crowd, priced, eager_tasks, django_capture_on_commit_callbacks
):
    grant(tenancy.brand_a, 10)
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)

    assert distribution.status == D.SENT
    debits = {e.message.participant_id: e for e in entries(tenancy.brand_a, K.DEBIT)}
    assert debits[crowd["ada"].pk].amount == Decimal("-1")
    assert debits[crowd["ada"].pk].country == "US"
    assert debits[crowd["alan"].pk].amount == Decimal("-2")
    assert debits[crowd["alan"].pk].country == "GB"
    assert len(debits) == 3
    assert distribution_consumed(distribution=distribution) == Decimal("4")
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == Decimal("6") and balance.reserved == 0 and balance.available == 6
    reservation = CreditReservation.objects.get(distribution=distribution)
    assert reservation.estimate == Decimal("4") and reservation.closed_at is not None
    assert not CreditHold.objects.exists()
    assert credits_verify(brand=tenancy.brand_a)["consistent"]
    # The other brand's ledger is untouched.
    assert not CreditEntry.objects.filter(brand=tenancy.brand_b).exists()


def test_rendered_text_decides_segments_per_recipient(
    tenancy, crowd, priced, eager_tasks, django_capture_on_commit_callbacks
):
    # 151 characters + the name: Ada fits in one segment (154), a long name needs two (172).
    long_name = add(tenancy.project_a, "Maximiliana-Theodora", "+14155550103")
    grant(tenancy.brand_a, 100)
    text = "x" * 150 + " ${first_name}"
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks, message=text)
    rows = {m.participant_id: m for m in distribution.messages.all()}
    assert rows[crowd["ada"].pk].segments == 1
    assert rows[long_name.pk].segments == 2
    debit = entries(tenancy.brand_a, K.DEBIT).get(message=rows[long_name.pk])
    assert debit.segments == 2 and debit.amount == Decimal("-2")


def test_credits_running_out_sends_what_was_covered_and_interrupts(
    tenancy, crowd, priced, eager_tasks, django_capture_on_commit_callbacks
):
    grant(tenancy.brand_a, 3)
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)

    # Rows are covered in id order: Ada (1) and Grace (1) fit, then Alan (2) does not.
    assert distribution.status == D.INTERRUPTED
    assert distribution.status_reason == "Sent partially: not enough credits."
    alan = distribution.messages.get(participant=crowd["alan"])
    assert alan.status == S.FAILED and alan.status_reason == "Not sent: not enough credits."
    assert distribution.messages.filter(status__in=Message.HANDED_OVER).count() == 2
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == 1 and balance.reserved == 0


def test_no_credit_at_all_fails_the_distribution_saying_why(
    tenancy, crowd, priced, eager_tasks, django_capture_on_commit_callbacks
):
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    assert distribution.status == D.FAILED
    assert distribution.status_reason == "Nothing was sent: not enough credits."
    assert not entries(tenancy.brand_a, K.DEBIT).exists()
    assert credits_balance(brand=tenancy.brand_a).balance == 0


def test_disabled_country_is_skipped_with_a_reason_and_not_charged(
    tenancy, crowd, priced, eager_tasks, django_capture_on_commit_callbacks
):
    paris = add(tenancy.project_a, "Zoé", "+33612345678")
    grant(tenancy.brand_a, 10)
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)

    row = distribution.messages.get(participant=paris)
    assert row.status == S.SKIPPED
    assert "France (FR) is disabled" in row.status_reason
    assert distribution.status == D.SENT  # a skipped country does not interrupt the run
    assert not entries(tenancy.brand_a, K.DEBIT).filter(message=row).exists()
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("6")


def test_self_service_brand_is_not_debited_but_its_usage_is_recorded(
    tenancy, crowd, priced, eager_tasks, django_capture_on_commit_callbacks
):
    Brand.objects.filter(pk=tenancy.brand_a.pk).update(
        integration_model=Brand.IntegrationModel.SELF_SERVICE
    )
    tenancy.project_a.brand.refresh_from_db()
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)

    assert distribution.status == D.SENT
    usage = entries(tenancy.brand_a, K.USAGE)
    assert usage.count() == 3
    assert {e.country for e in usage} == {"US", "GB"}
    assert all(e.amount == 0 and e.segments == 1 for e in usage)
    assert not entries(tenancy.brand_a, K.DEBIT).exists()
    assert not entries(tenancy.brand_a, K.RESERVE).exists()
    assert distribution_consumed(distribution=distribution) == 0


def test_email_distributions_are_not_charged(tenancy, crowd, priced):
    distribution = DistributionFactory(project=tenancy.project_a, channel="email")
    assert distribution_reserve(distribution=distribution) is None
    assert messages_debit(distribution=distribution, message_ids=[1, 2]) == 0


# --- the cycle, step by step --------------------------------------------------------------------
@pytest.fixture
def started(tenancy, crowd, priced):
    """A distribution materialised and reserved (Ada 1, Alan 2, Grace 1: 4 credits)."""
    grant(tenancy.brand_a, 10)
    distribution = DistributionFactory(
        project=tenancy.project_a, status=D.IN_PROGRESS, message="Hi ${first_name}"
    )
    distribution_materialise(distribution=distribution)
    distribution_reserve(distribution=distribution)
    return distribution


def pending_rows(distribution):
    return list(
        distribution.messages.filter(status=S.PENDING)
        .select_related("person", "participant")
        .order_by("pk")
    )


def accept(rows):
    now = timezone.now()
    for row in rows:
        Message.objects.filter(pk=row.pk).update(
            status=S.SENT, sent_at=now, provider_id=f"SM{row.pk}", segments=1
        )


def test_reservation_is_taken_once_even_if_start_repeats(tenancy, started):
    again = distribution_reserve(distribution=started)
    assert again == CreditReservation.objects.get(distribution=started)
    assert entries(tenancy.brand_a, K.RESERVE).count() == 1
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.reserved == Decimal("4") and balance.available == Decimal("6")


def test_a_message_is_debited_once_whatever_the_retries(tenancy, started):
    rows = pending_rows(started)
    covered = distribution_cover(distribution=started, messages=rows)
    assert covered == {row.pk for row in rows}
    accept(rows)
    ids = [row.pk for row in rows]
    assert messages_debit(distribution=started, message_ids=ids) == 3
    assert messages_debit(distribution=started, message_ids=ids) == 0
    assert messages_debit(distribution=started, message_ids=ids[:1]) == 0
    assert entries(tenancy.brand_a, K.DEBIT).count() == 3
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("6")


def test_a_retried_row_keeps_its_hold_instead_of_holding_twice(tenancy, started):
    rows = pending_rows(started)
    distribution_cover(distribution=started, messages=rows)
    # The provider throttled everything: rows go back to Pending and are leased again.
    again = distribution_cover(distribution=started, messages=pending_rows(started))
    assert again == {row.pk for row in rows}
    assert CreditHold.objects.count() == 3
    assert credits_balance(brand=tenancy.brand_a).reserved == Decimal("4")


def test_rows_rejected_by_the_provider_give_their_hold_back(tenancy, started):
    rows = pending_rows(started)
    distribution_cover(distribution=started, messages=rows)
    Message.objects.filter(pk=rows[0].pk).update(status=S.FAILED)  # refused, never sent
    accept(rows[1:])
    messages_debit(distribution=started, message_ids=[row.pk for row in rows[1:]])
    Distribution.objects.filter(pk=started.pk).update(status=D.SENT)
    released = distribution_release(distribution=started)
    assert released == Decimal("1")  # Ada's credit
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == Decimal("7") and balance.reserved == 0
    assert credits_verify(brand=tenancy.brand_a)["consistent"]


def test_a_message_handed_over_but_never_debited_is_debited_at_release(tenancy, started):
    rows = pending_rows(started)
    distribution_cover(distribution=started, messages=rows)
    accept(rows)  # the worker died after the provider accepted, before it debited
    Distribution.objects.filter(pk=started.pk).update(status=D.SENT)
    distribution_release(distribution=started)
    assert entries(tenancy.brand_a, K.DEBIT).count() == 3
    assert credits_balance(brand=tenancy.brand_a).balance == Decimal("6")
    assert credits_balance(brand=tenancy.brand_a).reserved == 0


def test_actual_cost_above_the_estimate_is_topped_up_from_the_balance(tenancy, crowd, priced):
    grant(tenancy.brand_a, 10)
    distribution = DistributionFactory(
        project=tenancy.project_a, status=D.IN_PROGRESS, message="Hi ${first_name} " + "x" * 150
    )
    distribution_materialise(distribution=distribution)
    distribution_reserve(distribution=distribution)  # 1 segment each: 1 + 2 + 1 credits
    # Ada changed her name after the start: her text now takes 2 segments (165 characters).
    crowd["ada"].person.first_name = "Alexandrina"
    crowd["ada"].person.save()
    covered = distribution_cover(distribution=distribution, messages=pending_rows(distribution))
    assert len(covered) == 3
    top_ups = entries(tenancy.brand_a, K.RESERVE).filter(note__startswith="Top-up")
    assert [e.held for e in top_ups] == [Decimal("1")]  # 2 segments instead of 1
    assert credits_balance(brand=tenancy.brand_a).reserved == Decimal("5")


def test_two_starts_on_one_balance_reserve_at_most_what_exists(tenancy, crowd, priced):
    grant(tenancy.brand_a, 5)
    first = DistributionFactory(project=tenancy.project_a, status=D.IN_PROGRESS, message="Hi")
    second = DistributionFactory(project=tenancy.project_a, status=D.IN_PROGRESS, message="Yo")
    for distribution in (first, second):
        distribution_materialise(distribution=distribution)
        distribution_reserve(distribution=distribution)
    held = {e.distribution_id: e.held for e in entries(tenancy.brand_a, K.RESERVE)}
    assert held == {first.pk: Decimal("4"), second.pk: Decimal("1")}
    # The second can only send what it reserved: Ada (1); Alan (2) and Grace no longer fit.
    covered = distribution_cover(distribution=second, messages=pending_rows(second))
    assert len(covered) == 1
    assert credits_balance(brand=tenancy.brand_a).available == 0


def test_cancelling_while_sending_releases_what_was_not_used(
    tenancy, started, django_capture_on_commit_callbacks
):
    rows = pending_rows(started)
    distribution_cover(distribution=started, messages=rows[:1])
    Message.objects.filter(pk=rows[0].pk).update(status=S.SENDING)
    distribution_cancel(distribution=started)
    # Cancelling settles its reservation, keeping the hold of the message still in flight.
    from credits.selectors import credits_available

    assert credits_available(brand=tenancy.brand_a) == Decimal("9")
    # The in-flight message is accepted and debited: the reservation closes.
    accept(rows[:1])
    messages_debit(distribution=started, message_ids=[rows[0].pk])
    reservation = CreditReservation.objects.get(distribution=started)
    assert reservation.closed_at is not None
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == Decimal("9") and balance.reserved == 0


def test_deleting_a_distribution_keeps_its_ledger_and_frees_its_reservation(tenancy, started):
    rows = pending_rows(started)
    distribution_cover(distribution=started, messages=rows)
    accept(rows[:1])
    messages_debit(distribution=started, message_ids=[rows[0].pk])
    started.delete()
    from credits.selectors import credits_available
    from distributions.tasks import credits_settle_task

    # Deleted outside any service (the admin, a project's deletion): the periodic settlement
    # frees what its reservation held; reading the balance never writes.
    assert credits_available(brand=tenancy.brand_a) == Decimal("6")  # 3 still held
    assert credits_settle_task() == {"settled": 1}
    assert credits_available(brand=tenancy.brand_a) == Decimal("9")
    assert credits_settle_task() == {"settled": 0}
    debit = entries(tenancy.brand_a, K.DEBIT).get()
    assert debit.distribution_id is None and debit.message_id is None
    assert debit.amount == Decimal("-1")


def test_ledger_rows_cannot_be_changed_or_deleted(tenancy):
    entry = grant(tenancy.brand_a, 5)
    from django.core.exceptions import ValidationError

    entry.note = "changed"
    with pytest.raises(ValidationError):
        entry.save()
    with pytest.raises(ValidationError):
        entry.delete()
    with pytest.raises(TypeError):
        CreditEntry.objects.filter(pk=entry.pk).update(amount=Decimal("500"))
    with pytest.raises(TypeError):
        CreditEntry.objects.filter(pk=entry.pk).delete()


def test_reading_the_balance_writes_nothing(tenancy, started, page_client_for):
    """The schedule page shows the available credits of a brand whose deleted distribution
    still holds a reservation: the GET reads it as it is (settling is the writers' job)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    rows = pending_rows(started)
    distribution_cover(distribution=started, messages=rows)
    started.delete()
    client = page_client_for(tenancy.project_admin_a)
    url = reverse("distributions:create", args=[tenancy.project_a.pk])
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url)
    assert page.status_code == 200
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")
        and "django_session" not in q["sql"]
    ]
    assert writes == []
    assert CreditReservation.objects.get(brand=tenancy.brand_a).closed_at is None
