"""The SMS distribution pages: the project's Text messages (SMS) tab, the schedule form, the
distribution page, the history download, the brand's distribution list and the outbox.

Sends run through the real engine (outbox provider, tasks inline on commit). The brand is
self-service in these tests so that every message is covered whether or not the credits
ledger tracks a balance; the credit figures themselves are tested through the read hooks.
"""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

import pytest

from brands.models import Brand
from distributions.models import Distribution, Message, OutboxMessage
from distributions.selectors import HISTORY_HEADER
from distributions.services import distribution_create
from projects.models import Project
from tests.factories.distributions import (
    DistributionFactory,
    MessageFactory,
    ProviderAccountFactory,
)
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory, ResponseFactory

pytestmark = pytest.mark.django_db
S = Distribution.Status
M = Message.Status
FUTURE = datetime(2030, 7, 1, 13, 30, tzinfo=UTC)  # 09:30 in New York (EDT)


def text(response) -> str:
    return html.unescape(response.content.decode())


def add(project, first, phone, *, team=None, site=None, **person):
    person = PersonFactory(
        brand=project.brand,
        first_name=first,
        phone=phone,
        metadata={"Team": team} if team else {},
        **person,
    )
    return ParticipantFactory(
        project=project, person=person, metadata={"Site": site} if site else {}
    )


@pytest.fixture
def crowd(tenancy):
    """Brand A in New York, self-service; its project has four participants (one without a
    phone number)."""
    brand = tenancy.brand_a
    brand.time_zone = "America/New_York"
    brand.integration_model = Brand.IntegrationModel.SELF_SERVICE
    brand.save()
    project = tenancy.project_a
    tenancy.participant_a.delete()
    return {
        "ada": add(project, "Ada", "+14155550101", team="Sales", site="Paris", last_name="L"),
        "alan": add(project, "Alan", "+447911123456", team="R&D"),
        "grace": add(project, "Grace", "+14155550103", team="Sales"),
        "nemo": add(project, "Nemo", ""),
    }


@pytest.fixture
def send(eager_tasks, django_capture_on_commit_callbacks):
    """Send a distribution now through the real engine (outbox provider, inline tasks)."""

    def run(project, **kwargs):
        kwargs.setdefault("message", "Hi ${first_name} ${link}")
        with django_capture_on_commit_callbacks(execute=True):
            distribution = distribution_create(project=project, **kwargs)
        distribution.refresh_from_db()
        return distribution

    return run


@pytest.fixture
def admin(tenancy, page_client_for):
    return page_client_for(tenancy.admin_a)


def form_data(**overrides) -> dict:
    data = {
        "kind": "invite",
        "name": "",
        "message": "Hi ${first_name}, tell us: ${link}",
        "sender": "",
        "audience": "all",
        "when": "now",
        "send_date": "",
        "send_time": "",
        "c_criterion": [""],
        "c_field": [""],
        "c_operator": ["is"],
        "c_value": [""],
    }
    data.update(overrides)
    return data


def row_html(response, distribution) -> str:
    """The table row of one distribution on a list page."""
    content = text(response)
    return content.split(f'data-distribution="{distribution.pk}"', 1)[1].split("</tr>", 1)[0]


def url(name, *args) -> str:
    return reverse(f"distributions:{name}", args=args)


# --- the Text messages (SMS) tab ------------------------------------------------------------
def test_project_page_has_the_sms_tab(tenancy, admin):
    response = admin.get(reverse("projects:detail", args=[tenancy.project_a.pk]))
    assert f'href="{url("project_sms", tenancy.project_a.pk)}"' in text(response)
    assert "Text messages (SMS)" in text(response)


def test_sms_tab_lists_the_projects_text_messages(tenancy, crowd, admin, send):
    project = tenancy.project_a
    sent = send(project, name="March pulse")
    scheduled = DistributionFactory(project=project, name="July check-in", send_at=FUTURE)
    DistributionFactory(project=project, name="By email", channel="email", send_at=FUTURE)
    DistributionFactory(project=ProjectFactory(brand=tenancy.brand_a), name="Other project")
    DistributionFactory(project=tenancy.project_b, name="Beta invite")

    response = admin.get(url("project_sms", project.pk))

    assert response.status_code == 200
    content = text(response)
    assert "March pulse" in content and "July check-in" in content
    assert "By email" not in content and "Other project" not in content
    assert "Beta invite" not in content
    sent_row = row_html(response, sent)
    assert sent.status == S.SENT and sent.status_reason == "Sent with issues: 1 skipped."
    assert 'title="Sent with issues: 1 skipped."' in sent_row  # tooltip
    assert 'class="status-note">Sent with issues: 1 skipped.' in sent_row  # inline note
    assert re.search(r'<td class="num">4</td>\s*<td class="num">3</td>', sent_row)
    assert f"?parent={sent.pk}" in sent_row and "Schedule a reminder" in sent_row
    scheduled_row = row_html(response, scheduled)
    assert "2030-07-01 09:30" in scheduled_row  # brand time zone, not UTC
    assert f'name="ids" value="{scheduled.pk}"' in scheduled_row
    assert url("edit", scheduled.pk) in scheduled_row
    assert "Schedule a text message" in content
    assert "Apply to selected" in content


def test_sms_tab_shows_every_distribution_status(tenancy, admin):
    project = tenancy.project_a
    for status in S.values:
        DistributionFactory(project=project, status=status, name=f"d-{status}", send_at=FUTURE)
    content = text(admin.get(url("project_sms", project.pk)))
    for label in ("Scheduled", "In progress", "Sent", "Failed", "Interrupted", "Cancelled"):
        assert f">{label}</span>" in content


