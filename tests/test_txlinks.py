"""Transactional personal links: one call makes the person, participant, transaction and link;
retries answer the same link; counted in a transactional distribution per channel label."""

from datetime import timedelta

from django.utils import timezone

import pytest

from distributions.models import Distribution
from participants.models import Participant, Person
from projects.models import Project, SurveyLink, Transaction

pytestmark = pytest.mark.django_db


def url(project) -> str:
    return f"/api/v1/projects/{project.pk}/links/"


def body(**overrides) -> dict:
    payload = {
        "contact": {"person_id": "C-1", "email": "Ana@Example.com", "first_name": "Ana"},
        "transaction": {
            "id": "T-100",
            "occurred_at": "2026-11-23T10:00:00Z",
            "data": {"venue": "Arena", "gate": 4, "vip": True},
        },
        "channel": "push",
    }
    payload.update(overrides)
    return payload


def test_one_call_makes_person_participant_transaction_and_link(api_a, tenancy):
    project = tenancy.project_a
    expires = (timezone.now() + timedelta(days=2)).isoformat()

    answer = api_a.post(url(project), body(expires_at=expires), format="json")

    assert answer.status_code == 201, answer.json()
    data = answer.json()
    link = SurveyLink.objects.get(pk=data["link_id"])
    person = Person.objects.get(pk=data["person"])
    record = Transaction.objects.get(pk=data["transaction"])
    assert data["url"] == link.url and link.url.endswith(f"/s/{link.token}")
    assert len(link.token) <= 16 and "T-100" not in data["url"]
    assert (person.person_id, person.email, person.first_name) == ("C-1", "ana@example.com", "Ana")
    assert person.brand == tenancy.brand_a
    assert link.participant_id == data["participant"]
    assert Participant.objects.get(pk=data["participant"]).project == project
    assert record.external_id == data["transaction_id"] == "T-100"
    assert record.data == {"venue": "Arena", "gate": 4, "vip": True}
    assert record.link == link and link.expires_at is not None and data["expires_at"]
    distribution = link.distribution
    assert distribution.kind == Distribution.Kind.TRANSACTIONAL
    assert distribution.label == "push" and distribution.project == project
    assert distribution.status == Distribution.Status.SENT


def test_existing_person_is_updated_not_duplicated(api_a, tenancy):
    person = tenancy.participant_a.person
    contact = {"email": person.email, "last_name": "Newname", "metadata": {"tier": "gold"}}

    answer = api_a.post(url(tenancy.project_a), body(contact=contact), format="json")

    assert answer.status_code == 201, answer.json()
    assert answer.json()["participant"] == tenancy.participant_a.pk
    person.refresh_from_db()
    assert person.last_name == "Newname" and person.metadata["tier"] == "gold"
    assert Person.objects.filter(brand=tenancy.brand_a).count() == 1


