"""The tenancy matrix: brand A's users and keys never see or touch brand B's objects."""

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.roles import Role
from tests.factories.brands import ApiKeyFactory

pytestmark = pytest.mark.django_db


def api_detail_urls(t):
    """Every API object URL of brand B (extend as models become reachable)."""
    return {
        "project": reverse("api:project-detail", args=[t.project_b.pk]),
        "project-stage": reverse("api:project-stage", args=[t.project_b.pk]),
        "participants-of-project": reverse("api:participant-list", args=[t.project_b.pk]),
        "participant": reverse("api:participant-detail", args=[t.project_b.pk, t.participant_b.pk]),
        "participant-via-own-project": reverse(
            "api:participant-detail", args=[t.project_a.pk, t.participant_b.pk]
        ),
        "person": reverse("api:person-detail", args=[t.participant_b.person.pk]),
        "api-key": reverse("api:api-key-detail", args=[ApiKeyFactory(brand=t.brand_b).pk]),
    }


def page_urls(t):
    """Brand B's page URLs: (url, accepts POST)."""
    return {
        "project": (reverse("projects:detail", args=[t.project_b.pk]), False),
        "project-edit": (reverse("projects:edit", args=[t.project_b.pk]), True),
        "project-stage": (reverse("projects:stage", args=[t.project_b.pk]), True),
        "participants": (reverse("participants:project", args=[t.project_b.pk]), False),
        "participant-add": (reverse("participants:create", args=[t.project_b.pk]), True),
        "participant-edit": (
            reverse("participants:edit", args=[t.project_b.pk, t.participant_b.pk]),
            True,
        ),
        "participant-remove": (
            reverse("participants:remove", args=[t.project_b.pk, t.participant_b.pk]),
            True,
        ),
        "participant-via-own-project": (
            reverse("participants:edit", args=[t.project_a.pk, t.participant_b.pk]),
            True,
        ),
        "person": (reverse("participants:person", args=[t.participant_b.person.pk]), False),
    }


@pytest.mark.parametrize("auth", ["session", "api_key"])
def test_other_brands_objects_answer_404_in_the_api(tenancy, api_client_for, auth):
    key = ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN)
    client = (
        api_client_for(api_key=key) if auth == "api_key" else api_client_for(user=tenancy.admin_a)
    )
    for name, url in api_detail_urls(tenancy).items():
        response = client.get(url)
        if name == "project-stage":
            response = client.post(url, {"stage": "paused"}, format="json")
        assert response.status_code == 404, (name, response.status_code, response.content)
        assert response.json()["error"]["code"] == "not_found"
        for method in ("patch", "delete"):
            assert getattr(client, method)(url, {}, format="json").status_code in (404, 405), name
    tenancy.project_b.refresh_from_db()
    assert tenancy.project_b.stage == "active"


