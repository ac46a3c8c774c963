"""PostgreSQL writes one transactional link with one statement (``relay_transactional_link``,
migration ``projects.0009``): the same rules as the Python engine that bulk calls and other
databases use, checked here by running one sequence of calls through each and comparing."""

import random

from django.db import connection
from django.test.utils import CaptureQueriesContext

import pytest

from participants.models import Participant, Person
from projects.models import Project, SurveyLink, Transaction
from tests.factories.projects import ProjectFactory
from transactional import services as links_services
from transactional.services import IdempotencyConflict, LinkResult, transactional_link_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement write is PostgreSQL's")


def call(project, number: int, contact: dict, **extra):
    return transactional_link_create(
        project=project,
        contact=contact,
        transaction_id=f"T-{number}",
        channel_label="push",
        body={"contact": contact, "n": number, **{k: str(v) for k, v in extra.items()}},
        **extra,
    )


@pytest.mark.django_db(transaction=True)
def test_a_new_link_is_one_statement_outside_a_transaction():
    project = ProjectFactory()
    call(project, 0, {"email": "first@example.com"})  # the push distribution exists now

    with CaptureQueriesContext(connection) as queries:
        result = call(project, 1, {"person_id": "P-1", "email": "ana@example.com"})

    assert [q["sql"].split("(")[0] for q in queries.captured_queries] == [
        "SELECT relay_transactional_link"
    ]
    link = SurveyLink.objects.get(pk=result.link_id)
    record = Transaction.objects.get(pk=result.transaction)
    assert (link.token, link.participant_id) == (result.token, result.participant)
    assert (record.link_id, record.external_id) == (link.pk, "T-1")
    assert Person.objects.get(pk=result.person).person_id == result.person_id == "P-1"


def test_inside_a_transaction_it_takes_a_savepoint():
    project = ProjectFactory()
    call(project, 0, {"email": "first@example.com"})

    with CaptureQueriesContext(connection) as queries:
        call(project, 1, {"email": "bo@example.com"})

    statements = [q["sql"].split(" ")[0] for q in queries.captured_queries]
    assert statements == ["SAVEPOINT", "SELECT", "RELEASE"]


def test_a_token_drawn_twice_is_drawn_again(monkeypatch):
    project = ProjectFactory()
    taken = call(project, 0, {"email": "first@example.com"}).token
    draws = iter([[taken], ["Zz9Zz9Zz9Zz9"]])
    monkeypatch.setattr(links_services, "new_tokens", lambda count: next(draws))

    result = call(project, 1, {"email": "bo@example.com"})

    assert result.token == "Zz9Zz9Zz9Zz9" and result.created
    assert SurveyLink.objects.filter(project=project).count() == 2
    assert Person.objects.filter(brand=project.brand, email="bo@example.com").count() == 1


def _contacts(rng: random.Random) -> list[dict]:
    """Calls about a small pool of identities: PersonIDs, emails and phones in every
    combination, names and metadata that change, and the same transaction sent again."""
    calls = []
    for _ in range(80):
        contact = {}
        kind = rng.choice(["pid", "pid+email", "email", "phone", "email+phone", "pid+phone"])
        if "pid" in kind:
            contact["person_id"] = f"P-{rng.randint(1, 4)}"
        if "email" in kind:
            contact["email"] = f"Person{rng.randint(1, 5)}@Example.com"
        if "phone" in kind:
            contact["phone"] = f"+1415555{rng.randint(1, 4):04d}"
        if rng.random() < 0.5:
            contact["first_name"] = rng.choice(["Ana", "Bo", "Cy"])
        if rng.random() < 0.3:
            contact["last_name"] = rng.choice(["", "Li", "Ng"])
        if rng.random() < 0.4:
            contact["metadata"] = {rng.choice(["tier", "city", "seat"]): rng.randint(1, 3)}
        calls.append(contact)
    return calls


