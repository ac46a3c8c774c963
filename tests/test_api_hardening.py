"""Issue 18, the API's contract: every documented input works, every bad one answers 4xx in the
error shape naming the field, nothing answers 5xx and nothing is half-written."""

from __future__ import annotations

from django.urls import reverse

import pytest

from projects.models import Project
from tests.factories.participants import import_media  # noqa: F401

pytestmark = pytest.mark.django_db


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    return response.json()["error"]


def test_project_create_takes_by_invitation_only_as_documented(tenancy, api_a):
    url = reverse("api:project-list")
    created = api_a.post(url, {"name": "Invited", "by_invitation_only": True}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["by_invitation_only"] is True
    assert Project.objects.get(pk=created.json()["id"]).by_invitation_only is True
    default = api_a.post(url, {"name": "Open"}, format="json")
    assert default.json()["by_invitation_only"] is False
    refused = api_a.post(url, {"name": "x", "by_invitation_only": "perhaps"}, format="json")
    assert "by_invitation_only" in _error(refused, 400)["fields"]


@pytest.mark.parametrize(
    "params,fields",
    [
        ({"enclosure": "AAA"}, {"enclosure"}),
        ({"delimiter": ";;"}, {"delimiter"}),
        ({"delimiter": "colon", "enclosure": "'"}, {"delimiter", "enclosure"}),
    ],
)
def test_every_csv_download_refuses_unknown_options_naming_them(tenancy, api_a, params, fields):
    from tests.factories.distributions import DistributionFactory

    project = tenancy.project_a
    distribution = DistributionFactory(project=project)
    for url in (
        f"/api/v1/distributions/{distribution.pk}/history.csv",
        f"/api/v1/projects/{project.pk}/responses.csv",
        f"/api/v1/projects/{project.pk}/links.csv",
    ):
        error = _error(api_a.get(url, params), 400)
        assert set(error["fields"]) == fields, url
        assert "comma" in error["fields"].get("delimiter", "comma")
        assert "double" in error["fields"].get("enclosure", "double")
    good = api_a.get(f"/api/v1/distributions/{distribution.pk}/history.csv", {"enclosure": "none"})
    assert good.status_code == 200


# --- JSON bodies: one rule for every field the API stores ---------------------------------


def _post_raw(client, url: str, text: str):
    return client.generic("POST", url, text.encode(), content_type="application/json")


def test_metadata_nested_thousands_of_levels_is_refused_not_a_500(tenancy, api_a):
    from participants.models import Person

    people = Person.objects.count()  # not by name: the tenancy's made-up names may hold an Ann
    deep = "[" * 5000 + "]" * 5000
    body = '{"first_name": "Ann", "metadata": {"x": ' + deep + "}}"
    error = _error(_post_raw(api_a, "/api/v1/people/", body), 400)
    assert "nested deeper than" in error["message"]
    assert Person.objects.count() == people


@pytest.mark.parametrize(
    "text,field",
    [
        ('{"first_name": "Ann", "metadata": {"Te\\u0000am": "Ops"}}', "metadata.Te\\u0000am"),
        ('{"first_name": "Ann", "metadata": {"Team": "O\\u0000ps"}}', "metadata.Team"),
        ('{"first_name": "Ann", "metadata": {"\\ud800": "Ops"}}', "metadata.\\ud800"),
        ('{"first_name": "Ann", "metadata": {"Team": "\\udfff"}}', "metadata.Team"),
    ],
)
def test_nul_and_lone_surrogates_anywhere_answer_400_naming_the_field(tenancy, api_a, text, field):
    from participants.models import Person

    people = Person.objects.count()  # not by name: the tenancy's made-up names may hold an Ann
    for url in ("/api/v1/people/", f"/api/v1/projects/{tenancy.project_a.pk}/participants/"):
        error = _error(_post_raw(api_a, url, text), 400)
        assert field in error["fields"], error
    bulk = '{"records": [' + text + "]}"
    error = _error(_post_raw(api_a, "/api/v1/people/bulk/", bulk), 400)
    assert f"records[0].{field}" in error["fields"], error
    assert Person.objects.count() == people


@pytest.mark.parametrize(
    "metadata,field,words",
    [
        ({"Team": {"name": "Ops"}}, "metadata.Team", "flat fields"),
        ({"Teams": ["Ops", "Sales"]}, "metadata.Teams", "flat fields"),
        ({"Team": "x" * 1001}, "metadata.Team", "Longer than 1000"),
        ({"k" * 101: "x"}, "metadata", "1 to 100"),
        ({f"f{i}": "x" for i in range(201)}, "metadata", "At most 200"),
        ({"Team": '=HYPERLINK("http://x")'}, "metadata.Team", "formula"),
        ({"=Team": "Ops"}, "metadata.=Team", "formula"),
    ],
)
def test_metadata_are_flat_bounded_and_formula_free_on_every_path(
    tenancy, api_a, metadata, field, words
):
    from participants.models import Person

    project = tenancy.project_a
    for url, key in (
        ("/api/v1/people/", "metadata"),
        (f"/api/v1/projects/{project.pk}/participants/", "metadata"),
        (f"/api/v1/projects/{project.pk}/participants/", "participant_metadata"),
    ):
        body = {"first_name": "Ann", "email": "ann@x.com", key: metadata}
        error = _error(api_a.post(url, body, format="json"), 400)
        named = field.replace("metadata", key, 1)
        matches = [name for name in error["fields"] if name.startswith(named)]
        assert matches and words in error["fields"][matches[0]], (url, key, error)
    link = {"contact": {"email": "ann@x.com", "metadata": metadata}, "transaction": {"id": "T1"}}
    error = _error(api_a.post(f"/api/v1/projects/{project.pk}/links/", link, format="json"), 400)
    assert any(name.startswith(f"contact.{field}") for name in error["fields"]), error
    assert not Person.objects.filter(email="ann@x.com").exists()


def test_metadata_scalars_are_stored_as_text_as_an_import_stores_them(tenancy, api_a):
    body = {"first_name": "Ann", "metadata": {"Level": 3, "Vip": True, "Team": " Ops ", "No": None}}
    created = api_a.post("/api/v1/people/", body, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["metadata"] == {"Level": "3", "Vip": "true", "Team": "Ops", "No": ""}


@pytest.mark.parametrize("name", ["first_name", "last_name", "username", "person_id"])
def test_formula_looking_person_fields_are_refused_as_the_import_refuses_them(tenancy, api_a, name):
    from participants.models import Person

    project = tenancy.project_a
    value = '=HYPERLINK("http://evil.example","x")'
    for url in ("/api/v1/people/", f"/api/v1/projects/{project.pk}/participants/"):
        body = {"email": "ann@x.com", name: value}
        error = _error(api_a.post(url, body, format="json"), 400)
        assert "would run as a formula" in error["fields"][name], error
    link = {"contact": {"email": "ann@x.com", name: value}, "transaction": {"id": "T1"}}
    error = _error(api_a.post(f"/api/v1/projects/{project.pk}/links/", link, format="json"), 400)
    assert "formula" in error["fields"][f"contact.{name}"], error
    assert not Person.objects.filter(email="ann@x.com").exists()
    kept = api_a.post("/api/v1/people/", {"email": "ann@x.com", name: "'" + value}, format="json")
    assert kept.status_code == 201 and kept.json()[name] == "'" + value
    role = {"email": "bo@x.com", "role": "@admin"}
    url = f"/api/v1/projects/{project.pk}/participants/"
    assert "role" in _error(api_a.post(url, role, format="json"), 400)["fields"]


def test_a_body_over_the_limit_answers_413_in_the_error_shape(tenancy, api_a, settings):
    settings.RELAY_API_MAX_BODY_BYTES = 10_000
    big = {"first_name": "Ann", "metadata": {"Notes": "x" * 20_000}}
    error = _error(api_a.post("/api/v1/people/", big, format="json"), 413)
    assert error["code"] == "too_large" and "10,000" in error["message"]


def test_the_default_body_limit_is_10_mb_and_a_10_mb_value_is_never_stored(tenancy, api_a):
    from participants.models import Person

    people = Person.objects.count()  # not by name: the tenancy's made-up names may hold an Ann
    huge = {"first_name": "Ann", "metadata": {"Notes": "x" * (10 * 1024 * 1024)}}
    assert _error(api_a.post("/api/v1/people/", huge, format="json"), 413)["code"] == "too_large"
    big = {"first_name": "Ann", "metadata": {"Notes": "x" * (1024 * 1024)}}
    assert (
        "metadata.Notes" in _error(api_a.post("/api/v1/people/", big, format="json"), 400)["fields"]
    )
    assert Person.objects.count() == people


@pytest.mark.usefixtures("import_media")
def test_the_import_upload_keeps_its_own_50_mb_limit(tenancy, api_a, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.RELAY_API_MAX_BODY_BYTES = 1000
    rows = "PersonID,Email\n" + "".join(f"E-{i},p{i}@x.com\n" for i in range(200))
    upload = SimpleUploadedFile("people.csv", rows.encode(), content_type="text/csv")
    response = api_a.post("/api/v1/imports/", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content


# --- Uploads that are not text are refused at upload, not turned into a failed import -----

NOT_TEXT = [
    (b"PK\x03\x04\x14\x00\x06\x00rest-of-xlsx", "ZIP archive"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
    (b"PersonID,Email\nE-1,a@x.com\n\x00\x01\x02\x03binary", "NUL bytes"),
    (b"PersonID,Email\nE-1,\x81\x8d\x8f@x.com\n", "neither UTF-8 nor Windows-1252"),
]


@pytest.mark.usefixtures("import_media")
@pytest.mark.parametrize("content,words", NOT_TEXT)
def test_a_binary_upload_answers_400_naming_the_file_and_stores_nothing(
    tenancy, api_a, content, words
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from participants.models import ImportJob

    upload = SimpleUploadedFile("people.csv", content, content_type="text/csv")
    error = _error(api_a.post("/api/v1/imports/", {"file": upload}, format="multipart"), 400)
    assert words in error["fields"]["file"], error
    assert not ImportJob.objects.exists()


@pytest.mark.usefixtures("import_media")
@pytest.mark.parametrize("content,words", NOT_TEXT)
def test_the_import_page_refuses_a_binary_upload_on_its_form(
    tenancy, page_client_for, content, words
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from participants.models import ImportJob

    client = page_client_for(tenancy.project_admin_a)
    response = client.post(
        reverse("participants:project-import", args=[tenancy.project_a.pk]),
        {"file": SimpleUploadedFile("people.csv", content)},
    )
    assert response.status_code == 400
    assert words.encode() in response.content
    assert not ImportJob.objects.exists()


# --- What a send costs, before it is made ------------------------------------------------


def _affordability_setup(tenancy, *, balance):
    from decimal import Decimal

    from tests.factories.credits import CountryRateFactory, grant
    from tests.factories.participants import ParticipantFactory, PersonFactory

    CountryRateFactory(country="US", rate=Decimal("2"))
    for index in range(3):
        person = PersonFactory(brand=tenancy.brand_a, phone=f"+1415555{8100 + index:04d}")
        ParticipantFactory(project=tenancy.project_a, person=person)
    grant(tenancy.brand_a, balance)  # 4 recipients (the tenancy's participant too) x 2 = 8
    return {"project": tenancy.project_a.pk, "message": "Hi ${first_name}, tell us: ${link}"}


def test_the_api_estimates_a_send_as_the_schedule_page_does(tenancy, api_a):
    from distributions.charging import credits_estimate

    body = _affordability_setup(tenancy, balance=5)
    answer = api_a.post("/api/v1/distributions/estimate/", body, format="json")
    assert answer.status_code == 200, answer.content
    estimate = answer.json()
    assert estimate["recipients"] == 4 and estimate["segments"] == 4
    assert float(estimate["credits_needed"]) == 8 and float(estimate["credits_available"]) == 5
    assert estimate["affordable"] is False and float(estimate["shortfall"]) == 3
    page = credits_estimate(project=tenancy.project_a, message=body["message"], conditions=[])
    assert float(estimate["credits_needed"]) == float(page["credits"])
    assert [c["country"] for c in estimate["by_country"]] == ["US"]
    from distributions.models import Distribution

    assert not Distribution.objects.exists()  # an estimate writes nothing
    narrowed = {
        **body,
        "conditions": [{"criterion": "first_name", "operator": "is", "value": "nobody"}],
    }
    assert api_a.post("/api/v1/distributions/estimate/", narrowed, format="json").json()[
        "affordable"
    ]
    other = {**body, "project": tenancy.project_b.pk}
    assert api_a.post("/api/v1/distributions/estimate/", other, format="json").status_code == 404


def test_an_unaffordable_sms_send_is_refused_unless_the_client_accepts_a_partial_one(
    tenancy, api_a
):
    from distributions.models import Distribution

    body = _affordability_setup(tenancy, balance=5)
    refused = api_a.post("/api/v1/distributions/", body, format="json")
    error = _error(refused, 409)
    assert error["code"] == "insufficient_credits"
    assert "8" in error["message"] and "5" in error["message"]
    assert "accept_partial" in error["fields"]
    assert not Distribution.objects.exists()
    accepted = api_a.post("/api/v1/distributions/", {**body, "accept_partial": True}, format="json")
    assert accepted.status_code == 201, accepted.content


def test_an_affordable_send_and_a_self_service_brand_are_never_refused(tenancy, api_a):
    body = _affordability_setup(tenancy, balance=8)
    assert api_a.post("/api/v1/distributions/", body, format="json").status_code == 201
    brand = tenancy.brand_a
    brand.integration_model = brand.IntegrationModel.SELF_SERVICE
    brand.save()
    from brands.services import api_key_cache_forget

    api_key_cache_forget()
    estimate = api_a.post("/api/v1/distributions/estimate/", body, format="json").json()
    assert estimate["affordable"] is True and estimate["self_service"] is True
    assert api_a.post("/api/v1/distributions/", body, format="json").status_code == 201


def test_an_unaffordable_reminder_is_refused_the_same_way(tenancy, api_a):
    body = _affordability_setup(tenancy, balance=5)
    url = f"/api/v1/projects/{tenancy.project_a.pk}/reminders/"
    reminder = {"message": body["message"]}
    assert _error(api_a.post(url, reminder, format="json"), 409)["code"] == "insufficient_credits"
    accepted = api_a.post(url, {**reminder, "accept_partial": True}, format="json")
    assert accepted.status_code == 201, accepted.content


@pytest.mark.parametrize("amount", ["1e40", "123456789012345678901234567890", "-1e30"])
def test_a_huge_credit_amount_answers_400_naming_it(tenancy, amount):
    from brands.roles import Role
    from tests.conftest import make_api_client
    from tests.factories.brands import ApiKeyFactory

    admin = make_api_client(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN))
    error = _error(admin.post("/api/v1/credits/grants/", {"amount": amount}, format="json"), 400)
    assert "amount" in error["fields"]


# --- The schema's words, enforced ----------------------------------------------------------


@pytest.mark.parametrize(
    "url,params,field",
    [
        ("/api/v1/optouts/", {"state": "AAA"}, "state"),
        ("/api/v1/optout-events/", {"source": "AAA"}, "source"),
        ("/api/v1/inbound-messages/", {"kind": "AAA"}, "kind"),
        ("/api/v1/distributions/", {"status": "done-ish"}, "status"),
        ("/api/v1/projects/", {"page_size": "lots"}, "page_size"),
        ("/api/v1/projects/", {"page_size": "5000"}, "page_size"),
        ("/api/v1/projects/", {"page": "0"}, "page"),
        ("/api/v1/projects/", {"colour": "red"}, "colour"),
        ("/api/v1/credits/usage/", {"start": "yesterday"}, "start"),
    ],
)
def test_query_strings_are_held_to_the_schema(tenancy, url, params, field):
    from brands.roles import Role
    from tests.conftest import make_api_client
    from tests.factories.brands import ApiKeyFactory

    admin = make_api_client(api_key=ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN))
    assert field in _error(admin.get(url, params), 400)["fields"]


def test_json_types_are_the_schemas_and_bodies_are_json(tenancy, api_a):
    url = reverse("api:project-list")
    assert _error(api_a.post(url, {"name": 12}, format="json"), 400)["fields"] == {
        "name": "Must be a string."
    }
    flag = {"name": "x", "by_invitation_only": "yes"}
    assert "by_invitation_only" in _error(api_a.post(url, flag, format="json"), 400)["fields"]
    form = api_a.post(url, {"name": "x"}, format="multipart")
    assert _error(form, 415)["code"] == "unsupported_media_type"
    bulk = {"ids": [2**70], "send_at": "2030-01-01T00:00:00Z"}
    edit = api_a.post("/api/v1/distributions/bulk-edit/", bulk, format="json")
    assert "ids" in _error(edit, 400)["fields"]


def test_an_id_past_64_bits_or_a_path_with_no_route_is_a_json_404(tenancy, api_a):
    for path in (f"/api/v1/projects/{2**70}/", "/api/v1/projects/0.5/", "/api/v1/nothing/"):
        assert _error(api_a.get(path), 404)["code"] == "not_found", path
    assert _error(api_a.get(f"/api/v1/projects/{2**70}/links/"), 404)["code"] == "not_found"


def test_cancelling_twice_is_a_conflict_with_the_state(tenancy, api_a):
    from tests.factories.distributions import DistributionFactory

    distribution = DistributionFactory(project=tenancy.project_a, status="cancelled")
    url = f"/api/v1/distributions/{distribution.pk}/cancel/"
    error = _error(api_a.post(url), 409)
    assert "cannot be cancelled" in error["message"] and "status" in error["fields"]