def test_reminder_rows_name_their_invite(tenancy, admin):
    invite = DistributionFactory(project=tenancy.project_a, name="The invite", status=S.SENT)
    reminder = DistributionFactory(
        project=tenancy.project_a, kind="reminder", parent=invite, send_at=FUTURE
    )
    wide = DistributionFactory(project=tenancy.project_a, kind="reminder", send_at=FUTURE)
    response = admin.get(url("project_sms", tenancy.project_a.pk))
    assert "of <a" in row_html(response, reminder) and "The invite" in row_html(response, reminder)
    assert "everyone who has not responded" in row_html(response, wide)
    assert "Schedule a reminder" not in row_html(response, reminder)


def test_viewer_sees_the_tab_without_write_controls(tenancy, page_client_for):
    DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    DistributionFactory(project=tenancy.project_a, status=S.SENT)
    content = text(page_client_for(tenancy.viewer_a).get(url("project_sms", tenancy.project_a.pk)))
    assert "Schedule a text message" not in content
    assert "Schedule a reminder" not in content
    assert 'name="ids"' not in content and "Apply to selected" not in content
    assert "Edit distribution" not in content
    assert "Preview distribution" in content


# --- the schedule form ------------------------------------------------------------------
def test_schedule_form_lists_fields_conditions_and_audience(tenancy, crowd, admin):
    response = admin.get(url("create", tenancy.project_a.pk))
    assert response.status_code == 200
    content = text(response)
    for token in ("${first_name}", "${last_name}", "${link}", "${opt_out_link}"):
        assert f'data-insert="{token}"' in content
    assert 'data-insert="${Team}"' in content  # directory metadata of the participants
    assert 'data-insert="${Site}"' in content  # project metadata
    for label in ("Name or email", "First name", "Last name", "Metadata", "Role"):
        assert f">{label}</option>" in content
    assert "can each be used only once in a condition set" in content
    assert "4 participants match" in content and "3 with a phone number" in content
    assert "Credits available" in content and "Estimated cost" in content
    assert "America/New_York" in content
    assert "js/segments.js" in content and "js/schedule.js" in content
    assert 'id="segment-counter"' in content
    assert "Your project must be activated" not in content


