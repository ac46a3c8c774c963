"""Personal and anonymous links: opening, answering, refusing, and what a stop means."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

import pytest

from distributions.models import Message, MessageEvent
from projects.models import Project, Question, Response, SurveyLink
from projects.services import project_change_stage
from surveys.answers import answers_clean, form_stamp
from surveys.respondents import respondent_participant_ids
from surveys.services import (
    question_create,
    question_delete,
    question_move,
    question_update,
    questions_reorder,
)
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory
from tests.factories.projects import SurveyLinkFactory

pytestmark = pytest.mark.django_db
S = Message.Status
Stage = Project.Stage


@pytest.fixture
def survey(tenancy):
    project = tenancy.project_a
    return {
        "rating": question_create(project=project, kind="rating", text="Score?", required=True),
        "single": question_create(
            project=project, kind="single", text="Team?", choices=["Red", "Blue"]
        ),
        "multiple": question_create(
            project=project, kind="multiple", text="Perks?", choices=["Gym", "Food", "Bus"]
        ),
        "text": question_create(project=project, kind="text", text="Anything else?"),
    }


def sent_link(project, participant, *, status=S.SENT, distribution=None, **link):
    distribution = distribution or DistributionFactory(project=project, status="sent")
    message = MessageFactory(
        distribution=distribution,
        participant=participant,
        person=participant.person,
        address=participant.person.phone,
        status=status,
    )
    return SurveyLinkFactory(
        project=project,
        participant=participant,
        distribution=distribution,
        message=message,
        **link,
    )


def answers(survey, **extra):
    data = {
        survey["rating"].field_name: "9",
        survey["single"].field_name: "Blue",
        survey["multiple"].field_name: ["Food", "Gym"],
        survey["text"].field_name: "  Thanks  ",
    }
    data.update(extra)
    return data


def fresh_form(client, url) -> dict:
    """GET the page and read the stamp it carries (what a browser would post back)."""
    page = client.get(url)
    assert page.status_code == 200
    return {"stamp": page.context["stamp"]}


# --- questions ---------------------------------------------------------------------------------
def test_questions_are_validated_ordered_and_reordered(tenancy):
    project = tenancy.project_a
    with pytest.raises(ValidationError) as excinfo:
        question_create(project=project, kind="single", text="Pick", choices=["Only one"])
    assert "at least two" in excinfo.value.message_dict["choices"][0]
    with pytest.raises(ValidationError) as excinfo:
        question_create(project=project, kind="slider", text="")
    assert set(excinfo.value.message_dict) == {"kind", "text"}
    with pytest.raises(ValidationError) as excinfo:
        question_create(project=project, kind="rating", text="Score", choices=["a", "b"])
    assert "choices" in excinfo.value.message_dict
    first = question_create(project=project, kind="rating", text="One")
    second = question_create(
        project=project, kind="multiple", text="Two", choices=[" A", "A", "B ", ""]
    )
    third = question_create(project=project, kind="text", text="Three")
    assert second.choices == ["A", "B"]
    assert [q.position for q in (first, second, third)] == [1, 2, 3]

    question_move(question=third, offset=-1)
    assert list(project.questions.values_list("text", flat=True)) == ["One", "Three", "Two"]
    with pytest.raises(ValidationError):
        questions_reorder(project=project, order=[first.pk, first.pk, second.pk])
    questions_reorder(project=project, order=[second.pk, third.pk, first.pk])
    assert list(project.questions.values_list("text", flat=True)) == ["Two", "Three", "One"]
    question_delete(question=third)
    assert list(project.questions.values_list("position", flat=True)) == [1, 2]
    question_update(question=first, kind="single", choices=["Yes", "No"], required=True)
    first.refresh_from_db()
    assert (first.kind, first.choices, first.required) == ("single", ["Yes", "No"], True)


def test_answers_out_of_range_or_unknown_are_refused(survey):
    questions = list(survey.values())
    rating, single, multiple = survey["rating"], survey["single"], survey["multiple"]
    for bad in ("11", "-1", "7.5", "seven", True, 12):
        _, errors = answers_clean(questions, {rating.pk: bad})
        assert "from 0 to 10" in errors[rating.pk], bad
    _, errors = answers_clean(
        questions, {rating.pk: 0, single.pk: "Green", multiple.pk: ["Gym", "Pool"]}
    )
    assert set(errors) == {single.pk, multiple.pk}
    _, errors = answers_clean(questions, {})
    assert errors == {rating.pk: "This question needs an answer."}
    _, errors = answers_clean(questions, {rating.pk: 10, 999999: "x"})
    assert "no such question" in errors[999999]
    clean, errors = answers_clean(questions, {rating.pk: "10", multiple.pk: ["Bus", "Gym"]})
    assert not errors and clean == {str(rating.pk): 10, str(multiple.pk): ["Gym", "Bus"]}
    partial, errors = answers_clean(questions, {rating.pk: "42", single.pk: "Red"}, partial=True)
    assert not errors and partial == {str(single.pk): "Red"}


# --- personal links ------------------------------------------------------------------------------
def test_opening_records_opened_once_with_its_time(tenancy, survey, django_assert_max_num_queries):
    link = sent_link(tenancy.project_a, tenancy.participant_a, status=S.DELIVERED)
    client = Client()
    page = client.get(f"/s/{link.token}")
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store" and page["Referrer-Policy"] == "same-origin"
    link.refresh_from_db()
    message = link.message
    message.refresh_from_db()
    assert link.opened_at is not None
    assert message.status == S.OPENED and message.status_changed_at == link.opened_at
    event = MessageEvent.objects.get(message=message)
    assert (event.status, event.source, event.at) == (S.OPENED, "link", link.opened_at)

    with django_assert_max_num_queries(2):  # the link with its project, then the questions
        assert client.get(f"/s/{link.token}").status_code == 200
    assert MessageEvent.objects.filter(message=message).count() == 1


def test_opened_never_moves_a_row_back_or_touches_an_unsent_one(tenancy):
    project = tenancy.project_a
    skipped = sent_link(project, tenancy.participant_a, status=S.SKIPPED)
    sending = sent_link(project, ParticipantFactory(project=project), status=S.SENDING)
    client = Client()
    for link in (skipped, sending):
        client.get(f"/s/{link.token}")
        link.refresh_from_db()
        assert link.opened_at is not None
    assert Message.objects.get(pk=skipped.message_id).status == S.SKIPPED
    assert Message.objects.get(pk=sending.message_id).status == S.SENDING
    assert not MessageEvent.objects.exists()


def test_submitting_records_the_response_and_makes_a_respondent(tenancy, survey):
    link = sent_link(tenancy.project_a, tenancy.participant_a)
    client = Client()
    url = f"/s/{link.token}?utm_source=sms"
    posted = client.post(url, answers(survey) | fresh_form(client, url))
    assert posted.status_code == 302 and posted["Location"] == url
    thanks = client.get(url)
    assert b"were already recorded" in thanks.content

    response = Response.objects.get()
    assert response.status == Response.Status.COMPLETE
    assert response.channel == "sms" and response.link == link
    assert response.participant == tenancy.participant_a
    assert response.distribution_id == link.distribution_id
    assert response.answers == {
        str(survey["rating"].pk): 9,
        str(survey["single"].pk): "Blue",
        str(survey["multiple"].pk): ["Gym", "Food"],
        str(survey["text"].pk): "Thanks",
    }
    assert response.embedded_data == {"utm_source": "sms"}
    assert response.untrusted_keys == ["utm_source"]
    link.refresh_from_db()
    assert link.completed_at == response.completed_at
    assert list(respondent_participant_ids(tenancy.project_a.pk)) == [
        {"participant_id": tenancy.participant_a.pk}
    ]


def test_a_second_submission_is_refused_and_the_first_kept(tenancy, survey):
    link = sent_link(tenancy.project_a, tenancy.participant_a)
    client = Client()
    url = f"/s/{link.token}"
    form = fresh_form(client, url)
    assert client.post(url, answers(survey) | form).status_code == 302
    again = client.post(url, answers(survey, **{survey["rating"].field_name: "1"}) | form)
    assert again.status_code == 409
    assert b"already recorded" in again.content
    assert Response.objects.get().answers[str(survey["rating"].pk)] == 9


def test_invalid_answers_write_nothing_and_say_which(tenancy, survey):
    link = sent_link(tenancy.project_a, tenancy.participant_a)
    client = Client()
    url = f"/s/{link.token}"
    form = fresh_form(client, url)
    page = client.post(url, answers(survey, **{survey["rating"].field_name: "11"}) | form)
    assert page.status_code == 400
    html = page.content.decode()
    assert "Please check 1 answer" in html and "from 0 to 10" in html
    assert f'href="#{survey["rating"].field_name}"' in html
    assert 'value="Blue" checked' in html  # what was answered is kept on the page
    assert page.context["stamp"] == form["stamp"]  # and when the survey was first shown
    assert not Response.objects.exists()
    link.refresh_from_db()
    assert link.completed_at is None


@pytest.mark.parametrize("token", ["zzzzzzzzzz", "abc", "A" * 40, "bad%2Ftoken", "<script>"])
def test_unknown_or_tampered_tokens_get_a_plain_404(tenancy, survey, token):
    link = sent_link(tenancy.project_a, tenancy.participant_a)
    client = Client()
    for url in (f"/s/{token}", f"/s/{link.token[:-1]}", f"/a/{token}"):
        page = client.get(url)
        assert page.status_code == 404
        assert b"does not lead to a survey" in page.content
        assert token.encode() not in page.content and b"Traceback" not in page.content
    tampered = link.token[:-1] + ("x" if link.token[-1] != "x" else "y")
    assert client.post(f"/s/{tampered}", answers(survey)).status_code == 404
    assert not Response.objects.exists()


def test_the_form_is_csrf_protected(tenancy, survey):
    link = sent_link(tenancy.project_a, tenancy.participant_a)
    client = Client(enforce_csrf_checks=True)
    assert client.post(f"/s/{link.token}", answers(survey)).status_code == 403
    assert not Response.objects.exists()


def test_an_answered_invite_is_answered_for_its_reminders_too(tenancy, survey):
    project = tenancy.project_a
    invite_link = sent_link(project, tenancy.participant_a)
    reminder = DistributionFactory(
        project=project, kind="reminder", parent=invite_link.distribution, status="sent"
    )
    reminder_link = sent_link(project, tenancy.participant_a, distribution=reminder)
    other_invite_link = sent_link(project, tenancy.participant_a)  # e.g. next month's pulse
    client = Client()
    url = f"/s/{invite_link.token}"
    client.post(url, answers(survey) | fresh_form(client, url))
    assert b"already recorded" in client.get(f"/s/{reminder_link.token}").content
    refused = client.post(f"/s/{reminder_link.token}", answers(survey))
    assert refused.status_code == 409
    assert "Score?" in client.get(f"/s/{other_invite_link.token}").content.decode()
    assert Response.objects.count() == 1


def test_links_stop_when_the_project_is_paused_closed_or_out_of_its_window(tenancy, survey):
    project = tenancy.project_a
    link = sent_link(project, tenancy.participant_a)
    expired = sent_link(
        project, ParticipantFactory(project=project), expires_at=timezone.now() - timedelta(1)
    )
    client = Client()
    assert b"This link has expired" in client.get(f"/s/{expired.token}").content

    project_change_stage(project=project, stage=Stage.PAUSED)
    assert b"This survey is paused" in client.get(f"/s/{link.token}").content
    project_change_stage(project=project, stage=Stage.CLOSED)
    assert b"This survey is closed" in client.get(f"/s/{link.token}").content
    Project.objects.filter(pk=project.pk).update(
        stage=Stage.ACTIVE, available_until=timezone.now() - timedelta(minutes=1)
    )
    assert b"This survey is closed" in client.get(f"/s/{link.token}").content
    Project.objects.filter(pk=project.pk).update(
        available_from=timezone.now() + timedelta(days=1), available_until=None
    )
    assert b"not open yet" in client.get(f"/s/{link.token}").content
    assert not Response.objects.exists()


# --- pausing: respondents in the middle of the survey ------------------------------------------
def stamp_for(link, minutes_ago):
    return form_stamp(f"s:{link.token}", now=timezone.now() - timedelta(minutes=minutes_ago))


def test_pause_lets_respondents_in_the_middle_finish(tenancy, survey):
    project = tenancy.project_a
    started = sent_link(project, tenancy.participant_a)
    latecomer = sent_link(project, ParticipantFactory(project=project))
    project_change_stage(project=project, stage=Stage.PAUSED, let_in_progress_finish=True)
    client = Client()
    finished = client.post(
        f"/s/{started.token}", answers(survey) | {"stamp": stamp_for(started, 5)}
    )
    assert finished.status_code == 302
    refused = client.post(
        f"/s/{latecomer.token}",
        answers(survey) | {"stamp": form_stamp(f"s:{latecomer.token}", now=timezone.now())},
    )
    assert b"This survey is paused" in refused.content
    assert list(Response.objects.values_list("link", "status")) == [(started.pk, "complete")]


def test_pause_closing_now_keeps_partial_answers_when_asked(tenancy, survey):
    project = tenancy.project_a
    kept = sent_link(project, tenancy.participant_a)
    project_change_stage(
        project=project,
        stage=Stage.PAUSED,
        let_in_progress_finish=False,
        keep_partial_responses=True,
    )
    client = Client()
    data = answers(survey, **{survey["rating"].field_name: "99"}) | {"stamp": stamp_for(kept, 3)}
    page = client.post(f"/s/{kept.token}", data)
    assert b"The answers you gave were kept" in page.content
    response = Response.objects.get()
    assert response.status == Response.Status.PARTIAL
    assert str(survey["rating"].pk) not in response.answers  # invalid answers are dropped
    assert response.answers[str(survey["single"].pk)] == "Blue"
    assert not respondent_participant_ids(project.pk).exists()  # partial is not a respondent

    # Resumed: the same link can still be completed, upgrading its partial response.
    project_change_stage(project=project, stage=Stage.ACTIVE)
    url = f"/s/{kept.token}"
    assert client.post(url, answers(survey) | fresh_form(client, url)).status_code == 302
    response.refresh_from_db()
    assert response.status == Response.Status.COMPLETE and Response.objects.count() == 1


def test_pause_closing_now_can_discard_partial_answers(tenancy, survey):
    project = tenancy.project_a
    link = sent_link(project, tenancy.participant_a)
    project_change_stage(
        project=project,
        stage=Stage.PAUSED,
        let_in_progress_finish=False,
        keep_partial_responses=False,
    )
    page = Client().post(f"/s/{link.token}", answers(survey) | {"stamp": stamp_for(link, 3)})
    assert b"This survey is paused" in page.content
    assert not Response.objects.exists()


# --- anonymous link -------------------------------------------------------------------------------
def test_anonymous_link_and_qr_record_untrusted_url_data(tenancy, survey):
    project = tenancy.project_a
    client = Client()
    url = f"/a/{project.public_token}?src=qr&store=Lyon&store=Paris&" + "&".join(
        f"k{i}=v" for i in range(30)
    )
    form = fresh_form(client, url)
    assert client.post(url, answers(survey) | form).status_code == 200
    response = Response.objects.get()
    assert response.channel == "qr" and response.participant is None and response.link is None
    assert response.embedded_data["store"] == "Paris" and "src" not in response.embedded_data
    assert len(response.embedded_data) == 20
    assert sorted(response.untrusted_keys) == sorted(response.embedded_data)

    again = client.post(url, answers(survey) | form)
    assert again.status_code == 409 and Response.objects.count() == 1
    plain = f"/a/{project.public_token}"
    assert client.post(plain, answers(survey) | fresh_form(client, plain)).status_code == 200
    assert Response.objects.filter(channel="anonymous").count() == 1


def test_anonymous_form_needs_a_valid_stamp(tenancy, survey):
    project = tenancy.project_a
    url = f"/a/{project.public_token}"
    client = Client()
    for stamp in ("", "forged", form_stamp("a:another-project", now=timezone.now())):
        page = client.post(url, answers(survey) | {"stamp": stamp})
        assert page.status_code == 400 and b"please submit again" in page.content
    old = form_stamp(f"a:{project.public_token}", now=timezone.now() - timedelta(days=8))
    assert client.post(url, answers(survey) | {"stamp": old}).status_code == 400
    assert not Response.objects.exists()


def test_by_invitation_only_disables_the_anonymous_link(tenancy, survey):
    project = tenancy.project_a
    project.by_invitation_only = True
    project.save()
    client = Client()
    page = client.get(f"/a/{project.public_token}")
    assert page.status_code == 403 and b"By invitation only" in page.content
    link = sent_link(project, tenancy.participant_a)
    assert client.get(f"/s/{link.token}").status_code == 200  # personal links still answer


def test_every_project_has_its_own_anonymous_token(tenancy):
    tokens = set(Project.objects.values_list("public_token", flat=True))
    assert len(tokens) == 2 and all(len(token) == 10 for token in tokens)
    assert tenancy.project_a.anonymous_url.endswith(f"/a/{tenancy.project_a.public_token}")
    assert SurveyLink._meta.get_field("token").max_length == 16
    assert Question.Kind.RATING == "rating"
