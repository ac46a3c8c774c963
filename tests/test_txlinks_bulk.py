"""Bulk transactional links: up to 1,000 items in one call, answered item by item."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

import pytest

from participants.models import Person
from projects.models import SurveyLink, Transaction

pytestmark = pytest.mark.django_db


def url(project) -> str:
    return f"/api/v1/projects/{project.pk}/links/"


def item(number: int, **overrides) -> dict:
    payload = {
        "contact": {"person_id": f"P-{number}", "email": f"p{number}@example.com"},
        "transaction": {"id": f"T-{number}", "data": {"n": number}},
        "channel": "push",
    }
    payload.update(overrides)
    return payload


def test_good_items_are_made_and_bad_ones_answered_with_index_and_field(api_a, tenancy):
    items = [item(0), item(1, contact={"first_name": "No identity"}), item(2), item(3, x=1)]

    answer = api_a.post(url(tenancy.project_a), items, format="json")

    assert answer.status_code == 200, answer.json()
    data = answer.json()
    assert (data["created"], data["replayed"], data["failed"]) == (2, 0, 2)
    results = data["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[0]["created"] and results[2]["created"]
    assert "contact" in results[1]["error"]["fields"] and results[1]["error"]["status"] == 400
    assert "x" in results[3]["error"]["fields"]
    links = SurveyLink.objects.filter(project=tenancy.project_a)
    assert sorted(links.values_list("pk", flat=True)) == sorted(
        [results[0]["link_id"], results[2]["link_id"]]
    )
    assert Transaction.objects.count() == 2


def test_a_retried_bulk_call_answers_the_same_links(api_a, tenancy):
    items = [item(n) for n in range(5)]
    first = api_a.post(url(tenancy.project_a), items, format="json").json()
    again = api_a.post(url(tenancy.project_a), items, format="json").json()

    assert (again["created"], again["replayed"]) == (0, 5)
    assert [r["link_id"] for r in again["results"]] == [r["link_id"] for r in first["results"]]


def test_a_conflicting_item_answers_409_in_its_place(api_a, tenancy):
    api_a.post(url(tenancy.project_a), [item(1)], format="json")
    changed = item(1)
    changed["transaction"]["data"] = {"n": 99}

    results = api_a.post(url(tenancy.project_a), [changed, item(2)], format="json").json()

    assert results["results"][0]["error"]["status"] == 409
    assert results["results"][1]["created"] is True


def test_a_closed_project_fails_each_item_with_409(api_a, tenancy):
    tenancy.project_a.stage = "paused"
    tenancy.project_a.save()
    results = api_a.post(url(tenancy.project_a), [item(1)], format="json").json()["results"]
    assert results[0]["error"]["status"] == 409
    assert results[0]["error"]["fields"]["reason"] == "paused"


def test_1000_items_are_accepted_and_1001_answer_413(api_a, tenancy):
    too_many = api_a.post(url(tenancy.project_a), [item(n) for n in range(1001)], format="json")
    assert too_many.status_code == 413
    assert not SurveyLink.objects.exists()

    answer = api_a.post(url(tenancy.project_a), [item(n) for n in range(1000)], format="json")
    assert answer.status_code == 200
    assert answer.json()["created"] == 1000
    assert SurveyLink.objects.filter(project=tenancy.project_a).count() == 1000


def test_an_empty_list_is_refused(api_a, tenancy):
    assert api_a.post(url(tenancy.project_a), [], format="json").status_code == 400


def test_another_brands_project_is_404_in_bulk_too(api_a, tenancy):
    assert api_a.post(url(tenancy.project_b), [item(1)], format="json").status_code == 404


# --- set-based writes: the same rules as one call after another ---------------------------
def test_items_about_one_contact_make_one_person_updated_in_order(api_a, tenancy):
    items = [
        item(1, contact={"email": "ana@example.com", "first_name": "Ana"}),
        item(2, contact={"email": "ana@example.com", "last_name": "Silva"}),
        item(3, contact={"email": "ana@example.com", "first_name": "Anna"}),
    ]

    data = api_a.post(url(tenancy.project_a), items, format="json").json()

    assert data["created"] == 3
    people = {r["person"] for r in data["results"]}
    participants = {r["participant"] for r in data["results"]}
    assert len(people) == 1 and len(participants) == 1
    person = Person.objects.get(pk=people.pop())
    assert (person.first_name, person.last_name) == ("Anna", "Silva")
    assert len({r["link_id"] for r in data["results"]}) == 3


def test_an_existing_person_is_found_by_person_id_email_then_phone(api_a, tenancy):
    known = tenancy.participant_a.person
    Person.objects.filter(pk=known.pk).update(phone="+14155550100", person_id="")
    items = [
        item(1, contact={"phone": "+1 415 555 0100", "metadata": {"tier": "gold"}}),
        item(2, contact={"email": "nobody@example.com", "phone": "+14155550100"}),
        item(3, contact={"person_id": "NEW-9", "phone": "+14155550100"}),
    ]

    results = api_a.post(url(tenancy.project_a), items, format="json").json()["results"]

    assert results[0]["person"] == results[1]["person"] == known.pk
    assert results[0]["participant"] == tenancy.participant_a.pk
    assert results[2]["person"] != known.pk  # a PersonID is matched by PersonID only
    known.refresh_from_db()
    assert known.metadata["tier"] == "gold" and known.email == "nobody@example.com"


def test_twin_items_answer_one_link_and_a_changed_twin_conflicts(api_a, tenancy):
    changed = item(1)
    changed["transaction"]["data"] = {"n": 2}
    items = [item(1), item(1), changed, item(2)]

    data = api_a.post(url(tenancy.project_a), items, format="json").json()

    first, twin, other, second = data["results"]
    assert first["created"] and not twin["created"] and twin["link_id"] == first["link_id"]
    assert other["error"]["status"] == 409
    assert other["error"]["fields"]["differences"] == "transaction.data"
    assert second["created"]
    assert (data["created"], data["replayed"], data["failed"]) == (2, 1, 1)
    assert Transaction.objects.count() == 2


def test_an_item_that_sets_opted_out_fails_alone(api_a, tenancy):
    items = [item(1, contact={"email": "x@example.com", "metadata": {"Opted out": "No"}}), item(2)]

    results = api_a.post(url(tenancy.project_a), items, format="json").json()["results"]

    assert results[0]["error"]["status"] == 400 and "metadata" in results[0]["error"]["fields"]
    assert results[1]["created"]
    assert not Person.objects.filter(email="x@example.com").exists()


def test_bad_items_in_every_way_leave_the_good_ones_written(api_a, tenancy):
    items = [
        item(0),
        "not an object",
        item(2, contact={"phone": "12"}),
        item(3, expires_at="2000-01-01T00:00:00Z"),
        item(4, channel="Bad Label"),
        item(5),
    ]

    results = api_a.post(url(tenancy.project_a), items, format="json").json()["results"]

    assert [("error" in r) for r in results] == [False, True, True, True, True, False]
    assert "contact.phone" in results[2]["error"]["fields"]
    assert "expires_at" in results[3]["error"]["fields"]
    assert "channel" in results[4]["error"]["fields"]
    assert SurveyLink.objects.count() == 2
    assert sorted(Transaction.objects.values_list("external_id", flat=True)) == ["T-0", "T-5"]


def test_a_bulk_call_costs_the_same_queries_whatever_its_size(api_a, tenancy):
    """On PostgreSQL every write is one statement for 1,000 items; SQLite's ``bulk_create``
    splits by its 999-parameter limit, so there the large call stays under one split."""
    api_a.post(url(tenancy.project_a), [item(-1)], format="json")  # the distribution exists

    def queries(numbers) -> int:
        with CaptureQueriesContext(connection) as captured:
            answer = api_a.post(url(tenancy.project_a), [item(n) for n in numbers], format="json")
        assert answer.json()["created"] == len(numbers)
        return len(captured)

    size = 1000 if connection.vendor == "postgresql" else 80
    small, large = queries(range(10)), queries(range(1000, 1000 + size))

    assert small == large
    assert large <= 16  # key, project, replays, locks, people, participants, links...


def test_link_tokens_are_uniform_over_the_alphabet():
    from collections import Counter

    from core.tokens import TOKEN_ALPHABET, TOKEN_LENGTH, new_tokens

    tokens = new_tokens(62_000)

    assert len(set(tokens)) == 62_000 and {len(t) for t in tokens} == {TOKEN_LENGTH}
    counts = Counter("".join(tokens))
    assert set(counts) == set(TOKEN_ALPHABET)
    # 10,000 of each expected (sd 100): keeping the bytes that bias the draw would give the
    # first eight characters 25 % more.
    assert all(9_000 < n < 11_000 for n in counts.values()), counts
