from django.core.exceptions import ValidationError

import pytest

from distributions.conditions import conditions_clean, conditions_describe, conditions_q
from participants.models import Participant
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(tenancy):
    project = tenancy.project_a
    brand = tenancy.brand_a

    def add(first, last, email, role, person_meta=None, project_meta=None):
        person = PersonFactory(
            brand=brand, first_name=first, last_name=last, email=email, metadata=person_meta or {}
        )
        return ParticipantFactory(
            project=project, person=person, role=role, metadata=project_meta or {}
        )

    return {
        "ada": add("Ada", "Lovelace", "ada@x.org", "Manager", {"Team": "Sales", "Site": "Paris"}),
        "alan": add("Alan", "Turing", "alan@y.org", "Employee", {"Team": "R&D", "Site": "London"}),
        "grace": add(
            "Grace", "Hopper", "grace@x.org", "Manager", {"Team": "R&D"}, {"Team": "Sales"}
        ),
        "hedy": add("Hedy", "Lamarr", "", "Employee", {}),
    }


def select(tenancy, conditions):
    cleaned = conditions_clean(conditions)
    participants = Participant.objects.filter(project=tenancy.project_a).exclude(
        pk=tenancy.participant_a.pk
    )
    return {p.person.first_name for p in participants.filter(conditions_q(cleaned))}


def test_no_conditions_select_everyone(tenancy, people):
    assert select(tenancy, []) == {"Ada", "Alan", "Grace", "Hedy"}


def test_same_criterion_is_or_different_criteria_are_and(tenancy, people):
    both_teams = [
        {"criterion": "metadata", "field": "Team", "operator": "is", "value": "sales"},
        {"criterion": "metadata", "field": "Team", "operator": "is", "value": "R&D"},
    ]
    assert select(tenancy, both_teams) == {"Ada", "Alan", "Grace"}
    managers_in_sales = [
        {"criterion": "metadata", "field": "Team", "operator": "is", "value": "Sales"},
        {"criterion": "role", "operator": "is", "value": "manager"},
    ]
    # Grace's project metadata (Sales) wins over her directory metadata (R&D).
    assert select(tenancy, managers_in_sales) == {"Ada", "Grace"}
    two_metadata_fields = [
        {"criterion": "metadata", "field": "Team", "operator": "is", "value": "R&D"},
        {"criterion": "metadata", "field": "Site", "operator": "is", "value": "London"},
    ]
    assert select(tenancy, two_metadata_fields) == {"Alan"}


@pytest.mark.parametrize(
    "condition,expected",
    [
        (
            {"criterion": "name_or_email", "operator": "contains", "value": "x.org"},
            {"Ada", "Grace"},
        ),
        ({"criterion": "name_or_email", "operator": "is", "value": "turing"}, {"Alan"}),
        (
            {"criterion": "first_name", "operator": "is_not", "value": "ada"},
            {"Alan", "Grace", "Hedy"},
        ),
        ({"criterion": "last_name", "operator": "contains", "value": "o"}, {"Ada", "Grace"}),
        ({"criterion": "role", "operator": "is", "value": "Employee"}, {"Alan", "Hedy"}),
        ({"criterion": "metadata", "field": "Site", "operator": "is_empty"}, {"Grace", "Hedy"}),
        (
            {"criterion": "metadata", "field": "Site", "operator": "is_not", "value": "Paris"},
            {"Alan", "Grace", "Hedy"},
        ),
    ],
)
def test_operators(tenancy, people, condition, expected):
    assert select(tenancy, [condition]) == expected


@pytest.mark.parametrize("criterion", ["name_or_email", "first_name", "last_name"])
def test_name_criteria_can_be_used_once_per_set(criterion):
    with pytest.raises(ValidationError) as excinfo:
        conditions_clean(
            [
                {"criterion": criterion, "operator": "is", "value": "a"},
                {"criterion": criterion, "operator": "is", "value": "b"},
            ]
        )
    assert "Condition 2" in excinfo.value.message_dict["conditions"][0]
    assert "can only be used once" in excinfo.value.message_dict["conditions"][0]


@pytest.mark.parametrize(
    "bad,message",
    [
        ([{"criterion": "shoe", "value": "x"}], "criterion must be one of"),
        ([{"criterion": "role", "operator": "like", "value": "x"}], "operator must be one of"),
        ([{"criterion": "metadata", "value": "x"}], "needs a field"),
        ([{"criterion": "role", "operator": "is"}], "needs a value"),
        ([{"criterion": "role", "value": "x", "colour": 1}], "unknown key"),
        ("role=x", "Must be a list"),
    ],
)
def test_bad_conditions_say_what_is_wrong(bad, message):
    with pytest.raises(ValidationError) as excinfo:
        conditions_clean(bad)
    assert message in excinfo.value.message_dict["conditions"][0]


def test_describe():
    text = conditions_describe(
        [{"criterion": "metadata", "field": "Team", "operator": "is", "value": "Sales"}]
    )
    assert text == "Metadata “Team” is “Sales”"


def test_metadata_field_names_ignore_case_whatever_the_stored_spelling(tenancy, people):
    from distributions.services import distribution_preview_count

    # Imported later from a file whose header said "team": a second stored spelling.
    person = PersonFactory(brand=tenancy.brand_a, first_name="Mae", metadata={"team": "Sales"})
    ParticipantFactory(project=tenancy.project_a, person=person)

    def count(operator, value=""):
        condition = {"criterion": "metadata", "field": " TEAM ", "operator": operator}
        if value:
            condition["value"] = value
        return distribution_preview_count(project=tenancy.project_a, conditions=[condition])

    assert count("is", "sales") == 3  # Ada, Grace (project value), Mae
    # Alan (R&D), Hedy (no team) and the fixture's participant_a (no team).
    assert count("is_not", "sales") == 3
    assert count("is_empty") == 2  # Hedy and participant_a
    assert count("contains", "r&") == 1  # Alan
