"""Query counts of the hot paths: each is set-based, so its statements do not grow with the
rows it handles. Every test runs one size and a larger one and asserts the same exact count
(with what each statement is), so a lost set-based statement (an N+1) fails here before a
benchmark shows it. Counts include the SAVEPOINT/RELEASE pairs of the ``atomic`` blocks inside
the path (the test runs in a transaction), and differ by database where the code does."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

import pytest

from distributions import fairqueue
from distributions.charging import distribution_cover, distribution_reserve, messages_debit
from distributions.models import Distribution, Message
from distributions.sending import distribution_enqueue, send_batch
from distributions.services import distribution_materialise
from participants.services import import_confirm, import_create
from tests.factories.brands import BrandFactory
from tests.factories.credits import grant, set_default_rate
from tests.factories.distributions import DistributionFactory, ProviderAccountFactory
from tests.factories.participants import ParticipantFactory, PersonFactory, csv_upload
from tests.factories.projects import ProjectFactory
from transactional.services import LinkRequest, transactional_links_create

pytestmark = pytest.mark.django_db
POSTGRES = connection.vendor == "postgresql"


def queries(function, **kwargs):
    with CaptureQueriesContext(connection) as captured:
        result = function(**kwargs)
    return result, [" ".join(q["sql"].split()) for q in captured.captured_queries]


def audience(brand, count: int, *, rate: int, prefix: str) -> Distribution:
    project = ProjectFactory(brand=brand, stage="active")
    ProviderAccountFactory(brand=brand, provider="outbox", messages_per_second=rate)
    for i in range(count):
        person = PersonFactory(brand=brand, phone=f"+1415{prefix}{i:04d}")
        ParticipantFactory(project=project, person=person)
    return DistributionFactory(
        project=project,
        status=Distribution.Status.IN_PROGRESS,
        message="Hi ${first_name}: ${link}",
    )


def started(brand, count: int, *, rate: int, prefix: str) -> Distribution:
    distribution = audience(brand, count, rate=rate, prefix=prefix)
    distribution_materialise(distribution=distribution)
    distribution_reserve(distribution=distribution)
    distribution_enqueue(distribution=distribution)
    return distribution


@pytest.mark.parametrize(("lanes", "rate"), [(1, 5), (3, 20)])
def test_a_fair_pick_and_its_send_batch(lanes, rate, django_capture_on_commit_callbacks):
    """Brands' lanes, each leasing a full bucket (5 or 20 rows) of its 40 Pending rows: the
    statements are the same whatever the rows; the send adds one per lane only for the
    provider's own write (the outbox's INSERT of a window; Twilio's would be HTTP calls)."""
    set_default_rate("1")
    brands = [BrandFactory() for _ in range(lanes)]
    for brand in brands:
        grant(brand, 1000)
    for i, brand in enumerate(brands):
        started(brand, 40, rate=rate, prefix=f"20{i}")

    grants, picked = queries(fairqueue.pick, lease="L1")
    assert [grant.leased for grant in grants] == [rate] * lanes
    # SAVEPOINT; the ready lanes; each brand's last turn; lock the lanes' senders; the rows
    # leased (PostgreSQL: one UPDATE ... RETURNING for every lane; SQLite: one per lane); the
    # senders' tokens paid (one UPDATE ... FROM VALUES); the lanes' served times; RELEASE.
    assert len(picked) == (8 if POSTGRES else 7 + lanes), picked

    with django_capture_on_commit_callbacks(execute=False):  # the outbox's receipts wait
        stats, sent = queries(send_batch, lease="L1", grants=grants)
    assert stats["sent"] == lanes * rate and stats["failed"] == 0
    # The leased rows, their distributions, the brands' provider accounts and one opt-out
    # check for all (4); the credits cover of every lane in one transaction (the
    # reservations, rate card and country rates, then under the accounts' locks: the locks,
    # stale holds, existing holds, reservation pools, accounts' figures, the new holds: 13);
    # the links (existing, new) and the bodies (3); the lease refresh (3); the hand-over
    # under the opt-out guard: the last opt-out check, the senders' tokens (4), the
    # providers' writes, one a lane (7 + lanes with its SAVEPOINT pair); the senders' refill
    # from the providers' answers (4 with its SAVEPOINT pair); the outcome (one
    # UPDATE ... FROM VALUES, one INSERT ... SELECT of events, the debit of every lane: 8, the
    # webhook endpoints asked once: 13 with its SAVEPOINT pair); the lanes' finish probe (1).
    # PostgreSQL adds SET LOCAL synchronous_commit to the lease refresh and the outcome (2).
    assert len(sent) == (50 if POSTGRES else 48) + lanes, sent