def test_a_retry_answers_the_same_link(api_a, tenancy):
    first = api_a.post(url(tenancy.project_a), body(), format="json", HTTP_IDEMPOTENCY_KEY="k1")
    again = api_a.post(url(tenancy.project_a), body(), format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["link_id"] == first.json()["link_id"]
    assert again.json()["created"] is False
    assert SurveyLink.objects.filter(project=tenancy.project_a).count() == 1


def test_the_transaction_id_is_the_key_without_a_header(api_a, tenancy):
    first = api_a.post(url(tenancy.project_a), body(), format="json")
    again = api_a.post(url(tenancy.project_a), body(), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["link_id"] == first.json()["link_id"]


def test_the_same_key_with_other_data_answers_409_naming_the_difference(api_a, tenancy):
    api_a.post(url(tenancy.project_a), body(), format="json", HTTP_IDEMPOTENCY_KEY="k1")
    changed = body()
    changed["transaction"] = {**changed["transaction"], "data": {"venue": "Stadium"}}

    answer = api_a.post(url(tenancy.project_a), changed, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert "transaction.data" in error["message"]
    assert error["fields"]["differences"] == "transaction.data"


def test_a_transaction_id_reused_with_other_data_answers_409(api_a, tenancy):
    api_a.post(url(tenancy.project_a), body(), format="json")
    other = body(contact={"email": "someone@example.com"})

    answer = api_a.post(url(tenancy.project_a), other, format="json")

    assert answer.status_code == 409
    assert "contact.email" in answer.json()["error"]["message"]
    assert SurveyLink.objects.count() == 1


@pytest.mark.parametrize(
    ("stage", "reason"), [(Project.Stage.PAUSED, "paused"), (Project.Stage.CLOSED, "closed")]
)
def test_a_paused_or_closed_project_answers_409_with_the_reason(api_a, tenancy, stage, reason):
    Project.objects.filter(pk=tenancy.project_a.pk).update(stage=stage)

    answer = api_a.post(url(tenancy.project_a), body(), format="json")

    assert answer.status_code == 409
    assert answer.json()["error"]["fields"]["reason"] == reason
    assert not Transaction.objects.exists() and not Person.objects.filter(person_id="C-1")


def test_an_availability_window_in_the_past_is_closed(api_a, tenancy):
    Project.objects.filter(pk=tenancy.project_a.pk).update(
        available_until=timezone.now() - timedelta(hours=1)
    )
    answer = api_a.post(url(tenancy.project_a), body(), format="json")
    assert answer.status_code == 409
    assert answer.json()["error"]["fields"]["reason"] == "closed"


def test_another_brands_project_or_a_missing_one_is_404(api_a, tenancy):
    assert api_a.post(url(tenancy.project_b), body(), format="json").status_code == 404
    missing = f"/api/v1/projects/{tenancy.project_b.pk + 1000}/links/"
    assert api_a.post(missing, body(), format="json").status_code == 404
    assert not Transaction.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"contact": {"first_name": "Ana"}}, "contact"),
        ({"contact": {"email": "not-an-email"}}, "contact"),
        ({"transaction": {"data": {}}}, "transaction"),
        ({"transaction": {"id": "T", "data": {"nested": {"a": 1}}}}, "transaction"),
        ({"channel": "Push Notifications!"}, "channel"),
        ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_input_answers_400_naming_the_field(api_a, tenancy, change, field):
    answer = api_a.post(url(tenancy.project_a), body(**change), format="json")

    assert answer.status_code == 400, answer.json()
    assert field in answer.json()["error"]["fields"]
    assert not SurveyLink.objects.exists()


def test_a_bad_phone_names_the_field(api_a, tenancy):
    answer = api_a.post(url(tenancy.project_a), body(contact={"phone": "12"}), format="json")
    assert answer.status_code == 400
    assert "contact.phone" in answer.json()["error"]["fields"]


def test_a_viewer_may_not_make_links(api_client_for, tenancy):
    viewer = api_client_for(user=tenancy.viewer_a)
    assert viewer.post(url(tenancy.project_a), body(), format="json").status_code == 403


def test_labels_make_one_transactional_distribution_each(api_a, tenancy):
    project = tenancy.project_a
    for number, label in enumerate(["push", "push", "kiosk"]):
        payload = body(channel=label)
        payload["transaction"] = {"id": f"T-{number}"}
        assert api_a.post(url(project), payload, format="json").status_code == 201
    transactional = Distribution.objects.filter(kind=Distribution.Kind.TRANSACTIONAL)
    assert sorted(transactional.values_list("label", flat=True)) == ["kiosk", "push"]
    push = transactional.get(label="push")
    assert push.links.count() == 2


def test_the_old_body_still_makes_links_for_participants(api_a, tenancy):
    answer = api_a.post(url(tenancy.project_a), {"channel": "email"}, format="json")
    assert answer.status_code == 201
    assert answer.json()[0]["participant"] == tenancy.participant_a.pk


def test_listing_links_still_works(api_a, tenancy):
    api_a.post(url(tenancy.project_a), body(), format="json")
    answer = api_a.get(url(tenancy.project_a))
    assert answer.status_code == 200
    assert len(answer.json()["results"]) == 1


def test_one_call_costs_a_bounded_number_of_queries(api_a, tenancy, django_assert_max_num_queries):
    api_a.post(url(tenancy.project_a), body(), format="json")  # the distribution exists now
    payload = body(contact={"person_id": "C-2", "email": "bo@example.com"})
    payload["transaction"] = {"id": "T-2", "data": {"a": 1}}

    # Key lookup, project, replay check (before the lock on SQLite, after it on PostgreSQL),
    # identity lock (PostgreSQL), directory read, person insert, participant (two statements
    # on SQLite), distribution, link, transaction, and the savepoint pair of the test's
    # enclosing transaction: 12 on either database, nothing that grows with the data.
    with django_assert_max_num_queries(12):
        answer = api_a.post(url(tenancy.project_a), payload, format="json")

    assert answer.status_code == 201


def test_the_openapi_schema_documents_the_one_call(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    post = schema["paths"]["/api/v1/projects/{project_pk}/links/"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
    request = schema["components"]["schemas"]["LinkCreateRequestRequest"]
    refs = [option["$ref"].rsplit("/", 1)[-1] for option in request["oneOf"]]
    assert "TransactionalLinkRequest" in refs and "LinkGenerateRequest" in refs
    assert "1,000" in post["description"]
    assert "/api/v1/distributions/{id}/transactions.csv" in schema["paths"]


@pytest.mark.django_db(transaction=True)
def test_a_deleted_transactional_distribution_is_made_again_despite_the_process_cache(
    tenancy, key_a
):
    # Given a link made in the push distribution (its pk now kept by the process)
    from tests.conftest import make_api_client

    client = make_api_client(api_key=key_a)
    first = client.post(url(tenancy.project_a), body(), format="json").json()
    Distribution.objects.filter(pk=first["distribution"]).delete()
    # When the next call comes
    payload = body()
    payload["transaction"] = {"id": "T-101"}
    answer = client.post(url(tenancy.project_a), payload, format="json")
    # Then the link is in a new push distribution, not the deleted one
    assert answer.status_code == 201, answer.json()
    made = SurveyLink.objects.get(pk=answer.json()["link_id"])
    assert made.distribution_id == answer.json()["distribution"] != first["distribution"]
    assert made.distribution.label == "push"
