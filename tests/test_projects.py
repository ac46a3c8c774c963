from datetime import timedelta

from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

import pytest

from projects.models import Project, ProjectStageChange
from projects.services import project_change_stage, projects_apply_availability
from tests.factories.projects import ProjectFactory

pytestmark = pytest.mark.django_db
Stage = Project.Stage


@pytest.mark.parametrize(
    "start,target,allowed",
    [
        (Stage.NEW, Stage.ACTIVE, True),
        (Stage.NEW, Stage.PAUSED, False),
        (Stage.ACTIVE, Stage.PAUSED, True),
        (Stage.ACTIVE, Stage.NEW, False),
        (Stage.PAUSED, Stage.ACTIVE, True),
        (Stage.PAUSED, Stage.CLOSED, True),
        (Stage.CLOSED, Stage.ACTIVE, True),
        (Stage.CLOSED, Stage.PAUSED, False),
        (Stage.ACTIVE, Stage.ACTIVE, False),
    ],
)
def test_stage_transitions(start, target, allowed, tenancy):
    project = ProjectFactory(brand=tenancy.brand_a, stage=start)
    if allowed:
        project_change_stage(project=project, stage=target, actor=tenancy.admin_a)
        project.refresh_from_db()
        assert project.stage == target
        change = ProjectStageChange.objects.get(project=project)
        assert (change.from_stage, change.to_stage, change.actor) == (
            start,
            target,
            tenancy.admin_a,
        )
    else:
        with pytest.raises(ValidationError) as excinfo:
            project_change_stage(project=project, stage=target)
        assert "stage" in excinfo.value.message_dict
        project.refresh_from_db()
        assert project.stage == start
        assert not ProjectStageChange.objects.filter(project=project).exists()


def test_unknown_stage_is_refused_with_the_choices(tenancy):
    with pytest.raises(ValidationError) as excinfo:
        project_change_stage(project=tenancy.project_a, stage="archived")
    assert "Unknown stage 'archived'" in excinfo.value.message_dict["stage"][0]


def test_closed_by_availability_cannot_reopen_until_the_window_moves(tenancy):
    now = timezone.now()
    project = ProjectFactory(brand=tenancy.brand_a, available_until=now - timedelta(minutes=1))
    open_project = ProjectFactory(brand=tenancy.brand_a, available_until=now + timedelta(days=1))
    assert projects_apply_availability(now=now) == 1
    project.refresh_from_db()
    open_project.refresh_from_db()
    assert project.stage == Stage.CLOSED and open_project.stage == Stage.ACTIVE
    with pytest.raises(ValidationError, match="availability window has ended"):
        project_change_stage(project=project, stage=Stage.ACTIVE)


def test_api_create_validates_and_writes_nothing_on_bad_input(tenancy, api_a):
    url = reverse("api:project-list")
    bad = api_a.post(url, {"name": "X", "kind": "weekly"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"kind": '"weekly" is not a valid choice.'}
    unknown = api_a.post(url, {"name": "X", "colour": "red"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["fields"] == {"colour": "Unknown field."}
    window = api_a.post(
        url,
        {
            "name": "X",
            "available_from": "2030-01-02T00:00:00Z",
            "available_until": "2030-01-01T00:00:00Z",
        },
        format="json",
    )
    assert window.status_code == 400
    assert "available_until" in window.json()["error"]["fields"]
    malformed = api_a.post(url, data="{nope", content_type="application/json")
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "parse_error"
    assert Project.objects.filter(brand=tenancy.brand_a).count() == 1

    created = api_a.post(url, {"name": "Onboarding", "kind": "lifecycle"}, format="json")
    assert created.status_code == 201
    assert created.json()["stage"] == "new"


def test_api_stage_change_and_read_only_stage(tenancy, api_a):
    url = reverse("api:project-detail", args=[tenancy.project_a.pk])
    refused = api_a.patch(url, {"stage": "closed"}, format="json")
    assert refused.status_code == 400  # stage is not writable here: it has its own action
    response = api_a.post(
        reverse("api:project-stage", args=[tenancy.project_a.pk]), {"stage": "bogus"}, format="json"
    )
    assert response.status_code == 400
    assert "stage" in response.json()["error"]["fields"]
    response = api_a.post(
        reverse("api:project-stage", args=[tenancy.project_a.pk]),
        {"stage": "paused"},
        format="json",
    )
    assert response.status_code == 200 and response.json()["stage"] == "paused"


def test_project_pages_create_and_change_stage(tenancy, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    response = client.post(reverse("projects:create"), {"name": "Exit survey", "kind": "ad_hoc"})
    assert response.status_code == 302
    project = Project.objects.get(name="Exit survey")
    assert project.brand == tenancy.brand_a and project.stage == Stage.NEW
    client.post(reverse("projects:stage", args=[project.pk]), {"stage": "paused"})
    project.refresh_from_db()
    assert project.stage == Stage.NEW  # refused: New cannot be paused
    page = client.get(reverse("projects:detail", args=[project.pk]), follow=True)
    assert page.status_code == 200
