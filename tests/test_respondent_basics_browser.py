"""The respondent's basics in Debian's Chromium (issue 22, item 7): a personal link saved half
way and resumed in a later visit, the anonymous link's one answer per browser (and another
browser answering again, the documented limit), and an admin resetting a response so that the
person retakes the survey through the same link."""

from __future__ import annotations

import pytest

from brands.roles import Role
from distributions.models import Distribution
from projects.models import Response, ResponseReset, SurveyLink
from tests import test_survey_links
from tests.browser import browser_user, login, screenshot
from tests.factories.projects import SurveyLinkFactory

survey = test_survey_links.survey  # the fixture: the same four questions

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PHONE = {"width": 390, "height": 844}


def personal_link(tenancy) -> SurveyLink:
    invite = Distribution.objects.create(
        project=tenancy.project_a, message="Hi ${link}", status="sent", send_at="2026-01-05T09:00Z"
    )
    return SurveyLinkFactory(
        project=tenancy.project_a, participant=tenancy.participant_a, distribution=invite
    )


def phone_page(browser):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    return context, page


def test_a_saved_survey_resumes_in_a_later_visit(tenancy, survey, browser, live_server):
    from playwright.sync_api import expect

    questions = survey
    link = personal_link(tenancy)
    url = f"{live_server.url}/s/{link.token}"

    context, phone = phone_page(browser)
    phone.goto(url)
    expect(phone.locator("#save-later-hint")).to_contain_text("open the same link again")
    phone.get_by_label("Blue").check()
    phone.get_by_label("Anything else?").fill("Still thinking")
    phone.get_by_role("button", name="Save and finish later").click()  # the rating may wait
    expect(phone.locator("h1")).to_have_text("Your answers are saved")
    screenshot(phone, "survey-saved")
    assert Response.objects.get(link=link).status == Response.Status.PARTIAL
    context.close()

    # Days later, from the message again: a new visit, the answers are there.
    context, phone = phone_page(browser)
    phone.goto(url)
    expect(phone.locator(".notice")).to_contain_text("the answers you saved are filled in")
    expect(phone.get_by_label("Blue")).to_be_checked()
    expect(phone.get_by_label("Anything else?")).to_have_value("Still thinking")
    phone.locator(f"label[for={questions['rating'].field_name}-8]").click()
    phone.get_by_role("button", name="Submit").click()
    expect(phone.locator("h1")).to_have_text("Thank you")
    assert phone.js_errors == []
    context.close()

    response = Response.objects.get(link=link)
    assert response.status == Response.Status.COMPLETE
    assert response.answers == {
        str(questions["rating"].pk): 8,
        str(questions["single"].pk): "Blue",
        str(questions["text"].pk): "Still thinking",
    }


def test_the_anonymous_link_takes_one_answer_per_browser(tenancy, survey, browser, live_server):
    from playwright.sync_api import expect

    project, questions = tenancy.project_a, survey
    project.anonymous_one_answer = True
    project.save()
    url = f"{live_server.url}/a/{project.public_token}"

    def answer(page, score: int) -> None:
        page.goto(url)
        page.locator(f"label[for={questions['rating'].field_name}-{score}]").click()
        page.get_by_role("button", name="Submit").click()
        expect(page.locator("h1")).to_have_text("Thank you")

    context, phone = phone_page(browser)
    answer(phone, 6)
    cookie = next(c for c in context.cookies() if c["name"].startswith("relay_answered_"))
    assert cookie["httpOnly"] and cookie["path"] == f"/a/{project.public_token}"
    phone.goto(url)  # opened again: told it was recorded, no form
    expect(phone.locator("[role=status]")).to_contain_text("already recorded")
    expect(phone.locator("form")).to_have_count(0)
    phone.go_back()
    screenshot(phone, "survey-one-answer")

    # The documented limit: another browser (or cleared cookies) answers again.
    other, second = phone_page(browser)
    answer(second, 2)
    other.close()
    context.clear_cookies()
    answer(phone, 4)
    context.close()
    assert Response.objects.filter(project=project).count() == 3


def test_an_admin_resets_a_response_and_the_person_retakes_it(
    tenancy, survey, browser, page, live_server
):
    from playwright.sync_api import expect

    project, questions = tenancy.project_a, survey
    link = personal_link(tenancy)
    url = f"{live_server.url}/s/{link.token}"
    context, phone = phone_page(browser)
    phone.goto(url)
    phone.locator(f"label[for={questions['rating'].field_name}-3]").click()
    phone.get_by_role("button", name="Submit").click()
    expect(phone.locator("h1")).to_have_text("Thank you")
    first = Response.objects.get(link=link)

    admin = browser_user(tenancy.brand_a, role=Role.PROJECT_ADMIN)
    login(page, live_server, admin)
    page.goto(f"{live_server.url}/projects/{project.pk}/responses/")
    page.locator(f"tr[data-response='{first.pk}']").get_by_role("link", name="Reset…").click()
    expect(page.locator("#reset-help")).to_contain_text("no longer a respondent")
    page.get_by_label("Reason (for the audit trail)").fill("Wrong team chosen")
    page.get_by_role("button", name="Reset response").click()
    expect(page.locator("#response-resets")).to_contain_text("Wrong team chosen")
    expect(page.locator(f"tr[data-response='{first.pk}']")).to_contain_text("Superseded")
    screenshot(page, "responses-reset")
    reset = ResponseReset.objects.get()
    assert (reset.actor, reset.link, reset.previous_status) == (admin, link, "complete")

    phone.goto(url)  # the same link opens the survey again
    phone.locator(f"label[for={questions['rating'].field_name}-9]").click()
    phone.get_by_role("button", name="Submit").click()
    expect(phone.locator("h1")).to_have_text("Thank you")
    assert phone.js_errors == []
    context.close()

    first.refresh_from_db()
    assert first.status == Response.Status.SUPERSEDED
    assert first.answers == {str(questions["rating"].pk): 3}
    assert Response.objects.get(link=link).answers == {str(questions["rating"].pk): 9}