def _run(project, calls: list[dict], seeded: list[Person]) -> tuple:
    """The answers and the brand's directory after ``calls``, with pks replaced by the order
    in which the people were made (the two runs' pks differ)."""
    answers = []
    for number, contact in enumerate(calls):
        # Every tenth call repeats an earlier transaction: with its contact (a replay), or
        # with another (a conflict).
        if number % 10 == 9:
            contact = calls[number - 7] if number % 20 == 19 else contact
            number -= 7
        try:
            answers.append(call(project, number, contact))
        except IdempotencyConflict as exc:
            answers.append(exc)
    people = list(Person.objects.filter(brand=project.brand).order_by("pk"))
    rank = {person.pk: index for index, person in enumerate(people)}
    directory = [
        (p.person_id, p.email, p.phone, p.first_name, p.last_name, p.metadata) for p in people
    ]
    members = Participant.objects.filter(project=project).values_list("person", flat=True)
    participants = sorted(rank[pk] for pk in members)
    links = sorted(
        (r.external_id, rank[r.participant.person_id], r.link.distribution.label)
        for r in Transaction.objects.filter(project=project).select_related(
            "participant", "link__distribution"
        )
    )
    said = [
        (rank[a.person], a.person_id, a.created, a.transaction_id)
        if isinstance(a, LinkResult)
        else ("conflict", tuple(a.differences))
        for a in answers
    ]
    return said, directory, participants, links, len(seeded)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_statement_and_the_python_engine_agree(monkeypatch, seed):
    calls = _contacts(random.Random(seed))
    outcomes = []
    for one_statement in (True, False):
        project = ProjectFactory()
        # Two people share an email and a phone: the smallest pk is the one found.
        seeded = [
            Person.objects.create(brand=project.brand, email="person1@example.com", phone=phone)
            for phone in ("+14155550001", "+14155550001")
        ]
        monkeypatch.setattr(links_services, "_one_statement", lambda items, v=one_statement: v)
        outcomes.append(_run(project, calls, seeded))

    statement, python = outcomes
    assert statement == python
    said = statement[0]
    assert any(a[0] == "conflict" for a in said) and any(a[2] is False for a in said if len(a) == 4)


# --- the project the API keeps per process ------------------------------------------------
def post(client, project, number: int, channel: str = "api", **contact):
    body = {"contact": contact or {"email": f"p{number}@example.com"}, "channel": channel}
    body["transaction"] = {"id": f"T-{number}"}
    return client.post(f"/api/v1/projects/{project.pk}/links/", body, format="json")


def test_a_kept_project_spares_the_read_and_a_changed_one_is_read_again(api_a, tenancy):
    project = tenancy.project_a
    assert post(api_a, project, 1).status_code == 201  # read, then kept

    with CaptureQueriesContext(connection) as queries:
        assert post(api_a, project, 2).status_code == 201
    assert not [q for q in queries.captured_queries if "projects_project" in q["sql"]]

    # Changed behind the process's back (no save(), no signal): the write notices.
    Project.objects.filter(pk=project.pk).update(stage=Project.Stage.PAUSED)
    answer = post(api_a, project, 3)
    assert answer.status_code == 409 and answer.json()["error"]["fields"]["reason"] == "paused"
    assert not Transaction.objects.filter(project=project, external_id="T-3").exists()

    Project.objects.filter(pk=project.pk).update(stage=Project.Stage.ACTIVE, default_country="GB")
    answer = post(api_a, project, 4, phone="020 7946 0018")
    assert answer.status_code == 201, answer.json()
    assert Person.objects.get(pk=answer.json()["person"]).phone == "+442079460018"


def test_a_kept_project_deleted_or_of_another_brand_answers_404(api_a, api_client_for, tenancy):
    from tests.factories.brands import ApiKeyFactory

    api_b = api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_b))
    project = tenancy.project_a
    assert post(api_a, project, 1).status_code == 201

    assert post(api_b, project, 2).status_code == 404  # kept for brand A, not for B
    project.delete()
    assert post(api_a, project, 3).status_code == 404
    assert post(api_a, project, 4, channel="kiosk").status_code == 404  # a label never used
    bad = api_a.post(f"/api/v1/projects/{project.pk}/links/", {"contact": {}}, format="json")
    assert bad.status_code == 404  # 404 before the body's errors, as without the kept project
