from django.core.exceptions import ValidationError
from django.urls import reverse

import pytest

from participants.models import Participant, Person
from participants.phones import PhoneError, phone_to_e164
from participants.services import participant_create, person_create

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "raw,country,expected",
    [
        ("(415) 555-0100", "US", "+14155550100"),
        ("07911 123456", "GB", "+447911123456"),
        ("+33 6 12 34 56 78", "US", "+33612345678"),
        ("0612345678", "FR", "+33612345678"),
        ("", "US", ""),
    ],
)
def test_phone_numbers_become_e164(raw, country, expected):
    assert phone_to_e164(raw, default_country=country) == expected


@pytest.mark.parametrize("raw", ["12", "not a phone", "+1 555", "+999 123456789"])
def test_invalid_phone_numbers_name_the_value(raw):
    with pytest.raises(PhoneError) as excinfo:
        phone_to_e164(raw, default_country="US")
    assert repr(raw.strip()) in str(excinfo.value)


def test_duplicate_person_id_is_refused_in_the_same_brand_only(tenancy):
    person_create(brand=tenancy.brand_a, person_id="E-1", first_name="A")
    with pytest.raises(ValidationError) as excinfo:
        person_create(brand=tenancy.brand_a, person_id="E-1", first_name="B")
    assert "PersonID 'E-1' already belongs" in excinfo.value.message_dict["person_id"][0]
    person_create(brand=tenancy.brand_b, person_id="E-1", first_name="C")  # another brand: fine
    assert Person.objects.filter(person_id="E-1").count() == 2


def test_participant_uses_the_projects_country(tenancy):
    tenancy.project_a.default_country = "GB"
    tenancy.project_a.save()
    participant = participant_create(
        project=tenancy.project_a, first_name="Z", phone="07911 123456"
    )
    assert participant.person.phone == "+447911123456"


def test_api_participant_create_rejects_bad_input_and_writes_nothing(tenancy, api_a):
    url = reverse("api:participant-list", args=[tenancy.project_a.pk])
    before = (Person.objects.count(), Participant.objects.count())
    for body, field in [
        ({"first_name": "A", "phone": "12345"}, "phone"),
        ({"first_name": "A", "email": "not-an-email"}, "email"),
        ({"first_name": "A", "shoe_size": 42}, "shoe_size"),
        ({"first_name": "A", "person_id": tenancy.participant_a.person.person_id}, "person_id"),
        ({"first_name": "A", "metadata": ["x"]}, "metadata"),
    ]:
        response = api_a.post(url, body, format="json")
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], response.json()
    assert (Person.objects.count(), Participant.objects.count()) == before


def test_api_participant_crud(tenancy, api_a):
    url = reverse("api:participant-list", args=[tenancy.project_a.pk])
    created = api_a.post(
        url,
        {
            "person_id": "N-1",
            "first_name": "Nia",
            "phone": "+44 7911 123456",
            "role": "Manager",
            "metadata": {"Team": "Ops"},
            "participant_metadata": {"Wave": 1},
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["phone"] == "+447911123456" and body["role"] == "Manager"
    detail = reverse("api:participant-detail", args=[tenancy.project_a.pk, body["id"]])
    assert api_a.patch(detail, {"role": "Director"}, format="json").json()["role"] == "Director"
    listed = api_a.get(url, {"q": "nia"}).json()
    assert [row["id"] for row in listed["results"]] == [body["id"]]
    assert api_a.get(url, {"role": "director"}).json()["count"] == 1
    assert api_a.delete(detail).status_code == 204
    assert Person.objects.filter(person_id="N-1").exists()  # directory entry stays


def test_participant_pages_add_edit_remove(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    add = reverse("participants:create", args=[tenancy.project_a.pk])
    bad = client.post(add, {"first_name": "Q", "phone": "123"})
    assert bad.status_code == 400 and b"is not a valid phone number" in bad.content
    ok = client.post(
        add, {"first_name": "Q", "last_name": "R", "phone": "4155550123", "role": "Lead"}
    )
    assert ok.status_code == 302
    participant = Participant.objects.get(person__first_name="Q")
    assert participant.person.phone == "+14155550123"
    page = client.get(reverse("participants:project", args=[tenancy.project_a.pk]), {"q": "Q"})
    assert b"Lead" in page.content
    client.post(reverse("participants:remove", args=[tenancy.project_a.pk, participant.pk]))
    assert not Participant.objects.filter(pk=participant.pk).exists()
