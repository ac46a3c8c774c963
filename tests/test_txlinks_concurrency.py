"""Two identical calls at the same instant (a retry racing the original) make one link.
Real threads, real connections; meaningful on PostgreSQL, where the second insert of the key
waits for the first to commit and then fails on the unique constraint."""

import threading

from django.db import connection

import pytest

from participants.models import Participant, Person
from projects.models import SurveyLink, Transaction
from transactional.services import (
    LinkRequest,
    LinkResult,
    transactional_link_create,
    transactional_links_create,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def race(call, count: int) -> list:
    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(call())
        except Exception as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    return results


@pytest.mark.parametrize("key", ["retry-1", ""])
def test_concurrent_identical_calls_make_one_link(tenancy, key):
    project = tenancy.project_a
    body = {"contact": {"email": "race@example.com"}, "transaction": {"id": "T-race"}}

    results = race(
        lambda: transactional_link_create(
            project=project,
            contact={"email": "race@example.com"},
            transaction_id="T-race",
            channel_label="push",
            idempotency_key=key,
            body=body,
        ),
        count=4,
    )

    assert len(results) == 4
    assert len({result.link_id for result in results}) == 1
    assert sorted(result.created for result in results) == [False, False, False, True]
    assert Transaction.objects.count() == 1
    assert SurveyLink.objects.filter(project=project).count() == 1
    assert Person.objects.filter(email="race@example.com").count() == 1
    participants = Participant.objects.filter(project=project, person__email="race@example.com")
    assert participants.count() == 1


@pytest.mark.parametrize(
    "contact",
    [{"email": "same@example.com"}, {"person_id": "NEW-1", "email": "new@example.com"}],
)
def test_simultaneous_transactions_of_one_new_contact_make_one_person(tenancy, contact):
    project = tenancy.project_a
    ids = iter(["T-a", "T-b", "T-c", "T-d"])

    def call():
        transaction_id = next(ids)
        return transactional_link_create(
            project=project,
            contact=contact,
            transaction_id=transaction_id,
            channel_label="push",
            body={"contact": contact, "transaction": {"id": transaction_id}},
        )

    results = race(call, count=4)

    assert all(result.created for result in results)
    assert len({result.link_id for result in results}) == 4
    assert Person.objects.filter(brand=tenancy.brand_a, email=contact["email"]).count() == 1
    assert Participant.objects.filter(project=project, person__email=contact["email"]).count() == 1


def test_concurrent_identical_bulk_calls_make_one_link_per_transaction(tenancy):
    """Three copies of one 200-item bulk call at once (contacts shared between items, some
    new, some repeated): one link, one person per contact, the same answers for all."""
    project = tenancy.project_a
    requests = []
    for number in range(200):
        contact = {"email": f"c{number % 50}@example.com"}
        if number % 3 == 0:
            contact["person_id"] = f"P-{number % 50}"
        body = {"contact": contact, "transaction": {"id": f"B-{number}"}}
        requests.append(
            LinkRequest(
                contact=contact, transaction_id=f"B-{number}", channel_label="push", body=body
            )
        )

    answers = race(lambda: transactional_links_create(project=project, requests=requests), count=3)

    assert all(isinstance(a, LinkResult) for answer in answers for a in answer), answers
    links = [[a.link_id for a in answer] for answer in answers]
    assert links[0] == links[1] == links[2]
    assert sum(a.created for answer in answers for a in answer) == 200
    assert Transaction.objects.filter(project=project).count() == 200
    assert SurveyLink.objects.filter(project=project).count() == 200
    people = [[a.person for a in answer] for answer in answers]
    assert people[0] == people[1] == people[2]
    made = Person.objects.filter(brand=tenancy.brand_a, email__startswith="c")
    assert sorted(made.values_list("pk", flat=True)) == sorted(set(people[0]))
    # No identity made twice: one person per PersonID, one email-only person per email.
    named = made.exclude(person_id="")
    assert named.count() == named.values("person_id").distinct().count() == 50
    unnamed = made.filter(person_id="")
    assert unnamed.count() == unnamed.values("email").distinct().count()


def test_a_participant_made_by_another_transaction_mid_call_is_used(tenancy):
    """Another writer (an import, a page) adds the contact to the project while the call's
    combined participant+link insert runs: the insert waits for it, finds the participant
    neither made nor seen, writes again and links to that participant. One participant, one
    link, nothing half-written."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks between sessions: PostgreSQL (SQLite runs one writer at a time)")
    from django.db import connections
    from django.utils import timezone

    project = tenancy.project_a
    person = Person.objects.create(brand=tenancy.brand_a, email="mid@example.com")
    other = connections.create_connection("default")  # a second session, outside the test's
    other.set_autocommit(False)
    now = timezone.now()
    with other.cursor() as cursor:
        cursor.execute(
            "INSERT INTO participants_participant (project_id, person_id, role, metadata, "
            "added_by_id, created_at, updated_at) VALUES (%s, %s, 'import', '{}', NULL, %s, %s) "
            "RETURNING id",
            [project.pk, person.pk, now, now],
        )
        (made_by_other,) = cursor.fetchone()
    results = []

    def call():
        try:
            results.append(
                transactional_link_create(
                    project=project,
                    contact={"email": "mid@example.com"},
                    transaction_id="T-mid",
                    channel_label="push",
                )
            )
        except Exception as exc:  # noqa: BLE001  (reported by the assertion below)
            results.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=call)
    thread.start()
    try:
        # Wait until the call's INSERT waits for the other session's uncommitted row.
        with other.cursor() as cursor:
            for _ in range(200):
                # This session is inside its transaction: read the activity afresh each time.
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
                if cursor.fetchone()[0]:
                    break
                thread.join(timeout=0.05)
            else:
                pytest.fail(f"the call never waited for the other session: {results}")
        other.commit()
    finally:
        other.close()
        thread.join(timeout=30)

    (result,) = results
    assert isinstance(result, LinkResult), result
    assert result.created and result.participant == made_by_other
    assert Participant.objects.filter(project=project, person=person).count() == 1
    link = SurveyLink.objects.get(pk=result.link_id)
    assert link.participant_id == made_by_other
    assert Transaction.objects.filter(project=project, external_id="T-mid").count() == 1
