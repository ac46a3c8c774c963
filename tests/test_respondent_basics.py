"""The respondent's basics (issue 22, item 7): save and finish later on a personal link, one
answer per person on the anonymous link (a signed cookie), an admin reset of a response (page
and API, audit trail, old answers kept as superseded), the closed-survey message per project,
and the reminder audience "started but not finished". Roles and the other brand on each."""

from __future__ import annotations

import html

from django.test import Client
from django.urls import reverse

import pytest

from distributions.audiences import recipients_queryset
from distributions.models import Distribution
from projects.models import Project, Response, ResponseReset, SurveyLink
from projects.services import project_change_stage
from surveys.respondents import respondent_participant_ids
from surveys.services import response_reset
from tests import test_survey_links
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ResponseFactory, SurveyLinkFactory

survey = test_survey_links.survey  # the fixture: the same four questions

pytestmark = pytest.mark.django_db


def link_for(tenancy) -> SurveyLink:
    invite = DistributionFactory(project=tenancy.project_a, status="sent")
    return SurveyLinkFactory(
        project=tenancy.project_a, participant=tenancy.participant_a, distribution=invite
    )


def stamp(client, url) -> str:
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    return page.context["stamp"]


def text(response) -> str:
    return html.unescape(response.content.decode())


# --- save and finish later ------------------------------------------------------------------
def test_a_personal_link_saves_partial_answers_and_resumes_them(tenancy, survey):
    link = link_for(tenancy)
    url = f"/s/{link.token}"
    client = Client()
    first = client.get(url)
    assert 'id="save-later"' in text(first) and "open the same link again" in text(first)

    saved = client.post(
        url,
        {
            "stamp": first.context["stamp"],
            "action": "save",
            survey["single"].field_name: "Blue",
            survey["multiple"].field_name: ["Food", "Gym"],
            survey["text"].field_name: "Half way",
        },
    )
    assert saved.status_code == 200 and "Your answers are saved" in text(saved)
    response = Response.objects.get(link=link)  # the required rating may wait
    assert response.status == Response.Status.PARTIAL
    assert response.answers == {
        str(survey["single"].pk): "Blue",
        str(survey["multiple"].pk): ["Gym", "Food"],
        str(survey["text"].pk): "Half way",
    }
    started = response.started_at
    link.refresh_from_db()
    assert link.completed_at is None
    assert not respondent_participant_ids(tenancy.project_a.pk).exists()

    resumed = client.get(url)
    page = text(resumed)
    assert "the answers you saved are filled in" in page
    assert f'name="{survey["single"].field_name}" value="Blue" checked' in page
    assert f'name="{survey["multiple"].field_name}" value="Food" checked' in page
    assert f'name="{survey["multiple"].field_name}" value="Bus"' in page
    assert f'name="{survey["multiple"].field_name}" value="Bus" checked' not in page
    assert ">Half way</textarea>" in page

    refused = client.post(url, {"stamp": resumed.context["stamp"], "action": "finish"})
    assert refused.status_code == 400 and "This question needs an answer." in text(refused)
    done = client.post(
        url,
        {
            "stamp": resumed.context["stamp"],
            "action": "finish",
            survey["rating"].field_name: "8",
            survey["single"].field_name: "Blue",
        },
    )
    assert done.status_code == 302
    finished = Response.objects.get(link=link)
    assert finished.pk == response.pk and finished.status == Response.Status.COMPLETE
    assert finished.started_at == started  # when they first began, not when they resumed
    assert "already recorded" in text(client.get(url))
    again = client.post(url, {"stamp": resumed.context["stamp"], "action": "save"})
    assert again.status_code == 409
    assert Response.objects.filter(project=tenancy.project_a).count() == 1


def test_the_anonymous_link_has_no_save_for_later(tenancy, survey):
    page = Client().get(f"/a/{tenancy.project_a.public_token}")
    assert page.status_code == 200 and 'id="save-later"' not in text(page)


# --- one answer per person on the anonymous link --------------------------------------------
def anonymous_answer(client, project, survey, **extra):
    url = f"/a/{project.public_token}"
    return client.post(url, {"stamp": stamp(client, url), survey["rating"].field_name: "7"})


