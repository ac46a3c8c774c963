"""Bulk transactional links: up to 1,000 items in one call, answered item by item."""

import pytest

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