def test_other_brands_pages_answer_404(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    for name, (url, accepts_post) in page_urls(tenancy).items():
        if not name.endswith(("stage", "remove")):
            assert client.get(url).status_code == 404, name
        if accepts_post:
            response = client.post(url, {"name": "hijack", "stage": "paused", "first_name": "X"})
            assert response.status_code == 404, name
    tenancy.project_b.refresh_from_db()
    assert (tenancy.project_b.name, tenancy.project_b.stage) == ("Beta pulse", "active")
    assert tenancy.project_b.participants.count() == 1


@pytest.mark.parametrize(
    "url_name,args,needle",
    [
        ("api:project-list", [], "Beta pulse"),
        ("api:person-list", [], "P"),
        ("api:api-key-list", [], "beta-key"),
    ],
)
def test_api_lists_never_include_other_brands(tenancy, api_client_for, url_name, args, needle):
    ApiKeyFactory(brand=tenancy.brand_b, name="beta-key")
    client = api_client_for(user=tenancy.admin_a)
    response = client.get(reverse(url_name, args=args))
    assert response.status_code == 200
    ids = {row["id"] for row in response.json()["results"]}
    if url_name == "api:project-list":
        assert ids == {tenancy.project_a.pk}
    elif url_name == "api:person-list":
        assert ids == {tenancy.participant_a.person.pk}
    else:
        assert all(row["name"] != "beta-key" for row in response.json()["results"])


def test_page_lists_never_include_other_brands(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    body = client.get(reverse("projects:list")).content.decode()
    assert "Alpha pulse" in body and "Beta pulse" not in body
    body = client.get(reverse("participants:directory")).content.decode()
    assert tenancy.participant_a.person.person_id in body
    assert tenancy.participant_b.person.person_id not in body


def test_api_key_of_brand_b_only_sees_brand_b(tenancy, api_client_for):
    key_b = ApiKeyFactory(brand=tenancy.brand_b)
    response = api_client_for(api_key=key_b).get(reverse("api:project-list"))
    assert [row["name"] for row in response.json()["results"]] == ["Beta pulse"]


def test_switching_brand_changes_what_a_user_sees(tenancy, page_client_for):
    from tests.factories.brands import MembershipFactory

    MembershipFactory(user=tenancy.admin_a, brand=tenancy.brand_b, role=Role.VIEWER)
    client = page_client_for(tenancy.admin_a)
    assert "Alpha pulse" in client.get(reverse("projects:list")).content.decode()
    client.post(reverse("brands:switch"), {"brand": tenancy.brand_b.pk})
    body = client.get(reverse("projects:list")).content.decode()
    assert "Beta pulse" in body and "Alpha pulse" not in body
    # As a viewer in brand B, writes are refused.
    assert (
        client.post(reverse("projects:create"), {"name": "x", "kind": "ad_hoc"}).status_code == 403
    )


def test_switching_to_a_brand_you_do_not_belong_to_is_refused(tenancy, page_client_for):
    client = page_client_for(tenancy.admin_a)
    client.post(reverse("brands:switch"), {"brand": tenancy.brand_b.pk})
    body = client.get(reverse("projects:list")).content.decode()
    assert "Alpha pulse" in body and "Beta pulse" not in body


def api_object_urls_of_brand_b(t):
    """Every object URL of brand B reachable through the API beyond the foundation's."""
    from tests.factories.distributions import DistributionFactory, OptOutFactory

    distribution = DistributionFactory(project=t.project_b, status="sent")
    optout = OptOutFactory(brand=t.brand_b, address="+14155550142")
    project = t.project_b.pk
    return {
        "distribution": reverse("api:distribution-detail", args=[distribution.pk]),
        "distribution-history": reverse("api:distribution-history", args=[distribution.pk]),
        "distribution-history-csv": reverse("api:distribution-history-csv", args=[distribution.pk]),
        "optout": reverse("api:optout-detail", args=[optout.pk]),
        "project-links": reverse("api:link-list", args=[project]),
        "project-links-csv": reverse("api:link-csv", args=[project]),
        "project-responses": reverse("api:response-list", args=[project]),
        "project-responses-csv": reverse("api:response-csv", args=[project]),
        "project-questions": reverse("api:question-list", args=[project]),
        "project-reminders": reverse("api:reminder-list", args=[project]),
        "project-recurrences": reverse("api:series-list", args=[project]),
        "project-qr": reverse("api:project-qr", args=[project, "png"]),
    }, {
        "distribution-cancel": reverse("api:distribution-cancel", args=[distribution.pk]),
        "optout-opt-in": reverse("api:optout-opt-in", args=[optout.pk]),
        "distribution-create": reverse("api:distribution-list"),
        "distribution-preview": reverse("api:distribution-preview"),
    }


@pytest.mark.parametrize("auth", ["session", "api_key"])
def test_every_api_object_of_another_brand_answers_404(tenancy, api_client_for, auth):
    key = ApiKeyFactory(brand=tenancy.brand_a, role=Role.BRAND_ADMIN)
    client = (
        api_client_for(api_key=key) if auth == "api_key" else api_client_for(user=tenancy.admin_a)
    )
    reads, writes = api_object_urls_of_brand_b(tenancy)
    for name, url in reads.items():
        response = client.get(url)
        assert response.status_code == 404, (name, response.status_code)
    bodies = {
        "distribution-create": {"project": tenancy.project_b.pk, "message": "hijack"},
        "distribution-preview": {"project": tenancy.project_b.pk},
        "optout-opt-in": {"reason": "hijack"},
    }
    for name, url in writes.items():
        response = client.post(url, bodies.get(name, {}), format="json")
        assert response.status_code == 404, (name, response.status_code, response.content[:200])
    assert tenancy.project_b.distributions.count() == 1
    assert tenancy.project_b.distributions.get().status == "sent"


def test_lists_of_distributions_and_optouts_never_include_another_brand(tenancy, api_client_for):
    from tests.factories.distributions import DistributionFactory, OptOutFactory

    mine = DistributionFactory(project=tenancy.project_a)
    DistributionFactory(project=tenancy.project_b)
    own_optout = OptOutFactory(brand=tenancy.brand_a, address="+14155550143")
    OptOutFactory(brand=tenancy.brand_b, address="+14155550144")
    client = api_client_for(user=tenancy.admin_a)
    distributions = client.get(reverse("api:distribution-list")).json()["results"]
    assert [row["id"] for row in distributions] == [mine.pk]
    optouts = client.get(reverse("api:optout-list")).json()["results"]
    assert [row["id"] for row in optouts] == [own_optout.pk]


def test_the_precompiled_lookup_by_pk_answers_as_the_orm_does(tenancy):
    from django.http import Http404

    from brands.scoping import get_for_brand, get_for_brand_by_pk
    from projects.models import Project

    project = tenancy.project_a
    project.available_from = timezone.now()
    project.save()
    for _ in range(2):  # the statement is written by the first call, reused by the second
        found = get_for_brand_by_pk(Project, brand=tenancy.brand_a, pk=str(project.pk))
        expected = get_for_brand(Project, brand=tenancy.brand_a, pk=project.pk)
        fields = [f.attname for f in Project._meta.concrete_fields]
        assert [getattr(found, f) for f in fields] == [getattr(expected, f) for f in fields]
        assert found.available_from == project.available_from and not found._state.adding
    for brand, pk in [(tenancy.brand_b, project.pk), (None, project.pk), (tenancy.brand_a, "x")]:
        with pytest.raises(Http404):
            get_for_brand_by_pk(Project, brand=brand, pk=pk)
    with pytest.raises(Http404):
        get_for_brand_by_pk(Project, brand=tenancy.brand_a, pk=project.pk + 1000)


def test_a_fresh_copy_is_a_new_read_of_the_row(tenancy):
    from brands.scoping import fresh_copy
    from projects.models import Project

    kept = Project.objects.select_related("brand").get(pk=tenancy.project_a.pk)
    copy = fresh_copy(kept)
    fields = [f.attname for f in Project._meta.concrete_fields]
    assert [getattr(copy, f) for f in fields] == [getattr(kept, f) for f in fields]
    assert (copy._state.db, copy._state.adding) == (kept._state.db, False)
    assert copy._state is not kept._state and copy._state.fields_cache == {}
    # What a request does to its copy stays there: fields, relations, the row itself.
    copy.name = "Changed"
    copy.brand = tenancy.brand_b
    copy.save(update_fields=["name"])
    assert (kept.name, kept.brand, kept.brand_id) == (
        tenancy.project_a.name,
        tenancy.brand_a,
        tenancy.brand_a.pk,
    )
    assert Project.objects.get(pk=kept.pk).name == "Changed"
