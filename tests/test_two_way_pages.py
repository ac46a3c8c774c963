"""The two-way pages: the survey as texts with segments, the settings, keywords and the
sessions of a distribution, scoped to the brand (another brand's answers 404), changes by
project admins only."""

from __future__ import annotations

import pytest

from conversations.models import Session, SmsKeyword, TwoWaySettings
from distributions.inbound import sms_reply_receive
from distributions.providers.base import InboundSms
from distributions.services import distribution_create
from surveys.services import question_create
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def survey(tenancy):
    project = tenancy.project_a
    question_create(project=project, kind="single", text="Team?", choices=["Red", "Blue"])
    question_create(project=project, kind="rating", text="Score? ✨")
    return tenancy


def test_preview_shows_each_text_with_its_segments(survey, page_client_for):
    client = page_client_for(survey.viewer_a)
    page = client.get(f"/projects/{survey.project_a.pk}/two-way/").content.decode()
    assert "(1/2) Team?\n1) Red\n2) Blue" in page
    assert "Reply STOP to opt out." in page
    assert "UCS-2" in page  # the sparkle makes the second question Unicode
    assert "2 questions: 3 segments" in page
    other = client.get(f"/projects/{survey.project_b.pk}/two-way/")
    assert other.status_code == 404
    assert client.post(f"/projects/{survey.project_a.pk}/two-way/", {}).status_code == 403


def test_preview_names_questions_that_cannot_be_texted(survey, page_client_for):
    question_create(project=survey.project_a, kind="multiple", text="Which?", choices=["A", "B"])
    page = page_client_for(survey.viewer_a).get(f"/projects/{survey.project_a.pk}/two-way/")
    assert "3. &quot;Which?&quot; (Multiple choice)" in page.content.decode()


def test_settings_are_checked_and_saved(survey, page_client_for):
    client = page_client_for(survey.project_admin_a)
    url = f"/projects/{survey.project_a.pk}/two-way/"
    bad = client.post(url, {"expiry_hours": "0", "max_invalid": "3"})
    assert bad.status_code == 400 and "Between 1 hour" in bad.content.decode()
    assert client.post(url, {"expiry_hours": "48", "max_invalid": "2"}).status_code == 302
    saved = TwoWaySettings.objects.get(project=survey.project_a)
    assert (saved.expiry_hours, saved.max_invalid) == (48, 2)


def test_keywords_page(survey, page_client_for):
    client = page_client_for(survey.project_admin_a)
    url = f"/projects/{survey.project_a.pk}/two-way/keywords/"
    refused = client.post(url, {"keyword": "STOP", "sender": "+15005550006"})
    assert refused.status_code == 400 and "STOP, START or HELP" in refused.content.decode()
    assert client.post(url, {"keyword": "pulse", "sender": "+15005550006"}).status_code == 302
    again = client.post(url, {"keyword": "PULSE", "sender": "+15005550006"})
    assert "already a keyword" in again.content.decode()
    keyword = SmsKeyword.objects.get()
    # Another brand cannot remove it, nor see the page.
    other = page_client_for(survey.admin_b)
    assert other.get(url).status_code == 404
    assert other.post(url, {"delete": keyword.pk}).status_code == 404
    client = page_client_for(survey.project_admin_a)  # one test client: log back in
    assert client.post(url, {"delete": keyword.pk}).status_code == 302
    assert not SmsKeyword.objects.exists()


def test_sessions_page(
    survey, page_client_for, api_client_for, eager_tasks, django_capture_on_commit_callbacks
):
    survey.participant_a.delete()
    person = PersonFactory(brand=survey.brand_a, first_name="Ada", phone="+14155550101")
    ParticipantFactory(project=survey.project_a, person=person)
    with django_capture_on_commit_callbacks(execute=True):
        sent = distribution_create(project=survey.project_a, message="Hi", mode="two_way")
    with django_capture_on_commit_callbacks(execute=True):
        sms_reply_receive(
            brand=survey.brand_a,
            inbound=InboundSms(person.phone, "+15005550006", "2", provider_sid="SM1"),
            provider="twilio",
        )
    session = Session.objects.get()
    client = page_client_for(survey.viewer_a)
    detail = client.get(f"/distributions/{sent.pk}/").content.decode()
    assert f"/distributions/{sent.pk}/sessions/" in detail
    page = client.get(f"/distributions/{sent.pk}/sessions/").content.decode()
    assert f'data-session="{session.pk}"' in page
    assert "2 of 2" in page and "Received · Answer" in page and "(2/2) Score?" in page
    assert "Sent · Invite with question 1" in page and "(1/2) Team?" in page
    assert (
        page_client_for(survey.admin_b).get(f"/distributions/{sent.pk}/sessions/").status_code
        == 404
    )
    # The API answers the same conversation, scoped and filtered.
    from tests.factories.brands import ApiKeyFactory

    api = api_client_for(api_key=ApiKeyFactory(brand=survey.brand_a, role="viewer"))
    listed = api.get("/api/v1/sms-sessions/", {"distribution": sent.pk}).json()["results"]
    assert [item["id"] for item in listed] == [session.pk]
    item = listed[0]
    assert item["status"] == "open" and item["position"] == 2
    assert item["address"] == "+14155550101" and item["distribution"] == sent.pk
    assert [(turn["direction"], turn["kind"], turn["body"]) for turn in item["turns"]][-2:] == [
        ("in", "answer", "2"),
        ("out", "question", item["turns"][-1]["body"]),
    ]
    assert "(2/2) Score?" in item["turns"][-1]["body"]
    assert api.get(f"/api/v1/sms-sessions/{session.pk}/").json()["id"] == session.pk
    assert api.get("/api/v1/sms-sessions/", {"status": "completed"}).json()["results"] == []
    unknown = api.get("/api/v1/sms-sessions/", {"person": 1})
    assert unknown.status_code == 400 and "person" in unknown.json()["error"]["fields"]
    b_api = api_client_for(api_key=ApiKeyFactory(brand=survey.brand_b, role="brand_admin"))
    assert b_api.get(f"/api/v1/sms-sessions/{session.pk}/").status_code == 404
    assert b_api.get("/api/v1/sms-sessions/", {"distribution": sent.pk}).json()["results"] == []
    assert b_api.post("/api/v1/sms-sessions/", {}, format="json").status_code == 405  # read only


