"""Participant and person pages: search, filters, export, person page, manual edits."""

import csv
import io

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

import pytest

from participants.metadata import OPT_OUT_KEY
from participants.models import ImportJob, Participant, Person
from participants.services import import_confirm, import_create
from tests.factories.participants import (
    ParticipantFactory,
    PersonFactory,
    import_media,  # noqa: F401
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("import_media")]


@pytest.fixture
def crew(tenancy):
    """Three participants of project A with metadata, roles and phones."""
    rows = [
        ("C-1", "Ada", "Lovelace", "+447911123456", "Manager", {"Team": "Ops", "Site": "London"}),
        ("C-2", "Alan", "Turing", "+14155550123", "Employee", {"Team": "R&D"}),
        ("C-3", "Grace", "Hopper", "+33612345678", "Employee", {"Team": "Ops", "Site": "Paris"}),
    ]
    made = []
    for pid, first, last, phone, role, metadata in rows:
        person = PersonFactory(
            brand=tenancy.brand_a,
            person_id=pid,
            first_name=first,
            last_name=last,
            phone=phone,
            metadata=metadata,
        )
        made.append(ParticipantFactory(project=tenancy.project_a, person=person, role=role))
    return made


def listed(client, project, **params) -> list[str]:
    page = client.get(reverse("participants:project", args=[project.pk]), params)
    assert page.status_code == 200
    return sorted(
        p.person.person_id
        for p in page.context["page"].object_list
        if p.person.person_id.startswith("C-")
    )


