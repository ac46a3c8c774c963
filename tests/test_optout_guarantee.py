"""The guarantee: no message is handed to a provider for a number opted out in that brand,
checked at materialisation and again just before each provider call; an opt-out arriving while
a distribution is being sent wins for every message not yet handed over."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

import pytest

from distributions.models import Distribution, Message, MessageEvent, OutboxMessage
from distributions.providers.outbox import OutboxProvider
from distributions.providers.registry import provider_classes
from distributions.selectors import distribution_metrics
from distributions.sending import SEND_WINDOW, send_chunk
from distributions.services import distribution_create, distribution_materialise
from optouts.guard import handover_guard
from optouts.models import OptOut, Scope, Source
from optouts.services import optout_record
from participants.models import Participant, Person
from tests.factories.distributions import DistributionFactory, ProviderAccountFactory
from tests.progress import until, wait_until_finished
from tests.test_optout_support import self_service

S = Message.Status


def populate(project, count: int, start: int = 0) -> list[str]:
    phones = [f"+1415{3000000 + start + i:07d}" for i in range(count)]
    people = Person.objects.bulk_create(
        [
            Person(brand=project.brand, person_id=f"G{start + i}", first_name=f"N{i}", phone=p)
            for i, p in enumerate(phones)
        ],
        batch_size=1000,
    )
    Participant.objects.bulk_create(
        [Participant(project=project, person=person) for person in people], batch_size=1000
    )
    return phones


# --- each window re-checks ----------------------------------------------------------------
class StopWhileSendingProvider(OutboxProvider):
    """The outbox, plus recipients who reply STOP while the first window is with the provider."""

    code = "stop-while-sending"
    replies: list[str] = []

    def send_window(self, messages):
        results = super().send_window(messages)
        while type(self).replies:
            optout_record(
                brand_id=self.account.brand_id,
                channel="sms",
                address=type(self).replies.pop(),
                source=Source.REPLY,
            )
        return results


@pytest.fixture
def stop_while_sending(settings):
    settings.RELAY_SMS_PROVIDERS = [
        *settings.RELAY_SMS_PROVIDERS,
        f"{__name__}.StopWhileSendingProvider",
    ]
    provider_classes.cache_clear()
    yield StopWhileSendingProvider
    StopWhileSendingProvider.replies = []
    provider_classes.cache_clear()


@pytest.mark.django_db
def test_an_opt_out_during_one_window_wins_for_the_next_windows(tenancy, stop_while_sending):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    self_service(tenancy.brand_a)
    phones = populate(project, SEND_WINDOW * 3)
    ProviderAccountFactory(brand=tenancy.brand_a, provider=stop_while_sending.code)
    distribution = DistributionFactory(project=project, status=Distribution.Status.IN_PROGRESS)
    distribution_materialise(distribution=distribution)
    first_window, later = phones[:SEND_WINDOW], phones[SEND_WINDOW:]
    stop_while_sending.replies = [first_window[-1], later[0], later[-1]]

    ids = list(distribution.messages.values_list("pk", flat=True))
    stats = send_chunk(distribution_id=distribution.pk, first_id=min(ids), last_id=max(ids))

    assert stats["skipped_optout"] == 2 and stats["sent"] == len(phones) - 2
    rows = {m.address: m for m in distribution.messages.all()}
    assert rows[first_window[-1]].status == S.SENT  # handed over before the reply came
    for phone in (later[0], later[-1]):
        assert rows[phone].status == S.SKIPPED_OPTOUT and rows[phone].provider_id == ""
        assert not OutboxMessage.objects.filter(to=phone).exists()
        event = MessageEvent.objects.get(message=rows[phone])
        assert event.status == S.SKIPPED_OPTOUT and event.detail == "Opted out"
    assert distribution_metrics(distribution=distribution)["skipped_optout"] == 2


@pytest.mark.django_db
def test_materialisation_skips_numbers_opted_out_in_this_brand_only(
    tenancy, eager_tasks, django_capture_on_commit_callbacks
):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    self_service(tenancy.brand_a)
    phones = populate(project, 4)
    optout_record(brand_id=tenancy.brand_a.pk, channel="sms", address=phones[0], source="reply")
    optout_record(brand_id=tenancy.brand_b.pk, channel="sms", address=phones[1], source="reply")
    optout_record(brand_id=tenancy.brand_a.pk, channel="email", address=phones[2], source="x")
    with django_capture_on_commit_callbacks(execute=True):
        distribution = distribution_create(project=project, message="Hi ${first_name}")
    statuses = dict(distribution.messages.values_list("address", "status"))
    assert statuses[phones[0]] == S.SKIPPED_OPTOUT
    assert statuses[phones[1]] == S.DELIVERED  # brand B's opt-out: by design, no effect on A
    assert statuses[phones[2]] == S.DELIVERED  # another channel
    assert not OutboxMessage.objects.filter(to=phones[0]).exists()


# --- the lock that makes it exact ---------------------------------------------------------
WINDOW = ["+14155550001", "+14155550002"]


def hold_window(brand, entered, release, marks):
    try:
        with handover_guard(brand_id=brand.pk, channel="sms", addresses=WINDOW):
            if connection.vendor == "sqlite":  # the write lock is taken by the first write
                OutboxMessage.objects.create(brand=brand, sid="OBguard", to="+1", body="x")
            entered.set()
            release.wait(10)
            marks["window_left"] = timezone.now()
    finally:
        connection.close()


def record_in_thread(brand, address, marks):
    def run():
        try:
            optout_record(brand_id=brand.pk, channel="sms", address=address, source="reply")
            marks[address] = timezone.now()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_an_opt_out_waits_for_the_window_in_flight(tenancy):
    brand = tenancy.brand_a
    entered, release, marks = threading.Event(), threading.Event(), {}
    sender = threading.Thread(target=hold_window, args=(brand, entered, release, marks))
    sender.start()
    assert entered.wait(10)
    writer = record_in_thread(brand, WINDOW[1], marks)
    time.sleep(0.5)
    assert WINDOW[1] not in marks and not OptOut.objects.exists()  # it waits
    release.set()
    sender.join(10)
    writer.join(10)
    assert OptOut.objects.get().created_at >= marks["window_left"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_only_the_numbers_of_the_window_wait_and_windows_share(tenancy):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: every opt-out waits for the window")
    brand = tenancy.brand_a
    entered, release, marks = threading.Event(), threading.Event(), {}
    sender = threading.Thread(target=hold_window, args=(brand, entered, release, marks))
    sender.start()
    assert entered.wait(10)
    # Another number, and the same number in brand B, do not wait for the window.
    other = record_in_thread(brand, "+14155550003", marks)
    other.join(5)
    assert "+14155550003" in marks
    optout_record(brand_id=tenancy.brand_b.pk, channel="sms", address=WINDOW[0], source="x")
    # Another window with the same numbers runs alongside.
    inside = threading.Event()

    def second_window():
        try:
            with handover_guard(brand_id=brand.pk, channel="sms", addresses=WINDOW):
                inside.set()
        finally:
            connection.close()

    other_window = threading.Thread(target=second_window)
    other_window.start()
    assert inside.wait(5)
    release.set()
    for thread in (sender, other_window):
        thread.join(10)
    assert OptOut.objects.count() == 2


def _advisory_locks(*, own: bool) -> int:
    """Advisory locks held: by this session (``own``) or by any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND (NOT %s OR pid = pg_backend_pid())",
            [own],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_guard_refused_its_release_is_released_when_the_work_ends(tenancy):
    """A window's guard is a session lock: inside a transaction that failed, its release is
    refused, so the connection is closed when the task or request ends (a worker keeps its
    connection from one task to the next: without that, the numbers' opt-outs would wait
    for its next release or its end of life)."""
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks: PostgreSQL")
    guard = handover_guard(brand_id=tenancy.brand_a.pk, channel="sms", addresses=WINDOW)
    with pytest.raises(DatabaseError), transaction.atomic(), guard, connection.cursor() as cursor:
        cursor.execute("SELECT 1 / 0")  # the transaction fails: the release is refused
    assert _advisory_locks(own=True) == len(WINDOW)  # still held after the rollback
    close_old_connections()  # what the end of a task (config.celery) or request does
    assert _advisory_locks(own=False) == 0
    optout_record(brand_id=tenancy.brand_a.pk, channel="sms", address=WINDOW[0], source="x")