def test_the_mode_shows_on_edit_and_cannot_change(survey, page_client_for):
    from datetime import timedelta

    from django.utils import timezone

    later = timezone.now() + timedelta(days=1)
    scheduled = distribution_create(
        project=survey.project_a, message="Hi", mode="two_way", send_at=later
    )
    client = page_client_for(survey.project_admin_a)
    page = client.get(f"/distributions/{scheduled.pk}/edit/").content.decode()
    assert 'value="two_way"' in page and "disabled" in page.split('value="two_way"')[1][:80]
    client.post(
        f"/distributions/{scheduled.pk}/edit/",
        {
            "message": "Hello",
            "mode": "link",
            "when": "later",
            "audience": "all",
            "send_date": f"{later:%Y-%m-%d}",
            "send_time": "23:59",
        },
    )
    scheduled.refresh_from_db()
    assert (scheduled.message, scheduled.mode) == ("Hello", "two_way")


def test_keywords_api_has_the_pages_rules_roles_and_scope(survey, api_client_for):
    from tests.factories.brands import ApiKeyFactory

    url = "/api/v1/sms-keywords/"
    admin = api_client_for(api_key=ApiKeyFactory(brand=survey.brand_a, role="project_admin"))
    viewer = api_client_for(api_key=ApiKeyFactory(brand=survey.brand_a, role="viewer"))
    other = api_client_for(api_key=ApiKeyFactory(brand=survey.brand_b, role="brand_admin"))
    body = {"project": survey.project_a.pk, "sender": "+15005550006", "keyword": "pulse"}

    stop = admin.post(url, body | {"keyword": "Stop"}, format="json")
    assert stop.status_code == 400 and "keyword" in stop.json()["error"]["fields"]
    bad_number = admin.post(url, body | {"sender": "not a number"}, format="json")
    assert bad_number.status_code == 400 and "sender" in bad_number.json()["error"]["fields"]
    assert viewer.post(url, body, format="json").status_code == 403
    foreign = other.post(url, body, format="json")  # brand A's project is no project of B's
    assert foreign.status_code == 404
    assert not SmsKeyword.objects.exists()

    created = admin.post(url, body, format="json")
    assert created.status_code == 201, created.content
    answer = created.json()
    assert answer["keyword"] == "PULSE" and answer["sender"] == "+15005550006"
    assert answer["project"] == survey.project_a.pk and answer["active"] is True
    again = admin.post(url, body | {"keyword": "PULSE!"}, format="json")
    assert again.status_code == 400 and "already a keyword" in str(again.json())

    assert [k["keyword"] for k in viewer.get(url).json()["results"]] == ["PULSE"]
    assert other.get(url).json()["results"] == []
    one = f"{url}{answer['id']}/"
    assert other.get(one).status_code == 404
    assert other.delete(one).status_code == 404
    assert viewer.delete(one).status_code == 403
    assert admin.delete(one).status_code == 204
    assert not SmsKeyword.objects.exists()


def test_keywords_api_refuses_a_survey_that_cannot_be_texted(survey, api_client_for):
    from tests.factories.brands import ApiKeyFactory

    question_create(project=survey.project_a, kind="multiple", text="Which?", choices=["A", "B"])
    admin = api_client_for(api_key=ApiKeyFactory(brand=survey.brand_a, role="brand_admin"))
    refused = admin.post(
        "/api/v1/sms-keywords/",
        {"project": survey.project_a.pk, "sender": "+15005550006", "keyword": "PULSE"},
        format="json",
    )
    assert refused.status_code == 400 and "project" in refused.json()["error"]["fields"]
    assert "Which?" in str(refused.json())