def test_search_by_name_email_and_any_phone_format(tenancy, crew, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    project = tenancy.project_a
    assert listed(client, project, q="lovelace") == ["C-1"]
    assert listed(client, project, q="Grace Hopper") == ["C-3"]
    assert listed(client, project, q="c-2@example.com") == ["C-2"]
    assert listed(client, project, q="(415) 555-0123") == ["C-2"]
    assert listed(client, project, q="+44 7911 123456") == ["C-1"]
    assert listed(client, project, q="06 12 34 56 78") == []  # national French in a US project
    tenancy.project_a.default_country = "FR"
    tenancy.project_a.save()
    assert listed(client, project, q="06 12 34 56 78") == ["C-3"]


def test_filter_by_role_and_metadata(tenancy, crew, page_client_for):
    client = page_client_for(tenancy.viewer_a)
    project = tenancy.project_a
    assert listed(client, project, role="employee") == ["C-2", "C-3"]
    assert listed(client, project, meta_key="Team", meta_value="ops") == ["C-1", "C-3"]
    assert listed(client, project, meta_key="Team", meta_value="Ops", role="Manager") == ["C-1"]
    assert listed(client, project, meta=["Team:Ops", "Site:Paris"]) == ["C-3"]
    page = client.get(reverse("participants:project", args=[project.pk]))
    assert page.context["metadata_keys"] == ["Site", "Team"]


def test_participant_metadata_overrides_the_persons_in_filters(tenancy, crew, page_client_for):
    crew[1].metadata = {"Team": "Ops"}  # in this project, Alan works for Ops
    crew[1].save()
    client = page_client_for(tenancy.viewer_a)
    assert listed(client, tenancy.project_a, meta_key="Team", meta_value="Ops") == [
        "C-1",
        "C-2",
        "C-3",
    ]
    assert listed(client, tenancy.project_a, meta_key="Team", meta_value="R&D") == []


def test_pagination(tenancy, page_client_for):
    for i in range(55):
        ParticipantFactory(project=tenancy.project_a, person__person_id=f"Z-{i:02d}")
    client = page_client_for(tenancy.viewer_a)
    first = client.get(reverse("participants:project", args=[tenancy.project_a.pk]))
    assert len(first.context["page"].object_list) == 50
    second = client.get(reverse("participants:project", args=[tenancy.project_a.pk]), {"page": 2})
    assert len(second.context["page"].object_list) == 6
    assert b"Page 2 of 2 \xc2\xb7 56 in all" in second.content


def test_export_is_filtered_formula_safe_and_imports_back_unchanged(tenancy, crew, page_client_for):
    crew[0].person.metadata[OPT_OUT_KEY] = "Yes"
    crew[0].person.metadata["Note"] = "=cmd|' /C calc'!A0"
    crew[0].person.save()
    client = page_client_for(tenancy.project_admin_a)
    url = reverse("participants:project-export", args=[tenancy.project_a.pk])
    response = client.get(url, {"meta_key": "Team", "meta_value": "Ops"})
    assert response["Content-Disposition"].startswith('attachment; filename="participants-alpha')
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [
        "PersonID",
        "First name",
        "Last name",
        "Email",
        "User name",
        "Phone number",
        "Time zone",
        "Role",
        "Note",
        "Site",
        "Team",
        OPT_OUT_KEY,
    ]
    assert [row[0] for row in rows[1:]] == ["C-3", "C-1"]  # by last name: Hopper, Lovelace
    ada = rows[2]
    assert ada[5] == "+447911123456" and ada[8] == "'=cmd|' /C calc'!A0"
    assert ada[-1] == "Yes"

    before = list(Person.objects.order_by("pk").values_list("person_id", "phone", "metadata"))
    job = import_create(
        brand=tenancy.brand_a,
        project=tenancy.project_a,
        upload=SimpleUploadedFile("export.csv", text.encode("utf-8")),
    )
    assert (job.to_create, job.to_update, job.unchanged, job.error_rows) == (0, 1, 1, 0)
    import_confirm(job=job)
    after = list(Person.objects.order_by("pk").values_list("person_id", "phone", "metadata"))
    changed = [a for a, b in zip(after, before, strict=True) if a != b]
    # Only the formula-looking note changed: it is now stored with its protective apostrophe.
    assert changed == [
        (
            "C-1",
            "+447911123456",
            {"Team": "Ops", "Site": "London", OPT_OUT_KEY: "Yes", "Note": "'=cmd|' /C calc'!A0"},
        )
    ]


def test_directory_export_and_viewer_cannot_export(tenancy, crew, page_client_for):
    response = page_client_for(tenancy.project_admin_a).get(
        reverse("participants:directory-export")
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert "Role" not in rows[0] and len(rows) == 1 + 4  # three of the crew + the tenancy one
    viewer = page_client_for(tenancy.viewer_a)
    assert viewer.get(reverse("participants:directory-export")).status_code == 403


def test_person_page_shows_fields_metadata_projects_and_opt_out(tenancy, crew, page_client_for):
    person = crew[0].person
    person.metadata[OPT_OUT_KEY] = "Yes"
    person.save()
    crew[0].metadata = {"Wave": "2"}
    crew[0].save()
    page = page_client_for(tenancy.viewer_a).get(reverse("participants:person", args=[person.pk]))
    html = page.content.decode()
    assert "Opted out</span>" in html and "no message is sent to this person" in html
    assert "<dt>Team</dt><dd>Ops</dd>" in html
    assert "Alpha pulse" in html and "Manager" in html and "Wave: 2" in html
    assert "participants/_person_extra.html" in [t.name for t in page.templates]
    assert "Edit" not in html.split("<section")[0]  # viewers get no edit button


def test_person_edit_keeps_opt_out_and_refuses_to_set_it(tenancy, crew, page_client_for):
    person = crew[1].person
    person.metadata[OPT_OUT_KEY] = "Yes"
    person.save()
    client = page_client_for(tenancy.project_admin_a)
    url = reverse("participants:person-edit", args=[person.pk])
    form = client.get(url).content.decode()
    assert "Team: R&amp;D" in form and OPT_OUT_KEY not in form.split("<textarea")[1]
    data = {
        "person_id": "C-2",
        "first_name": "Alan",
        "last_name": "Turing",
        "phone": "+1 415 555 0124",
        "metadata": "Team: Crypto\nSite: Bletchley",
    }
    assert client.post(url, data).status_code == 302
    person.refresh_from_db()
    assert person.phone == "+14155550124"
    assert person.metadata == {"Team": "Crypto", "Site": "Bletchley", OPT_OUT_KEY: "Yes"}
    refused = client.post(url, {**data, "metadata": "Opted out: No"})
    assert refused.status_code == 400 and b"is set only by the person" in refused.content


def test_participant_form_edits_metadata_and_role(tenancy, crew, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    url = reverse("participants:edit", args=[tenancy.project_a.pk, crew[2].pk])
    response = client.post(
        url,
        {"person_id": "C-3", "first_name": "Grace", "role": "Admiral", "metadata": "Team: Navy"},
    )
    assert response.status_code == 302
    crew[2].refresh_from_db()
    assert crew[2].role == "Admiral" and crew[2].person.metadata == {"Team": "Navy"}


def test_person_delete_removes_from_directory_and_projects(tenancy, crew, page_client_for):
    person = crew[0].person
    client = page_client_for(tenancy.project_admin_a)
    response = client.post(reverse("participants:person-delete", args=[person.pk]))
    assert response.status_code == 302
    assert not Person.objects.filter(pk=person.pk).exists()
    assert not Participant.objects.filter(pk=crew[0].pk).exists()


def test_other_brands_person_pages_answer_404(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    person_b = tenancy.participant_b.person
    assert client.get(reverse("participants:person-edit", args=[person_b.pk])).status_code == 404
    assert (
        client.post(reverse("participants:person-edit", args=[person_b.pk]), {}).status_code == 404
    )
    assert client.post(reverse("participants:person-delete", args=[person_b.pk])).status_code == 404
    url = reverse("participants:project-export", args=[tenancy.project_b.pk])
    assert client.get(url).status_code == 404
    assert Person.objects.filter(pk=person_b.pk).exists()
    directory = b"".join(
        client.get(reverse("participants:directory-export")).streaming_content
    ).decode()
    assert person_b.person_id not in directory
    assert ImportJob.objects.count() == 0