# --- 5,000 recipients, a real worker, opt-outs arriving mid-send ---------------------------
@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_opt_outs_while_a_real_worker_sends_3000(start_worker, tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    self_service(tenancy.brand_a)
    phones = populate(project, 3000)
    ProviderAccountFactory(brand=tenancy.brand_a, provider="outbox", messages_per_second=200)
    worker = start_worker(concurrency=2)
    distribution = distribution_create(project=project, message="Hello ${first_name}")
    rows = Message.objects.filter(distribution=distribution)

    handed = rows.filter(status__in=Message.HANDED_OVER)
    until(lambda: handed.count() >= 600, progress=handed.count, describe=worker.output)
    # 300 recipients whose turn has not come reply STOP, several at once, as replies arrive
    # (and one who was already messaged does too).
    not_yet = list(
        rows.filter(status=S.PENDING).order_by("-pk").values_list("address", flat=True)[:300]
    )
    already = rows.filter(status__in=Message.HANDED_OVER).values_list("address", flat=True)[0]
    victims = [*not_yet, already]

    def reply_stop(address):
        try:
            optout = optout_record(
                brand_id=tenancy.brand_a.pk, channel="sms", address=address, source=Source.REPLY
            )
            return address, optout.created_at
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        opted_at = dict(pool.map(reply_stop, victims))

    wait_until_finished(distribution, describe=worker.output)
    assert distribution.status == Distribution.Status.SENT, distribution.status_reason

    outbox = OutboxMessage.objects.filter(brand=tenancy.brand_a)
    sent_at = {}
    for to, created in outbox.values_list("to", "created_at"):
        assert to not in sent_at, f"{to} was messaged twice"
        sent_at[to] = created
    by_address = dict(rows.values_list("address", "status"))
    skipped = 0
    for address in victims:
        if address in sent_at:  # handed over before the opt-out, never after
            assert sent_at[address] < opted_at[address], address
            assert by_address[address] in Message.HANDED_OVER
        else:
            assert by_address[address] == S.SKIPPED_OPTOUT, address
            skipped += 1
    assert already in sent_at
    print(f"opt-outs mid-send: {skipped} of {len(victims)} skipped, the rest sent before them")
    assert skipped >= 250, f"only {skipped} of {len(not_yet)} opt-outs came before their turn"
    assert rows.filter(status=S.SKIPPED_OPTOUT).count() == skipped
    assert len(sent_at) == 3000 - skipped
    assert set(sent_at) | {a for a in victims if a not in sent_at} == set(phones)
    assert distribution_metrics(distribution=distribution)["skipped_optout"] == skipped
    assert OptOut.objects.filter(brand=tenancy.brand_a, active=True).count() == len(victims)
    assert OptOut.objects.filter(scope=Scope.DIRECTORY).count() == len(victims)
