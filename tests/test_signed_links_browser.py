"""A signed anonymous link in Debian's Chromium: the parameters leave the address bar on
load (and the history), the survey is answered, the response carries them as trusted
embedded data, and opening the same link again shows the thank-you page. Then the admin
creates the secret on the Links page and sees it once."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

import pytest

from brands.roles import Role
from projects.models import Response
from surveys.services import question_create
from surveys.signed_links import signed_url, signing_secret_active, signing_secret_issue
from tests.browser import browser_user, login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PHONE = {"width": 390, "height": 844}


def test_signed_link_parameters_move_to_the_session_and_answer_once(
    page, live_server, tenancy, settings
):
    settings.PUBLIC_BASE_URL = live_server.url
    project = tenancy.project_a
    question_create(project=project, kind="rating", text="How was the venue?", required=True)
    _, secret = signing_secret_issue(project=project)
    url = signed_url(
        project=project,
        secret=secret,
        params={"venue": "Arena", "ticket": "T-9"},
        expires_at=timezone.now() + timedelta(hours=1),
    )
    page.set_viewport_size(PHONE)

    page.goto(url)

    clean = f"{live_server.url}/a/{project.public_token}"
    assert page.url == clean  # no parameter in the address bar
    assert page.evaluate("window.location.search") == ""
    page.get_by_text("7", exact=True).click()
    page.get_by_role("button", name="Submit").click()
    page.get_by_role("heading", name="Thank you").wait_for()
    screenshot(page, "signed-link-answered")
    response = Response.objects.get()
    assert response.embedded_data == {"venue": "Arena", "ticket": "T-9"}
    assert response.untrusted_keys == []

    page.goto(url)  # the same signed link again: it answered once
    assert page.url == clean
    assert "already" in page.content().lower()
    assert Response.objects.count() == 1

    tampered = url.replace("venue=Arena", "venue=Stadium")
    answer = page.goto(tampered)
    assert answer.status == 403
    assert page.get_by_role("heading", name="This link is not valid").is_visible()


def test_the_admin_creates_the_secret_and_sees_it_once(page, live_server, tenancy):
    user = browser_user(tenancy.brand_a, role=Role.PROJECT_ADMIN)
    login(page, live_server, user)
    page.goto(f"{live_server.url}/projects/{tenancy.project_a.pk}/links/")

    page.get_by_role("button", name="Create a signing secret").click()

    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("rsl_")
    assert signing_secret_active(project=tenancy.project_a).secret == secret
    page.goto(f"{live_server.url}/projects/{tenancy.project_a.pk}/links/")
    assert secret not in page.content()
    assert secret[-4:] in page.locator("#signing-secret-state").inner_text()