def test_one_answer_per_person_sets_a_signed_cookie_and_refuses_a_second(tenancy, survey):
    project = tenancy.project_a
    project.anonymous_one_answer = True
    project.save()
    url = f"/a/{project.public_token}"
    browser = Client()
    first = anonymous_answer(browser, project, survey)
    assert first.status_code == 200 and "were recorded" in text(first)
    cookie = first.cookies[f"relay_answered_{project.public_token}"]
    assert cookie["path"] == url and cookie["httponly"] and cookie["samesite"] == "Lax"
    assert int(cookie["max-age"]) == 365 * 24 * 3600
    recorded = Response.objects.get(project=project)
    assert str(recorded.pk) in cookie.value  # signed: the value names the response

    again = browser.get(url)
    assert "already recorded" in text(again) and "stamp" not in (again.context or {})
    form = Client().get(url).context["stamp"]  # a form from before the cookie
    refused = browser.post(url, {"stamp": form, survey["rating"].field_name: "1"})
    assert refused.status_code == 409
    assert Response.objects.filter(project=project).count() == 1

    forged = Client()
    forged.cookies[f"relay_answered_{project.public_token}"] = "1:forged:signature"
    assert anonymous_answer(forged, project, survey).status_code == 200  # a bad cookie: ignored
    # The documented limit: another browser (or cleared cookies) answers again.
    assert anonymous_answer(Client(), project, survey).status_code == 200
    assert Response.objects.filter(project=project).count() == 3

    # After an admin reset of its response, that browser may answer again.
    response_reset(response=recorded, actor=tenancy.admin_a, reason="asked to retake")
    assert "Score?" in text(browser.get(url))
    assert anonymous_answer(browser, project, survey).status_code == 200


def test_without_the_option_the_anonymous_link_takes_any_number_of_answers(tenancy, survey):
    project = tenancy.project_a
    browser = Client()
    first = anonymous_answer(browser, project, survey)
    assert not first.cookies
    assert anonymous_answer(browser, project, survey).status_code == 200
    assert Response.objects.filter(project=project).count() == 2


def test_the_api_creates_and_edits_a_project_with_one_answer_per_person(tenancy, api_a):
    created = api_a.post(
        reverse("api:project-list"),
        {"name": "Kiosk", "anonymous_one_answer": True, "closed_message": " See you in May. "},
        format="json",
    )
    assert created.status_code == 201, created.json()
    project = Project.objects.get(pk=created.json()["id"])
    assert project.anonymous_one_answer and project.closed_message == "See you in May."
    changed = api_a.patch(
        reverse("api:project-detail", args=[project.pk]),
        {"anonymous_one_answer": False},
        format="json",
    )
    assert changed.status_code == 200 and changed.json()["anonymous_one_answer"] is False


def test_the_links_page_switches_one_answer_per_person_and_explains_its_limits(
    tenancy, page_client_for
):
    project = tenancy.project_a
    admin = page_client_for(tenancy.project_admin_a)
    page = text(admin.get(reverse("projects:links", args=[project.pk])))
    assert "One answer per person on the anonymous link" in page
    assert "clearing cookies, a private window, or another browser" in page
    admin.post(reverse("projects:links", args=[project.pk]), {"anonymous_one_answer": "on"})
    project.refresh_from_db()
    assert project.anonymous_one_answer and not project.by_invitation_only
    viewer = page_client_for(tenancy.viewer_a)
    assert viewer.post(reverse("projects:links", args=[project.pk]), {}).status_code == 403


# --- admin reset ----------------------------------------------------------------------------
def answered_link(tenancy, survey) -> tuple[SurveyLink, Response]:
    link = link_for(tenancy)
    url = f"/s/{link.token}"
    client = Client()
    client.post(url, {"stamp": stamp(client, url), survey["rating"].field_name: "3"})
    return link, Response.objects.get(link=link)