def test_send_now_creates_sends_and_lands_on_the_distribution(
    tenancy, crowd, admin, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(url("create", tenancy.project_a.pk), form_data(name="Pulse"))
    distribution = Distribution.objects.get(name="Pulse")
    assert response.status_code == 302 and response.url == url("detail", distribution.pk)
    assert distribution.status == S.SENT
    assert distribution.created_by == tenancy.admin_a
    assert distribution.kind == "invite" and distribution.channel == "sms"
    assert distribution.messages.count() == 4
    assert OutboxMessage.objects.filter(brand=tenancy.brand_a).count() == 3


def test_schedule_later_reads_the_time_in_the_brands_zone(tenancy, crowd, admin):
    response = admin.post(
        url("create", tenancy.project_a.pk),
        form_data(
            name="Later",
            when="later",
            send_date="2030-07-01",
            send_time="09:30",
            audience="some",
            c_criterion=["metadata", "role"],
            c_field=["Team", ""],
            c_operator=["is", "is_not"],
            c_value=["Sales", "Manager"],
        ),
    )
    assert response.status_code == 302
    distribution = Distribution.objects.get(name="Later")
    assert distribution.send_at == FUTURE  # 09:30 EDT is 13:30 UTC
    assert distribution.status == S.SCHEDULED
    assert distribution.conditions == [
        {"criterion": "metadata", "operator": "is", "value": "Sales", "field": "Team"},
        {"criterion": "role", "operator": "is_not", "value": "Manager"},
    ]


def test_a_project_wide_reminder_can_be_scheduled(tenancy, crowd, admin):
    response = admin.post(
        url("create", tenancy.project_a.pk),
        form_data(
            kind="reminder", name="Nudge", when="later", send_date="2030-07-01", send_time="09:30"
        ),
    )
    assert response.status_code == 302
    reminder = Distribution.objects.get(name="Nudge")
    assert reminder.kind == "reminder" and reminder.parent is None


@pytest.mark.parametrize(
    "overrides,errors,field",
    [
        ({"message": ""}, ["This field is required."], "message"),
        ({"message": "x" * 1601}, ["at most 1600 characters"], "message"),
        (
            {"when": "later"},
            ["Choose the date to send on.", "Choose the time to send at."],
            "send_time",
        ),
        (
            {"when": "later", "send_date": "2020-01-01", "send_time": "10:00"},
            ["That time has already passed"],
            "send_time",
        ),
        (
            {"when": "later", "send_date": "2030-03-10", "send_time": "02:30"},
            ["does not exist in America/New_York"],
            "send_time",
        ),
        ({"kind": "thank_you"}, ["Select a valid choice."], None),
        ({"audience": "some"}, ["Add at least one condition"], None),
        (
            {"sender": "RelayHR"},
            ["Messages from an alphanumeric sender cannot receive STOP replies"],
            "message",
        ),
    ],
    ids=[
        "empty-message",
        "too-long",
        "later-without-date-and-time",
        "past-time",
        "time-the-clocks-skip",
        "unknown-kind",
        "conditions-without-rows",
        "alphanumeric-sender-without-opt-out-link",
    ],
)
def test_invalid_schedule_shows_the_error_and_creates_nothing(
    tenancy, crowd, admin, overrides, errors, field
):
    response = admin.post(url("create", tenancy.project_a.pk), form_data(**overrides))
    assert response.status_code == 400
    content = text(response)
    for error in errors:
        assert error in content
    if field:
        assert re.search(rf'<div class="field has-error">\s*<label for="id_{field}"', content)
    assert not Distribution.objects.exists()


@pytest.mark.parametrize(
    "rows,error",
    [
        (
            {"c_criterion": ["metadata"], "c_field": [""], "c_value": ["Sales"]},
            "A metadata condition needs a field.",
        ),
        (
            {"c_criterion": ["first_name"], "c_field": [""], "c_value": [""]},
            "Needs a value (or use the 'is empty' operator).",
        ),
        (
            {"c_criterion": [""], "c_field": ["Team"], "c_value": ["Sales"]},
            "Choose what this condition is about.",
        ),
        (
            {"c_criterion": ["hobby"], "c_field": [""], "c_value": ["golf"]},
            "Criterion must be one of",
        ),
    ],
    ids=["metadata-without-field", "missing-value", "no-criterion", "unknown-criterion"],
)
def test_condition_errors_are_shown_on_their_row(tenancy, crowd, admin, rows, error):
    data = form_data(audience="some", c_operator=["is"] * len(rows["c_criterion"]), **rows)
    response = admin.post(url("create", tenancy.project_a.pk), data)
    assert response.status_code == 400
    content = text(response)
    row = content.split('class="condition-row has-error"', 1)[1]
    row_errors = row.split('class="row-errors"', 1)[1].split("</div>", 1)[0]
    assert error in row_errors
    assert "Some conditions need your attention" in content
    assert not Distribution.objects.exists()


def test_the_once_per_set_rule_is_enforced_and_explained(tenancy, crowd, admin):
    data = form_data(
        audience="some",
        c_criterion=["first_name", "metadata", "first_name"],
        c_field=["", "Team", ""],
        c_operator=["is", "is", "is"],
        c_value=["Ada", "Sales", "Grace"],
    )
    response = admin.post(url("create", tenancy.project_a.pk), data)
    assert response.status_code == 400
    content = text(response)
    assert content.count('class="condition-row has-error"') == 1
    assert "First name is already used by condition 1" in content
    assert (
        "Name or email, First name and Last name can each be used only once in a condition set"
        in content
    )
    # the rows come back as typed
    assert 'value="Grace"' in content and 'value="Team"' in content
    assert not Distribution.objects.exists()


def test_every_error_shows_at_once(tenancy, crowd, admin):
    data = form_data(
        message="",
        when="later",
        send_date="2020-01-01",
        send_time="10:00",
        audience="some",
        c_criterion=["metadata"],
        c_field=[""],
        c_value=["Sales"],
    )
    response = admin.post(url("create", tenancy.project_a.pk), data)
    assert response.status_code == 400
    content = text(response)
    assert "Nothing was scheduled." in content and "Correct what is highlighted below." in content
    assert "This field is required." in content
    assert "That time has already passed" in content
    assert "A metadata condition needs a field." in content
    assert "Fix the conditions to count" in content  # the summary does not count wrong rows


def test_inactive_project_is_warned_before_submitting_and_refused(tenancy, crowd, admin):
    project = tenancy.project_a
    Project.objects.filter(pk=project.pk).update(stage=Project.Stage.NEW)
    warning = "Your project must be activated to send text messages"

    form_page = text(admin.get(url("create", project.pk)))
    assert warning in form_page
    assert re.search(
        r'<button class="primary" type="submit" id="submit-button" disabled', form_page
    )
    assert warning in text(admin.get(url("project_sms", project.pk)))

    response = admin.post(url("create", project.pk), form_data())
    assert response.status_code == 400
    assert "Your project must be activated to send text messages: this project is New." in text(
        response
    )
    assert not Distribution.objects.exists()


def test_preview_counts_the_matching_participants(tenancy, crowd, admin):
    preview = url("preview_count", tenancy.project_a.pk)
    everyone = text(admin.post(preview, form_data()))
    assert "4 participants match" in everyone and "3 with a phone number" in everyone
    assert 'hx-swap-oob="true"' in everyone

    sales = text(
        admin.post(
            preview,
            form_data(
                audience="some", c_criterion=["metadata"], c_field=["Team"], c_value=["sales"]
            ),
        )
    )
    assert "2 participants match" in sales

    either = form_data(
        audience="some",
        c_criterion=["metadata", "metadata"],
        c_field=["Team", "Team"],
        c_operator=["is", "is"],
        c_value=["Sales", "R&D"],
    )
    assert "3 participants match" in text(admin.post(preview, either))  # same criterion: OR

    broken = form_data(audience="some", c_criterion=["metadata"], c_value=["x"])
    assert "Fix the conditions to count" in text(admin.post(preview, broken))


def test_preview_of_a_reminder_leaves_out_respondents(tenancy, crowd, admin, send):
    invite = send(tenancy.project_a)
    ResponseFactory(project=tenancy.project_a, participant=crowd["ada"])
    content = text(
        admin.post(url("preview_count", tenancy.project_a.pk), form_data(parent=str(invite.pk)))
    )
    assert "2 participants match" in content  # Alan and Grace: reached, not responded
    assert "who have not responded" in content


def test_credits_available_and_estimate_are_shown_and_overspend_warned(
    tenancy, crowd, admin, monkeypatch
):
    monkeypatch.setattr("distributions.views.credits_available", lambda **kw: Decimal("10"))
    estimate = {
        "recipients": 3,
        "segments": 6,
        "credits": Decimal("12.5"),
        "available": Decimal("10"),
        "covered": False,
        "by_country": [],
        "self_service": False,
    }
    monkeypatch.setattr("distributions.views.credits_estimate", lambda **kw: estimate)
    content = text(admin.get(url("create", tenancy.project_a.pk)))
    assert re.search(r'id="credits-available">10<', content)
    assert re.search(r'id="credits-estimate">12.50 <span class="unit">credits', content)
    assert "The estimated cost exceeds your available credits." in content
    assert "3 messages · 6 segments" in content

    estimate.update(credits=Decimal("4"), covered=True)
    content = text(admin.post(url("preview_count", tenancy.project_a.pk), form_data()))
    assert "exceeds your available credits" not in content
    assert re.search(r'id="credits-estimate">4 <span', content)


def test_untracked_credits_say_so(tenancy, crowd, admin, monkeypatch):
    monkeypatch.setattr("distributions.views.credits_available", lambda **kw: None)
    monkeypatch.setattr("distributions.views.credits_estimate", lambda **kw: None)
    content = text(admin.get(url("create", tenancy.project_a.pk)))
    assert content.count("Not tracked") == 2
    assert "exceeds" not in content


# --- edit --------------------------------------------------------------------------------
def test_edit_a_scheduled_distribution(tenancy, crowd, admin):
    distribution = distribution_create(
        project=tenancy.project_a,
        message="Old text ${link}",
        send_at=FUTURE,
        conditions=[{"criterion": "first_name", "operator": "is", "value": "Ada"}],
    )
    form_page = text(admin.get(url("edit", distribution.pk)))
    assert "Old text ${link}" in form_page
    assert 'value="2030-07-01"' in form_page and 'value="09:30"' in form_page
    assert 'value="Ada"' in form_page
    assert 'name="audience" value="some" id="id_audience_1" checked' in form_page

    response = admin.post(
        url("edit", distribution.pk),
        form_data(
            message="New text ${link}",
            when="later",
            send_date="2030-07-02",
            send_time="10:15",
            audience="some",
            c_criterion=["metadata"],
            c_field=["Team"],
            c_value=["R&D"],
        ),
    )
    assert response.status_code == 302
    distribution.refresh_from_db()
    assert distribution.message == "New text ${link}"
    assert distribution.send_at == datetime(2030, 7, 2, 14, 15, tzinfo=UTC)
    assert distribution.conditions == [
        {"criterion": "metadata", "operator": "is", "value": "R&D", "field": "Team"}
    ]


def test_edit_shows_errors_and_keeps_the_distribution(tenancy, crowd, admin):
    distribution = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    response = admin.post(url("edit", distribution.pk), form_data(message=""))
    assert response.status_code == 400 and "This field is required." in text(response)
    distribution.refresh_from_db()
    assert distribution.message.startswith("Hi ${first_name}")


def test_a_started_distribution_cannot_be_edited(tenancy, crowd, admin, send):
    sent = send(tenancy.project_a)
    response = admin.get(url("edit", sent.pk))
    assert response.status_code == 302 and response.url == url("preview", sent.pk)

    response = admin.post(url("edit", sent.pk), form_data(message="Changed ${link}"))
    assert response.status_code == 400
    assert "Only scheduled distributions can be edited; this one is Sent." in text(response)
    sent.refresh_from_db()
    assert sent.message == "Hi ${first_name} ${link}"


# --- reminders of an invite --------------------------------------------------------------
def test_reminder_of_an_invite_has_no_recipient_choice(tenancy, crowd, admin, send):
    invite = send(tenancy.project_a, name="Invite")
    form_page = text(admin.get(url("create", tenancy.project_a.pk) + f"?parent={invite.pk}"))
    assert "Schedule a reminder" in form_page
    assert "Recipients of" in form_page and "who have not responded yet" in form_page
    assert 'name="audience"' not in form_page and 'name="c_criterion"' not in form_page
    assert f'name="parent" value="{invite.pk}"' in form_page

    response = admin.post(
        url("create", tenancy.project_a.pk),
        form_data(
            parent=str(invite.pk),
            kind="invite",  # ignored: a reminder of an invite is a reminder
            name="Reminder",
            when="later",
            send_date="2030-07-01",
            send_time="09:30",
            audience="some",
            c_criterion=["first_name"],
            c_value=["Ada"],
        ),
    )
    assert response.status_code == 302
    reminder = Distribution.objects.get(name="Reminder")
    assert reminder.kind == "reminder" and reminder.parent == invite
    assert reminder.conditions == []


def test_a_reminder_follows_an_sms_invite_of_the_same_project(tenancy, crowd, admin):
    other_project = DistributionFactory(project=ProjectFactory(brand=tenancy.brand_a))
    a_reminder = DistributionFactory(project=tenancy.project_a, kind="reminder")
    other_brand = DistributionFactory(project=tenancy.project_b)
    create = url("create", tenancy.project_a.pk)
    for parent in (other_project, a_reminder, other_brand):
        assert admin.get(f"{create}?parent={parent.pk}").status_code == 404
        response = admin.post(create, form_data(parent=str(parent.pk)))
        assert response.status_code == 404
    assert admin.get(f"{create}?parent=abc").status_code == 404


# --- bulk edit ----------------------------------------------------------------------------
def test_bulk_edit_changes_every_selected_distribution(tenancy, crowd, admin):
    first = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    second = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    untouched = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    response = admin.post(
        url("bulk_edit", tenancy.project_a.pk),
        {
            "ids": [first.pk, second.pk],
            "send_date": "2030-08-01",
            "send_time": "08:00",
            "message": "New ${link}",
        },
    )
    assert response.status_code == 302
    for distribution in (first, second):
        distribution.refresh_from_db()
        assert distribution.send_at == datetime(2030, 8, 1, 12, 0, tzinfo=UTC)
        assert distribution.message == "New ${link}"
    untouched.refresh_from_db()
    assert untouched.send_at == FUTURE


def test_bulk_edit_is_all_or_nothing(tenancy, crowd, admin, send):
    scheduled = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    sent = send(tenancy.project_a)
    response = admin.post(
        url("bulk_edit", tenancy.project_a.pk),
        {"ids": [scheduled.pk, sent.pk], "send_date": "2030-08-01", "send_time": "08:00"},
    )
    assert response.status_code == 400
    content = text(response)
    assert "The selected distributions were not changed." in content
    assert f"Distribution {sent.pk}: Only scheduled distributions can be edited" in content
    assert f'name="ids" value="{scheduled.pk}" aria-label' in content
    assert re.search(rf'name="ids" value="{scheduled.pk}"[^>]* checked', content)
    scheduled.refresh_from_db()
    assert scheduled.send_at == FUTURE


@pytest.mark.parametrize(
    "data,error",
    [
        ({"send_date": "2030-08-01", "send_time": "08:00"}, "Select at least one"),
        ({"ids": "SELF"}, "Choose a new send time or type a new message."),
        ({"ids": "SELF", "send_date": "2030-08-01"}, "Give both a date and a time"),
        ({"ids": "SELF", "send_date": "2020-08-01", "send_time": "08:00"}, "already passed"),
    ],
    ids=["nothing-selected", "no-change", "date-without-time", "past"],
)
def test_bulk_edit_errors(tenancy, crowd, admin, data, error):
    scheduled = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    if data.get("ids") == "SELF":
        data = {**data, "ids": [scheduled.pk]}
    response = admin.post(url("bulk_edit", tenancy.project_a.pk), data)
    assert response.status_code == 400
    assert error in text(response)
    scheduled.refresh_from_db()
    assert scheduled.send_at == FUTURE


# --- cancel and stop ----------------------------------------------------------------------
def test_cancel_a_scheduled_distribution(tenancy, admin):
    distribution = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    page = text(admin.get(url("detail", distribution.pk)))
    assert "Cancel distribution" in page and "Edit distribution" in page
    response = admin.post(url("cancel", distribution.pk), follow=True)
    distribution.refresh_from_db()
    assert distribution.status == S.CANCELLED
    assert "Distribution cancelled: nothing will be sent." in text(response)


def test_stop_a_distribution_in_progress(tenancy, admin):
    distribution = DistributionFactory(
        project=tenancy.project_a, status=S.IN_PROGRESS, started_at=timezone.now()
    )
    MessageFactory(distribution=distribution, status=M.SENT)
    MessageFactory.create_batch(2, distribution=distribution, status=M.PENDING)
    assert "Stop sending" in text(admin.get(url("detail", distribution.pk)))
    response = admin.post(url("cancel", distribution.pk), follow=True)
    distribution.refresh_from_db()
    assert distribution.status == S.INTERRUPTED
    assert "Sending stopped. Cancelled while sending; 2 messages were not sent." in text(response)
    assert distribution.messages.filter(status=M.SKIPPED).count() == 2


def test_a_finished_distribution_cannot_be_cancelled(tenancy, admin):
    distribution = DistributionFactory(project=tenancy.project_a, status=S.SENT)
    page = text(admin.get(url("detail", distribution.pk)))
    assert "Cancel distribution" not in page and "Stop sending" not in page
    response = admin.post(url("cancel", distribution.pk), follow=True)
    assert "A Sent distribution cannot be cancelled." in text(response)
    distribution.refresh_from_db()
    assert distribution.status == S.SENT


# --- the distribution page ----------------------------------------------------------------
def metric(content: str, name: str) -> str:
    match = re.search(rf'data-metric="{name}">(.*?)</div>', content, re.S)
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_distribution_page_shows_details_metrics_and_related(tenancy, crowd, admin, send):
    invite = send(tenancy.project_a, name="Invite", actor=tenancy.admin_a)
    reminder = DistributionFactory(
        project=tenancy.project_a,
        kind="reminder",
        parent=invite,
        name="Reminder",
        send_at=FUTURE,
    )
    content = text(admin.get(url("detail", invite.pk)))
    assert "Distribution details" in content and "SMS invite" in content
    assert "All participants" in content
    local = timezone.localtime(invite.started_at, tenancy.brand_a.zone)
    assert f"<dt>Date sent</dt><dd>{local:%Y-%m-%d %H:%M} EST</dd>" in content
    assert f"<dt>Created by</dt><dd>{tenancy.admin_a.get_username()} · " in content
    assert "The brand's default sender" in content
    assert "Sent with issues: 1 skipped." in content
    assert metric(content, "participants") == "4"
    assert metric(content, "sent") == "3"
    assert metric(content, "delivered") == "3"
    assert metric(content, "failed") == "0"
    assert metric(content, "skipped") == "1"
    assert metric(content, "duplicated") == "0"
    assert metric(content, "skipped_optout") == "0"
    assert "Related distributions" in content
    assert f'href="{url("detail", reminder.pk)}"' in content
    assert "Preview distribution" in content and "Edit distribution" not in content
    assert "Download history" in content

    content = text(admin.get(url("detail", reminder.pk)))
    assert f'href="{url("detail", invite.pk)}"' in content
    assert "Recipients of “Invite” who have not responded" in content
    assert "Scheduled for" in content and "2030-07-01 09:30" in content
    assert "Edit distribution" in content and "Download history" not in content


def test_credits_consumed_shown_when_tracked(tenancy, crowd, admin, send, monkeypatch):
    distribution = send(tenancy.project_a)
    monkeypatch.setattr("distributions.selectors.credits_consumed", lambda **kw: Decimal("7.5"))
    assert metric(text(admin.get(url("detail", distribution.pk))), "credits") == "7.50"
    monkeypatch.setattr("distributions.selectors.credits_consumed", lambda **kw: None)
    content = text(admin.get(url("detail", distribution.pk)))
    assert metric(content, "credits") == "—" and "(not tracked)" in content


def test_live_part_polls_while_in_progress_and_stops_when_finished(tenancy, admin):
    distribution = DistributionFactory(
        project=tenancy.project_a, status=S.IN_PROGRESS, started_at=timezone.now()
    )
    MessageFactory(distribution=distribution, status=M.DELIVERED)
    pending = MessageFactory(distribution=distribution, status=M.PENDING)
    live = url("live", distribution.pk)

    page = text(admin.get(url("detail", distribution.pk)))
    assert f'hx-get="{live}" hx-trigger="every 2s"' in page
    partial = admin.get(live, HTTP_HX_REQUEST="true")
    content = text(partial)
    assert 'hx-trigger="every 2s"' in content and '<progress id="send-progress"' in content
    assert "50% done · 1 message left" in content
    assert "HX-Refresh" not in partial.headers
    assert "<html" not in content  # a fragment

    Message.objects.filter(pk=pending.pk).update(status=M.DELIVERED)
    Distribution.objects.filter(pk=distribution.pk).update(status=S.SENT)
    finished = admin.get(live, HTTP_HX_REQUEST="true")
    assert "hx-trigger" not in text(finished) and "<progress" not in text(finished)
    assert finished.headers["HX-Refresh"] == "true"
    assert "hx-trigger" not in text(admin.get(url("detail", distribution.pk)))


def test_a_due_scheduled_distribution_is_watched_a_far_one_is_not(tenancy, admin):
    due = DistributionFactory(project=tenancy.project_a, send_at=timezone.now())
    later = DistributionFactory(
        project=tenancy.project_a, send_at=timezone.now() + timedelta(days=1)
    )
    assert "Waiting for a worker to start sending" in text(admin.get(url("detail", due.pk)))
    far = text(admin.get(url("detail", later.pk)))
    assert 'hx-trigger="every' not in far and "Waiting for a worker" not in far


def wake_in(content: str) -> int | None:
    """The seconds after which the page asks whether to start polling (htmx "load delay")."""
    found = re.search(r'hx-trigger="load delay:(\d+)s"[^>]*data-wake-in="(\d+)"', content)
    return int(found[1]) if found else None


def test_a_page_opened_early_starts_polling_when_the_send_time_approaches(tenancy, admin):
    """The page schedules, from the send time it was rendered with, the moment polling must
    begin (a minute before sending); asked then, the live part answers with polling on."""
    soon = DistributionFactory(
        project=tenancy.project_a, send_at=timezone.now() + timedelta(seconds=90)
    )
    page = text(admin.get(url("detail", soon.pk)))
    assert 'hx-trigger="every' not in page
    assert 25 <= wake_in(page) <= 30  # 90 s away, polling from 60 s before
    assert f'hx-get="{url("live", soon.pk)}"' in page

    # A far one asks again within the hour (a browser timer cannot hold weeks, and the send
    # time may be edited meanwhile); asked before it is due, the live part re-arms.
    far = DistributionFactory(
        project=tenancy.project_a, send_at=timezone.now() + timedelta(days=40)
    )
    assert wake_in(text(admin.get(url("detail", far.pk)))) == 3600
    assert wake_in(text(admin.get(url("live", far.pk), HTTP_HX_REQUEST="true"))) == 3600

    # When it is asked once due, it polls.
    Distribution.objects.filter(pk=soon.pk).update(send_at=timezone.now() + timedelta(seconds=30))
    live = text(admin.get(url("live", soon.pk), HTTP_HX_REQUEST="true"))
    assert 'hx-trigger="every 2s"' in live and wake_in(live) is None
    assert "Waiting for a worker to start sending" in live


def test_nothing_to_wait_for_schedules_nothing(tenancy, admin):
    later = timezone.now() + timedelta(hours=2)
    cancelled = DistributionFactory(project=tenancy.project_a, send_at=later, status=S.CANCELLED)
    assert "hx-trigger" not in text(admin.get(url("detail", cancelled.pk)))


def test_history_table_filters_by_status_and_paginates(tenancy, admin):
    distribution = DistributionFactory(project=tenancy.project_a, status=S.SENT)
    person = PersonFactory(brand=tenancy.brand_a, first_name="Ada", last_name="Lovelace")
    MessageFactory(distribution=distribution, person=person, status=M.DELIVERED)
    MessageFactory.create_batch(51, distribution=distribution, status=M.DELIVERED)
    MessageFactory.create_batch(
        3,
        distribution=distribution,
        status=M.FAILED,
        status_reason="Provider reported undelivered (30003)",
    )
    everything = text(admin.get(url("detail", distribution.pk)))
    assert "Page 1 of 2" in everything and "55 in all" in everything
    assert "Ada Lovelace" in everything
    assert "All (55)" in everything and "Delivered (52)" in everything
    assert "Failed (3)" in everything

    failed = text(admin.get(url("detail", distribution.pk) + "?status=failed"))
    table = failed.split('class="history-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 4  # header and three rows
    assert table.count("Provider reported undelivered (30003)") == 3
    assert "mstatus-delivered" not in table
    ignored = text(admin.get(url("detail", distribution.pk) + "?status=bogus"))
    assert "Page 1 of 2" in ignored


def test_history_rows_show_status_timestamp_and_reason(tenancy, crowd, admin, send):
    distribution = send(tenancy.project_a)
    content = text(admin.get(url("detail", distribution.pk)))
    table = content.split('class="history-table"', 1)[1].split("</table>", 1)[0]
    assert "No phone number" in table  # Nemo's reason
    assert table.count("mstatus-delivered") == 3 and table.count("mstatus-skipped") == 1
    local = timezone.localtime(
        distribution.messages.first().status_changed_at,
        tenancy.brand_a.zone,
    )
    assert local.strftime("%Y-%m-%d %H:%M") in table


# --- preview ------------------------------------------------------------------------------
def test_preview_of_a_sent_distribution_shows_what_was_sent(tenancy, crowd, admin, send):
    distribution = send(tenancy.project_a, message="Hello ${first_name} ${link}")
    response = admin.get(url("preview", distribution.pk))
    content = text(response)
    assert response.status_code == 200
    assert "its settings are read-only" in content
    first = distribution.messages.exclude(body="").order_by("pk").first()
    assert first.body in content and "received" in content
    assert "Hello ${first_name} ${link}" in content  # as written
    assert "GSM-7 · 1 segment" in content
    assert "Edit distribution" not in content


def test_preview_of_a_scheduled_distribution_renders_a_sample(tenancy, crowd, admin):
    distribution = DistributionFactory(
        project=tenancy.project_a,
        send_at=FUTURE,
        message="Hi ${first_name} from ${Site}: ${link}",
        conditions=[{"criterion": "first_name", "operator": "is", "value": "Ada"}],
    )
    content = text(admin.get(url("preview", distribution.pk)))
    assert "Hi Ada from Paris: http" in content
    assert "would receive it" in content
    assert "<li>First name is “Ada”</li>" in content
    assert "Edit distribution" in content


# --- download history ---------------------------------------------------------------------
DIALECTS = {
    "comma": ",",
    "semicolon": ";",
    "tab": "\t",
    "pipe": "|",
}
ENCLOSURES = {"double": '"', "single": "'", "none": ""}


@pytest.mark.parametrize("enclosure", list(ENCLOSURES))
@pytest.mark.parametrize("delimiter", list(DIALECTS))
def test_download_history_with_each_delimiter_and_enclosure(
    tenancy, crowd, admin, send, delimiter, enclosure
):
    formula = add(tenancy.project_a, "=cmd", "+14155550199", last_name="@SUM(A1)")
    distribution = send(tenancy.project_a)
    response = admin.get(
        url("history_csv", distribution.pk), {"delimiter": delimiter, "enclosure": enclosure}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="distribution-{distribution.pk}-history.csv"'
    )
    body = b"".join(response.streaming_content).decode("utf-8").removeprefix("\ufeff")
    quote = ENCLOSURES[enclosure]
    options = (
        {"quotechar": quote, "quoting": csv.QUOTE_ALL}
        if quote
        else {"quoting": csv.QUOTE_NONE, "escapechar": "\\"}
    )
    rows = list(csv.reader(io.StringIO(body), delimiter=DIALECTS[delimiter], **options))
    assert rows[0] == HISTORY_HEADER
    if quote:
        assert body.splitlines()[0].startswith(f"{quote}PersonID{quote}{DIALECTS[delimiter]}")
    else:
        assert body.splitlines()[0] == DIALECTS[delimiter].join(HISTORY_HEADER)
    assert len(rows) == 6  # header and five recipients
    by_person = {row[0]: row for row in rows[1:]}
    row = by_person[formula.person.person_id]
    assert row[1] == "'=cmd" and row[2] == "'@SUM(A1)"  # neutralised formulas
    assert row[3] == "+14155550199"  # a phone number stays a number
    assert row[5] == "No" and row[6] == "Delivered"
    assert datetime.fromisoformat(row[7]).utcoffset() == timedelta(hours=-5)  # New York, EST


def test_download_history_defaults_to_comma_and_double_quotes(tenancy, crowd, admin, send):
    distribution = send(tenancy.project_a)
    response = admin.get(url("history_csv", distribution.pk))
    first_line = b"".join(response.streaming_content).decode().splitlines()[0]
    assert first_line == "\ufeff" + ",".join(f'"{name}"' for name in HISTORY_HEADER)


@pytest.mark.parametrize("params", [{"delimiter": "colon"}, {"enclosure": "backtick"}])
def test_download_history_refuses_unknown_options(tenancy, crowd, admin, send, params):
    distribution = send(tenancy.project_a)
    response = admin.get(url("history_csv", distribution.pk), params)
    assert response.status_code == 400
    content = text(response)
    assert "Select a valid choice." in content and '<details class="download" open>' in content


def test_download_history_while_in_progress(tenancy, admin):
    distribution = DistributionFactory(
        project=tenancy.project_a, status=S.IN_PROGRESS, started_at=timezone.now()
    )
    MessageFactory(distribution=distribution, status=M.SENT)
    assert "Download history" in text(admin.get(url("detail", distribution.pk)))
    response = admin.get(url("history_csv", distribution.pk), {"delimiter": "semicolon"})
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 2 and '"Sent"' in lines[1]


# --- the brand's distributions ------------------------------------------------------------
def test_brand_distribution_list_filters_by_status_and_channel(tenancy, admin):
    other_project = ProjectFactory(brand=tenancy.brand_a, name="Onboarding")
    sms = DistributionFactory(project=tenancy.project_a, name="SMS one", send_at=FUTURE)
    email = DistributionFactory(
        project=other_project, name="Email one", channel="email", status=S.SENT
    )
    DistributionFactory(project=tenancy.project_b, name="Beta one")
    everything = text(admin.get(url("list")))
    assert "SMS one" in everything and "Email one" in everything
    assert "Onboarding" in everything and "Beta one" not in everything
    assert f'href="{url("detail", sms.pk)}"' in everything

    scheduled = text(admin.get(url("list"), {"status": "scheduled"}))
    assert "SMS one" in scheduled and "Email one" not in scheduled
    by_email = text(admin.get(url("list"), {"channel": "email"}))
    assert "Email one" in by_email and "SMS one" not in by_email
    assert f'href="{url("detail", email.pk)}"' in by_email
    nothing = text(admin.get(url("list"), {"status": "failed"}))
    assert "No distribution matches these filters." in nothing


def test_nav_has_distributions_and_outbox_for_every_role(tenancy, page_client_for):
    for user in (tenancy.admin_a, tenancy.project_admin_a, tenancy.viewer_a):
        content = text(page_client_for(user).get(reverse("projects:list")))
        assert f'href="{url("list")}"' in content and f'href="{url("outbox")}"' in content


# --- the outbox ---------------------------------------------------------------------------
def test_outbox_shows_the_brands_messages_as_phone_threads(tenancy, crowd, page_client_for):
    now = timezone.now()
    rows = [
        ("+14155550101", "First to Ada", now - timedelta(minutes=30), "delivered"),
        ("+447911123456", "Only to Alan", now - timedelta(minutes=20), "sent"),
        ("+14155550101", "Second to Ada", now - timedelta(minutes=10), "delivered"),
    ]
    for index, (to, body, at, status) in enumerate(rows):
        message = OutboxMessage.objects.create(
            brand=tenancy.brand_a,
            sid=f"OB{index}",
            to=to,
            body=body,
            sender="+15550001",
            status=status,
        )
        OutboxMessage.objects.filter(pk=message.pk).update(created_at=at)
    OutboxMessage.objects.create(brand=tenancy.brand_b, sid="OBb", to="+14155550101", body="Beta")

    response = page_client_for(tenancy.viewer_a).get(url("outbox"))
    assert response.status_code == 200
    content = text(response)
    assert "This brand uses the outbox: nothing leaves Relay." in content
    assert "Beta" not in content.split("<main", 1)[1]
    # newest conversation first; inside a conversation, oldest first (as a phone shows it)
    assert content.index("Second to Ada") < content.index("Only to Alan")
    assert content.index("First to Ada") < content.index("Second to Ada")
    assert "Ada L" in content  # the number's owner in the directory
    assert "2 messages" in content and "1 message<" in content
    assert "+15550001" in content and "Delivered" in content

    found = text(page_client_for(tenancy.viewer_a).get(url("outbox"), {"number": "4479"}))
    assert "Only to Alan" in found and "to Ada" not in found


def test_outbox_paginates_conversations(tenancy, admin):
    for index in range(12):
        OutboxMessage.objects.create(
            brand=tenancy.brand_a, sid=f"OB{index}", to=f"+1415555{index:04d}", body="Hi"
        )
    content = text(admin.get(url("outbox")))
    assert "Page 1 of 2" in content and content.count('class="phone"') == 10


def test_outbox_page_says_when_the_brand_sends_for_real(tenancy, admin):
    ProviderAccountFactory(brand=tenancy.brand_a, provider="twilio")
    content = text(admin.get(url("outbox")))
    assert "This brand sends through Twilio" in content
    assert "nothing leaves Relay" not in content


# --- tenancy and roles --------------------------------------------------------------------
def brand_b_urls(t, distribution_b):
    """Every distribution page of brand B: (url, method)."""
    project, pk = t.project_b.pk, distribution_b.pk
    return [
        (url("project_sms", project), "get"),
        (url("create", project), "get"),
        (url("create", project), "post"),
        (url("preview_count", project), "post"),
        (url("bulk_edit", project), "post"),
        (url("detail", pk), "get"),
        (url("live", pk), "get"),
        (url("edit", pk), "get"),
        (url("edit", pk), "post"),
        (url("preview", pk), "get"),
        (url("cancel", pk), "post"),
        (url("history_csv", pk), "get"),
    ]


def test_other_brands_projects_and_distributions_answer_404(tenancy, admin):
    distribution_b = DistributionFactory(project=tenancy.project_b, send_at=FUTURE)
    for address, method in brand_b_urls(tenancy, distribution_b):
        response = getattr(admin, method)(address, form_data(ids=[distribution_b.pk]))
        assert response.status_code == 404, (address, method, response.status_code)
    distribution_b.refresh_from_db()
    assert distribution_b.status == S.SCHEDULED and distribution_b.send_at == FUTURE
    # brand B's ids through brand A's own project
    response = admin.post(
        url("bulk_edit", tenancy.project_a.pk),
        {"ids": [distribution_b.pk], "send_date": "2030-08-01", "send_time": "08:00"},
    )
    assert response.status_code == 404


def test_brand_wide_pages_never_show_another_brands_rows(tenancy, admin):
    DistributionFactory(project=tenancy.project_b, name="Beta secret")
    OutboxMessage.objects.create(brand=tenancy.brand_b, sid="OBx", to="+1", body="Beta secret")
    for address in (url("list"), url("outbox")):
        assert "Beta secret" not in text(admin.get(address))


def test_viewers_are_refused_every_write(tenancy, crowd, page_client_for):
    viewer = page_client_for(tenancy.viewer_a)
    scheduled = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    project = tenancy.project_a.pk
    writes = [
        url("create", project),
        url("preview_count", project),
        url("bulk_edit", project),
        url("edit", scheduled.pk),
        url("cancel", scheduled.pk),
    ]
    for address in writes:
        response = viewer.post(
            address,
            form_data(ids=[scheduled.pk], send_date="2030-08-01", send_time="08:00"),
        )
        assert response.status_code == 403, address
    for address in (url("create", project), url("edit", scheduled.pk)):
        assert viewer.get(address).status_code == 403
    scheduled.refresh_from_db()
    assert scheduled.status == S.SCHEDULED and scheduled.send_at == FUTURE
    assert Distribution.objects.count() == 1


def test_viewers_read_every_page_without_write_buttons(tenancy, crowd, page_client_for, send):
    viewer = page_client_for(tenancy.viewer_a)
    sent = send(tenancy.project_a)
    scheduled = DistributionFactory(project=tenancy.project_a, send_at=FUTURE)
    for address in (
        url("project_sms", tenancy.project_a.pk),
        url("detail", sent.pk),
        url("detail", scheduled.pk),
        url("live", sent.pk),
        url("preview", sent.pk),
        url("list"),
        url("outbox"),
        url("history_csv", sent.pk),
    ):
        assert viewer.get(address).status_code == 200, address
    for distribution in (sent, scheduled):
        content = text(viewer.get(url("detail", distribution.pk)))
        assert "Cancel distribution" not in content and "Edit distribution" not in content
        assert "Schedule a reminder" not in content
        assert url("cancel", distribution.pk) not in content


def test_project_admins_can_schedule(tenancy, crowd, page_client_for):
    client = page_client_for(tenancy.project_admin_a)
    response = client.post(
        url("create", tenancy.project_a.pk),
        form_data(
            name="By a project admin", when="later", send_date="2030-07-01", send_time="09:30"
        ),
    )
    assert response.status_code == 302
    distribution = Distribution.objects.get(name="By a project admin")
    assert client.post(url("cancel", distribution.pk)).status_code == 302
    distribution.refresh_from_db()
    assert distribution.status == S.CANCELLED


def test_pages_need_a_login(tenancy, client):
    distribution = DistributionFactory(project=tenancy.project_a)
    for address in (
        url("project_sms", tenancy.project_a.pk),
        url("detail", distribution.pk),
        url("outbox"),
        url("list"),
    ):
        response = client.get(address)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