@pytest.mark.parametrize("size", [5, 40])
def test_materialisation(size):
    """One INSERT ... SELECT of the recipient rows and one of their events, whatever the
    audience: the brand's contact frequency rules, SAVEPOINT, the two INSERTs, RELEASE, then
    the counts by status. PostgreSQL adds SET LOCAL work_mem and the distribution's FOR KEY
    SHARE lock (with frequency rules it writes the events in the rows' statement, WITH ...
    RETURNING: tests/test_policies_frequency.py)."""
    distribution = audience(BrandFactory(), size, rate=0, prefix="301")
    counts, made = queries(distribution_materialise, distribution=distribution)
    assert counts["by_status"] == {"pending": size}
    assert len(made) == 6 + (2 if POSTGRES else 0), made


@pytest.mark.parametrize("size", [5, 40])
def test_a_debit(size):
    """Debiting accepted messages: the reservation; under the account lock (SAVEPOINT, the
    lock's two reads) one INSERT ... SELECT of the entries and one DELETE of their holds;
    whether the reservation can close (one read); RELEASE."""
    set_default_rate("1")
    brand = BrandFactory()
    grant(brand, 1000)
    distribution = audience(brand, size, rate=0, prefix="302")
    distribution_materialise(distribution=distribution)
    distribution_reserve(distribution=distribution)
    rows = list(Message.objects.filter(distribution=distribution))
    distribution_cover(distribution=distribution, messages=rows)
    Message.objects.filter(distribution=distribution).update(status="sent", provider_id="SMx")
    _, debited = queries(
        messages_debit, distribution=distribution, message_ids=[row.pk for row in rows]
    )
    assert len(debited) == 8, debited


@pytest.mark.parametrize("size", [10, 40])
def test_an_import_batch(size, tenancy, settings):
    """Confirming an import (one batch): the job claimed and read (4), the brand and project,
    then in one transaction (SAVEPOINT ... RELEASE) the job's status, the people matched by
    PersonID and by email (2), one INSERT of people, one of participants, the job's counts;
    then the files released and the job read back (3). PostgreSQL: the same frame around the
    set-based import (docs/import.md): an advisory lock, the file COPYed into temporary
    tables (COPY is not counted), matched, counted and written by UPDATE/INSERT ... SELECT,
    35 statements whatever the rows."""
    settings.RELAY_IMPORT_INLINE_MAX_BYTES = 10 * 1024 * 1024
    header = ["PersonID", "First name", "Last name", "Email", "Phone", "Role", "Department"]
    rows = [header] + [
        [f"P{i}", "Ada", "King", f"p{i}@example.com", f"+1415555{i:04d}", "Employee", "R&D"]
        for i in range(size)
    ]
    job = import_create(
        brand=tenancy.brand_a,
        project=tenancy.project_a,
        upload=csv_upload(rows),
        actor=tenancy.project_admin_a,
    )
    job, imported = queries(import_confirm, job=job, actor=tenancy.project_admin_a)
    assert job.created_count == size
    assert len(imported) == (35 if POSTGRES else 17), imported


@pytest.mark.parametrize("size", [1, 20])
def test_the_one_call_link(size, tenancy):
    """Transactional links (one item, the one call; twenty, a bulk call): a constant number
    of statements (the transactional distribution is cached in the process). SQLite: the
    replay check, then SAVEPOINT, the directory read, one INSERT of people, one of
    participants and their read back, one INSERT of links, one of transactions, RELEASE.
    PostgreSQL: see ``EXPECTED_LINK_QUERIES``."""
    project = tenancy.project_a
    transactional_links_create(  # the transactional distribution exists from now on
        project=project,
        requests=[LinkRequest(contact={"person_id": "W-0"}, transaction_id="T-W")],
    )
    requests = [
        LinkRequest(
            contact={"person_id": f"C-{i}", "email": f"c{i}@example.com"},
            transaction_id=f"T-{i}",
            data={"order": i},
        )
        for i in range(size)
    ]
    answers, made = queries(transactional_links_create, project=project, requests=requests)
    assert all(answer.created for answer in answers)
    assert len(made) == EXPECTED_LINK_QUERIES[(connection.vendor, size == 1)], made


# (database, one item): statements of transactional_links_create (the failure shows the SQL).
EXPECTED_LINK_QUERIES = {
    ("sqlite", True): 9,
    ("sqlite", False): 9,
    ("postgresql", True): 3,  # SAVEPOINT, SELECT relay_transactional_link(...), RELEASE
    ("postgresql", False): 6,  # the Python engine's bulk path, set-based (the SQL lists it)
}