def test_an_admin_resets_a_response_on_its_page_and_the_person_answers_again(
    tenancy, survey, page_client_for
):
    link, response = answered_link(tenancy, survey)
    project = tenancy.project_a
    reset_url = reverse("projects:response-reset", args=[project.pk, response.pk])
    assert page_client_for(tenancy.viewer_a).get(reset_url).status_code == 403
    assert page_client_for(tenancy.admin_b).get(reset_url).status_code == 404
    admin = page_client_for(tenancy.project_admin_a)
    summary = text(admin.get(reverse("projects:responses", args=[project.pk])))
    assert f'href="{reset_url}"' in summary
    page = text(admin.get(reset_url))
    assert "the person is no longer a respondent" in page and 'id="reset-submit"' in page

    done = admin.post(reset_url, {"reason": "Answered for the wrong team"})
    assert done.status_code == 302
    response.refresh_from_db()
    link.refresh_from_db()
    assert response.status == Response.Status.SUPERSEDED and response.link_id is None
    assert response.answers == {str(survey["rating"].pk): 3}  # kept
    assert link.completed_at is None
    audit = ResponseReset.objects.get()
    assert (audit.response, audit.link, audit.previous_status, audit.actor, audit.reason) == (
        response,
        link,
        Response.Status.COMPLETE,
        tenancy.project_admin_a,
        "Answered for the wrong team",
    )
    assert not respondent_participant_ids(project.pk).exists()
    summary = text(admin.get(reverse("projects:responses", args=[project.pk])))
    assert 'id="response-resets"' in summary and "Answered for the wrong team" in summary
    assert "Superseded (reset)" in summary

    twice = admin.post(reset_url, {"reason": "again"})
    assert twice.status_code == 400 and "already reset" in text(twice)

    client = Client()
    url = f"/s/{link.token}"
    retake = client.post(url, {"stamp": stamp(client, url), survey["rating"].field_name: "9"})
    assert retake.status_code == 302
    new = Response.objects.get(link=link)
    assert new.pk != response.pk and new.status == Response.Status.COMPLETE
    assert list(
        respondent_participant_ids(project.pk).values_list("participant_id", flat=True)
    ) == [tenancy.participant_a.pk]


def test_the_api_resets_a_response_once_and_lists_it_superseded(
    tenancy, survey, api_a, api_client_for
):
    _, response = answered_link(tenancy, survey)
    project = tenancy.project_a
    url = reverse("api:response-reset", args=[project.pk, response.pk])
    viewer = api_client_for(user=tenancy.viewer_a)
    assert viewer.post(url, {}, format="json").status_code == 403
    refused = api_a.post(url, {"reason": "x" * 201}, format="json")
    assert refused.status_code == 400 and "reason" in refused.json()["error"]["fields"]
    done = api_a.post(url, {"reason": "retake"}, format="json")
    assert done.status_code == 201, done.json()
    body = done.json()
    assert (body["response"], body["previous_status"], body["reason"]) == (
        response.pk,
        "complete",
        "retake",
    )
    assert body["link"] == response.link_id
    again = api_a.post(url, {}, format="json")
    assert again.status_code == 409 and "already reset" in again.json()["error"]["message"]
    listed = api_a.get(reverse("api:response-list", args=[project.pk])).json()["results"]
    assert [(r["id"], r["status"], r["link"]) for r in listed] == [
        (response.pk, "superseded", None)
    ]
    foreign = ResponseFactory(project=tenancy.project_b)
    hidden = api_a.post(reverse("api:response-reset", args=[project.pk, foreign.pk]), {})
    assert hidden.status_code == 404
    other_project = api_a.post(
        reverse("api:response-reset", args=[tenancy.project_b.pk, foreign.pk]), {}
    )
    assert other_project.status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == Response.Status.COMPLETE


