"""Two real Celery workers start two distributions at once on one small balance (PostgreSQL):
together they reserve and send at most what exists, and each message is debited once.

Integration: needs REDIS_URL and PostgreSQL (row locks are what is being proven)."""

import time
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Sum

import pytest

from credits.models import CreditEntry, CreditReservation
from credits.selectors import credits_balance, credits_verify
from distributions.models import Distribution, Message
from distributions.tasks import distribution_start_task
from participants.models import Participant, Person
from tests.factories.credits import CountryRateFactory, grant
from tests.factories.distributions import DistributionFactory, ProviderAccountFactory
from tests.factories.projects import ProjectFactory
from tests.progress import KillClock, distribution_progress, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]
D = Distribution.Status
RECIPIENTS = 40
BALANCE = 50  # two distributions of 40 one-credit messages: 80 wanted, 50 exist


def populate(project, offset: int) -> None:
    people = Person.objects.bulk_create(
        [
            Person(
                brand=project.brand,
                person_id=f"C{offset + i}",
                phone=f"+1415{3000000 + offset + i:07d}",
            )
            for i in range(RECIPIENTS)
        ]
    )
    Participant.objects.bulk_create([Participant(project=project, person=p) for p in people])


def describe(distributions, workers) -> str:
    rows = Message.objects.filter(distribution__in=distributions).values_list(
        "distribution_id", "status"
    )
    counts = {}
    for row in rows:
        counts[row] = counts.get(row, 0) + 1
    states = list(
        Distribution.objects.filter(pk__in=[d.pk for d in distributions]).values_list(
            "pk", "status", "status_reason"
        )
    )
    return f"{states} {counts}\n" + "\n".join(w.output()[-3000:] for w in workers)


def test_two_workers_starting_two_distributions_share_one_small_balance(start_worker, tenancy):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are what this proves: run it on PostgreSQL")
    CountryRateFactory(country="US", rate=Decimal("1"))
    ProviderAccountFactory(brand=tenancy.brand_a, messages_per_second=5000)
    grant(tenancy.brand_a, BALANCE)
    projects = [ProjectFactory(brand=tenancy.brand_a) for _ in range(2)]
    for index, project in enumerate(projects):
        populate(project, index * 1000)
    distributions = [
        DistributionFactory(project=project, message="Hi ${first_name}, 2 minutes? ${link}")
        for project in projects
    ]
    workers = [start_worker(concurrency=2), start_worker(concurrency=2)]

    for distribution in distributions:
        distribution_start_task.delay(distribution.pk)

    def finished():
        # Finished, and settled: the release runs just after the status changes.
        done = Distribution.objects.filter(
            pk__in=[d.pk for d in distributions], status__in=Distribution.FINISHED
        ).count()
        closed = CreditReservation.objects.filter(
            distribution__in=distributions, closed_at__isnull=False
        ).count()
        return done == closed == len(distributions)

    until(
        finished,
        progress=lambda: [distribution_progress(d) for d in distributions],
        describe=lambda: describe(distributions, workers),
    )

    # Reserved together at most what existed (each under the brand's lock).
    reserved = CreditEntry.objects.filter(
        brand=tenancy.brand_a, kind=CreditEntry.Kind.RESERVE
    ).aggregate(s=Sum("held"))["s"]
    assert reserved <= BALANCE
    assert CreditReservation.objects.filter(closed_at__isnull=False).count() == 2

    # Exactly the balance was sent, each message debited once, nothing left reserved.
    sent = Message.objects.filter(
        distribution__in=distributions, status__in=Message.HANDED_OVER
    ).count()
    debits = CreditEntry.objects.filter(brand=tenancy.brand_a, kind=CreditEntry.Kind.DEBIT)
    assert sent == BALANCE == debits.count()
    assert not debits.values("message_id").annotate(n=Count("pk")).filter(n__gt=1).exists()
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == 0 and balance.reserved == 0 and balance.available == 0
    assert credits_verify(brand=tenancy.brand_a)["consistent"]

    statuses = sorted(
        Distribution.objects.filter(pk__in=[d.pk for d in distributions]).values_list(
            "status", "status_reason"
        )
    )
    assert statuses == [
        (D.INTERRUPTED, "Sent partially: not enough credits."),
        (D.SENT, ""),
    ]


def test_a_worker_killed_mid_send_leaves_every_message_debited_exactly_once(start_worker, tenancy):
    """SIGKILL a worker while it sends through the fake Twilio: rows it left Sending are
    reconciled by the next worker; each accepted message is debited once, at its cost."""
    import signal

    from distributions.models import ProviderAccount
    from distributions.services import distribution_create
    from tests.fake_twilio import FakeTwilio

    count = 3000
    CountryRateFactory(country="US", rate=Decimal("0.5"))
    grant(tenancy.brand_a, 10_000)
    project = tenancy.project_a
    tenancy.participant_a.delete()
    populate_many(project, count)
    with FakeTwilio(callbacks=False) as fake:
        fake.set_latency(0.01)
        ProviderAccount.objects.create(
            brand=tenancy.brand_a,
            provider="twilio",
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            default_sender="+15005550006",
            messages_per_second=5000,
        )
        env = {
            "TWILIO_API_BASE_URL": fake.base_url,
            "RELAY_SEND_LEASE_SECONDS": "4",
            "RELAY_PROVIDER_TIMEOUT_SECONDS": "2",
        }
        worker = start_worker(concurrency=2, extra_env=env)
        distribution = distribution_create(project=project, message="Hello ${first_name}")
        clock = KillClock(lambda: fake.counters()["accepted"])
        until(lambda: clock.measure() >= 700, progress=clock.measure, describe=worker.output)
        worker.kill(signal.SIGKILL)
        assert clock.killed(distribution) < count, "finished before the worker could be killed"
        worker = start_worker(concurrency=2, extra_env=env)
        clock.wait_recovered(ready=time.monotonic(), describe=worker.output)

        def settled():
            return CreditReservation.objects.filter(
                distribution=distribution, closed_at__isnull=False
            ).exists()

        until(
            settled,
            progress=lambda: distribution_progress(distribution),
            describe=lambda: describe([distribution], [worker]),
        )
        distribution.refresh_from_db()
        assert distribution.status == D.SENT, distribution.status_reason
        assert fake.stats()["accepted"] == count

    debits = CreditEntry.objects.filter(distribution=distribution, kind=CreditEntry.Kind.DEBIT)
    assert debits.count() == count
    assert not debits.values("message_id").annotate(n=Count("pk")).filter(n__gt=1).exists()
    assert debits.aggregate(s=Sum("amount"))["s"] == Decimal("-0.5") * count
    balance = credits_balance(brand=tenancy.brand_a)
    assert balance.balance == Decimal(10_000) - Decimal("0.5") * count
    assert balance.reserved == 0
    assert credits_verify(brand=tenancy.brand_a)["consistent"]


def populate_many(project, count: int) -> None:
    people = Person.objects.bulk_create(
        [
            Person(
                brand=project.brand,
                person_id=f"K{i}",
                first_name=f"N{i}",
                phone=f"+1415{4000000 + i:07d}",
            )
            for i in range(count)
        ],
        batch_size=1000,
    )
    Participant.objects.bulk_create(
        [Participant(project=project, person=person) for person in people], batch_size=1000
    )