# --- the closed-survey message --------------------------------------------------------------
def test_the_closed_page_shows_the_projects_own_message(tenancy, survey, api_a, page_client_for):
    project = tenancy.project_a
    link = link_for(tenancy)
    changed = api_a.patch(
        reverse("api:project-detail", args=[project.pk]),
        {"closed_message": "Sorry, the 2026 pulse has ended.\nThe next one opens in May."},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert changed.json()["closed_message"].startswith("Sorry, the 2026 pulse")
    project_change_stage(project=project, stage=Project.Stage.PAUSED)
    for url in (f"/s/{link.token}", f"/a/{project.public_token}"):
        page = text(Client().get(url))
        assert "Sorry, the 2026 pulse has ended.<br>The next one opens in May." in page, url
    project_change_stage(project=project, stage=Project.Stage.CLOSED)
    assert "The next one opens in May." in text(Client().get(f"/s/{link.token}"))

    form = text(page_client_for(tenancy.admin_a).get(reverse("projects:edit", args=[project.pk])))
    assert "Closed-survey message" in form and "paused or closed" in form


def test_without_a_message_the_closed_page_keeps_the_standard_wording(tenancy, survey):
    project = tenancy.project_a
    project_change_stage(project=project, stage=Project.Stage.PAUSED)
    page = text(Client().get(f"/a/{project.public_token}"))
    assert "is not collecting answers right now" in page and 'id="closed-message"' not in page


# --- the reminder audience "started but not finished" ---------------------------------------
@pytest.fixture
def people(tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    found = {}
    for first, phone in (("Ada", "+14155550101"), ("Bob", "+14155550102"), ("Cy", "+14155550103")):
        person = PersonFactory(brand=tenancy.brand_a, first_name=first, phone=phone)
        found[first] = ParticipantFactory(project=project, person=person)
    ResponseFactory(project=project, participant=found["Ada"])  # finished
    ResponseFactory(project=project, participant=found["Bob"], status=Response.Status.PARTIAL)
    return found


def names(queryset) -> list[str]:
    return sorted(queryset.values_list("person__first_name", flat=True))


def test_a_reminder_to_who_started_but_did_not_finish(tenancy, people):
    project = tenancy.project_a
    started = DistributionFactory(project=project, kind="reminder", audience="started")
    everyone = DistributionFactory(project=project, kind="reminder")
    assert names(recipients_queryset(started)) == ["Bob"]
    assert names(recipients_queryset(everyone)) == ["Bob", "Cy"]
    # A reset response is no longer a start (nor a finish): Ada is reminded as not responded.
    response_reset(response=Response.objects.get(participant=people["Ada"]))
    assert names(recipients_queryset(started)) == ["Bob"]
    assert names(recipients_queryset(everyone)) == ["Ada", "Bob", "Cy"]
    ResponseFactory(project=project, participant=people["Bob"])  # Bob finishes
    assert names(recipients_queryset(started)) == []


def test_the_api_schedules_a_started_reminder_and_refuses_it_on_an_invite(
    tenancy, people, api_a, django_capture_on_commit_callbacks, eager_tasks
):
    project = tenancy.project_a
    with django_capture_on_commit_callbacks(execute=True):
        created = api_a.post(
            reverse("api:reminder-list", args=[project.pk]),
            {"message": "Finish it: ${link}", "audience": "started"},
            format="json",
        )
    assert created.status_code == 201, created.json()
    assert created.json()["audience"] == "started"
    reminder = Distribution.objects.get(pk=created.json()["id"])
    assert [m.person.first_name for m in reminder.messages.select_related("person")] == ["Bob"]
    refused = api_a.post(
        reverse("api:distribution-list"),
        {"project": project.pk, "message": "Hi ${link}", "audience": "started"},
        format="json",
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["audience"] == (
        "Only a reminder targets who started but did not finish."
    )
    unknown = api_a.post(
        reverse("api:reminder-list", args=[project.pk]),
        {"message": "Hi ${link}", "audience": "everyone"},
        format="json",
    )
    assert unknown.status_code == 400 and "audience" in unknown.json()["error"]["fields"]


def test_the_schedule_page_offers_started_only_for_reminders(tenancy, people, page_client_for):
    project = tenancy.project_a
    admin = page_client_for(tenancy.admin_a)
    summary = text(admin.get(reverse("projects:responses", args=[project.pk])))
    assert 'data-metric="started_not_finished">1<' in summary
    assert "Remind the 1 who started but did not finish" in summary
    form = text(admin.get(reverse("distributions:create", args=[project.pk]) + "?kind=reminder"))
    assert "Only participants who started the survey and did not finish it" in form
    assert 'name="started_only" id="id_started_only" checked' not in form
    form = text(
        admin.get(
            reverse("distributions:create", args=[project.pk]) + "?kind=reminder&audience=started"
        )
    )
    assert 'name="started_only" id="id_started_only" checked' in form
    assert 'id="match-count">1<' in form  # the count and estimate follow the box

    def counted(**extra) -> str:
        data = {"kind": "reminder", "audience": "all", "message": "Hi ${link}", **extra}
        answer = admin.post(reverse("distributions:preview_count", args=[project.pk]), data)
        return text(answer).split('id="match-count">')[1].split("<")[0]

    assert (counted(), counted(started_only="on")) == ("2", "1")
    assert counted(kind="invite", started_only="on") == "3"  # only reminders narrow
    created = admin.post(
        reverse("distributions:create", args=[project.pk]),
        {
            "kind": "reminder",
            "name": "",
            "message": "Finish it: ${link}",
            "sender": "",
            "audience": "all",
            "started_only": "on",
            "when": "later",
            "send_date": "2030-07-01",
            "send_time": "09:30",
            "c_criterion": [""],
            "c_field": [""],
            "c_operator": ["is"],
            "c_value": [""],
        },
    )
    assert created.status_code == 302, text(created)[:2000]
    reminder = Distribution.objects.get(kind="reminder")
    assert reminder.audience == Distribution.AUDIENCE_STARTED
    detail = text(admin.get(reverse("distributions:detail", args=[reminder.pk])))
    assert "Participants who started the survey and did not finish it" in detail
