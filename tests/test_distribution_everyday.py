"""Everyday distribution work (issue 22, items 1-5): copy, try again and resend; a test message
to oneself; the message library; the list's search, filters and sorting (API and page); delete
and archive, with the audit trail. Sends go through the real engine (outbox provider, tasks
inline on commit)."""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

import pytest

from brands.models import Brand
from credits.models import CreditEntry
from distributions.archive import distribution_archive, distribution_delete
from distributions.copies import (
    distribution_copy,
    distribution_resend,
    distribution_retry,
    distribution_test_send,
)
from distributions.models import Distribution, DistributionAudit, LibraryMessage, Message
from distributions.selectors import distribution_metrics
from distributions.services import distribution_create
from projects.models import Project
from tests.factories.credits import CountryRateFactory, grant
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ProjectFactory

Status = Distribution.Status
MStatus = Message.Status
API = "/api/v1/distributions/"


def add(project, first, phone, email=""):
    person = PersonFactory(brand=project.brand, first_name=first, phone=phone, email=email)
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def people(tenancy):
    """Brand A, self-service; its project has Ada, Grace and Alan (phones)."""
    brand = tenancy.brand_a
    brand.integration_model = Brand.IntegrationModel.SELF_SERVICE
    brand.save()
    project = tenancy.project_a
    tenancy.participant_a.delete()
    return {
        "ada": add(project, "Ada", "+14155550101", "ada@example.com"),
        "grace": add(project, "Grace", "+14155550103", "grace@example.com"),
        "alan": add(project, "Alan", "+14155550104", "alan@example.com"),
    }


@pytest.fixture
def send(eager_tasks, django_capture_on_commit_callbacks):
    def run(call, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            made = call(**kwargs)
        if isinstance(made, Distribution):
            made.refresh_from_db()
        return made

    return run


def later(days=2):
    return timezone.now() + timedelta(days=days)


def rows(distribution) -> dict[str, str]:
    return {
        m.person.first_name: m.status
        for m in Message.objects.filter(distribution=distribution).select_related("person")
    }


# --- copy ---------------------------------------------------------------------------------
def test_copy_to_the_same_project_keeps_message_conditions_and_schedule(tenancy, people):
    conditions = [{"criterion": "first_name", "operator": "is", "value": "Ada"}]
    original = distribution_create(
        project=tenancy.project_a,
        message="Hi ${first_name} ${link}",
        conditions=conditions,
        send_at=later(3),
        name="Spring pulse",
    )
    copy = distribution_copy(original=original, actor=tenancy.admin_a)
    assert copy.status == Status.SCHEDULED
    assert (copy.message, copy.send_at, copy.project_id) == (
        original.message,
        original.send_at,
        original.project_id,
    )
    assert copy.conditions == original.conditions
    assert (copy.origin_id, copy.origin_kind) == (original.pk, "copy")
    assert copy.name == "Copy of Spring pulse"
    audit = DistributionAudit.objects.get(distribution=original)
    assert (audit.action, audit.actor) == ("copied", tenancy.admin_a)


def test_a_copy_keeps_the_send_window_link_expiry_and_a_reminders_audience(tenancy, people):
    """The spec of a stored distribution carries every field (docs/policies.md, two-way):
    a copy waits in the same window, its links expire alike, a reminder targets the same
    audience."""
    project = tenancy.project_a
    invite = distribution_create(
        project=project,
        message="Hi ${first_name} ${link}",
        send_at=later(3),
        window_start=time(9),
        window_end=time(17),
        window_days=[0, 1, 2, 3, 4],
        link_expiry_days=5,
    )
    reminder = distribution_create(
        project=project,
        kind="reminder",
        parent=invite,
        message="Finish it ${link}",
        send_at=later(4),
        audience="started",
    )
    copy = distribution_copy(original=invite, actor=tenancy.admin_a)
    assert (copy.window_start, copy.window_end, copy.window_days, copy.link_expiry_days) == (
        time(9),
        time(17),
        [0, 1, 2, 3, 4],
        5,
    )
    reminder_copy = distribution_copy(original=reminder, actor=tenancy.admin_a)
    assert (reminder_copy.kind, reminder_copy.audience, reminder_copy.mode) == (
        "reminder",
        "started",
        "link",
    )


def test_a_copy_of_a_sent_distribution_needs_a_future_time(tenancy, people, send):
    original = send(
        distribution_create, project=tenancy.project_a, message="Hi ${first_name} ${link}"
    )
    assert original.status == Status.SENT
    with pytest.raises(ValidationError) as refused:
        distribution_copy(original=original)
    assert "send_at" in refused.value.message_dict
    copy = distribution_copy(original=original, send_at=later())
    assert copy.status == Status.SCHEDULED and not copy.messages.exists()


def test_a_copy_to_another_project_is_checked_as_a_new_one(tenancy, people):
    """The copy goes through the spec's rules: a paused target project refuses it."""
    other = ProjectFactory(brand=tenancy.brand_a, name="Other", stage=Project.Stage.PAUSED)
    invite = distribution_create(project=tenancy.project_a, message="Hi ${link}", send_at=later())
    reminder = distribution_create(
        project=tenancy.project_a,
        message="Reminder ${link}",
        kind="reminder",
        parent=invite,
        send_at=later(3),
    )
    with pytest.raises(ValidationError) as refused:
        distribution_copy(original=reminder, project=other)
    assert "project" in refused.value.message_dict
    other.stage = Project.Stage.ACTIVE
    other.save()
    copy = distribution_copy(original=reminder, project=other)
    # Its invite stays behind: it reminds everyone in the other project.
    assert (copy.project, copy.kind, copy.parent) == (other, "reminder", None)


def test_api_copy_to_another_brands_project_answers_404(tenancy, people, api_a):
    original = distribution_create(project=tenancy.project_a, message="Hi ${link}", send_at=later())
    answer = api_a.post(f"{API}{original.pk}/copy/", {"project": tenancy.project_b.pk})
    assert answer.status_code == 404
    answer = api_a.post(f"{API}{original.pk}/copy/", {"name": "Again"}, format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json()["origin"] == original.pk
    assert answer.json()["origin_kind"] == "copy"
    assert answer.json()["name"] == "Again"
    detail = api_a.get(f"{API}{original.pk}/").json()
    assert [r["id"] for r in detail["related"]] == [answer.json()["id"]]


# --- try again ------------------------------------------------------------------------------
def test_try_again_on_a_failed_distribution_after_fixing_it(tenancy, people, send):
    project = tenancy.project_a
    failed = DistributionFactory(project=project, status=Status.FAILED, finished_at=timezone.now())
    # Ada was reached before it failed; the others were not.
    MessageFactory(
        distribution=failed,
        participant=people["ada"],
        person=people["ada"].person,
        status=MStatus.SENT,
    )
    project.stage = Project.Stage.PAUSED
    project.save()
    with pytest.raises(ValidationError) as refused:
        distribution_retry(original=failed)
    assert "project" in refused.value.message_dict  # the cause is not fixed yet
    project.stage = Project.Stage.ACTIVE
    project.save()
    retry = send(distribution_retry, original=failed, actor=tenancy.admin_a)
    assert (retry.origin_id, retry.origin_kind) == (failed.pk, "retry")
    assert retry.status == Status.SENT
    assert rows(retry) == {"Grace": MStatus.DELIVERED, "Alan": MStatus.DELIVERED} or set(
        rows(retry)
    ) == {"Grace", "Alan"}
    assert DistributionAudit.objects.filter(distribution=failed, action="retried").exists()


def test_try_again_is_refused_unless_failed(tenancy, people, api_a):
    scheduled = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    answer = api_a.post(f"{API}{scheduled.pk}/retry/", {}, format="json")
    assert answer.status_code == 409
    assert "Failed" in answer.json()["error"]["message"]


# --- resend ---------------------------------------------------------------------------------
def test_resend_goes_to_failed_bounced_and_blocked_recipients_only(tenancy, people, send):
    project = tenancy.project_a
    carol = add(project, "Carol", "+14155550105")
    sent = DistributionFactory(project=project, status=Status.SENT, finished_at=timezone.now())
    for name, status in (
        ("ada", MStatus.DELIVERED),
        ("grace", MStatus.FAILED),
        ("alan", MStatus.BLOCKED),
    ):
        MessageFactory(
            distribution=sent, participant=people[name], person=people[name].person, status=status
        )
    MessageFactory(distribution=sent, participant=carol, person=carol.person, status="bounced")
    resend = send(distribution_resend, original=sent, actor=tenancy.admin_a)
    assert (resend.origin_id, resend.origin_kind) == (sent.pk, "resend")
    assert set(rows(resend)) == {"Grace", "Alan", "Carol"}
    audit = DistributionAudit.objects.get(distribution=sent, action="resent")
    assert "3 failed" in audit.detail


def test_resend_is_refused_without_failed_recipients_or_when_not_sent(tenancy, people, api_a):
    sent = DistributionFactory(project=tenancy.project_a, status=Status.SENT)
    MessageFactory(distribution=sent, participant=people["ada"], status=MStatus.DELIVERED)
    answer = api_a.post(f"{API}{sent.pk}/resend/", {}, format="json")
    assert answer.status_code == 409
    assert "No recipient" in answer.json()["error"]["message"]
    failed = DistributionFactory(project=tenancy.project_a, status=Status.FAILED)
    assert api_a.post(f"{API}{failed.pk}/resend/", {}, format="json").status_code == 409


# --- test message ---------------------------------------------------------------------------
@pytest.fixture
def sub_account(tenancy, people):
    """Brand A pays with credits: 1 credit per US segment, 100 granted."""
    brand = tenancy.brand_a
    brand.integration_model = Brand.IntegrationModel.SUB_ACCOUNT
    brand.save()
    CountryRateFactory(country="US", rate=Decimal("1"))
    grant(brand, 100)
    return brand


def test_test_message_is_sent_rendered_charged_and_never_counted(
    tenancy, people, sub_account, send
):
    original = distribution_create(
        project=tenancy.project_a, message="Hi ${first_name}, tell us", send_at=later()
    )
    test = send(
        distribution_test_send,
        original=original,
        address="(415) 555-0199",
        participant=people["grace"],
        actor=tenancy.admin_a,
    )
    row = test.messages.get()
    assert (row.address, row.body, row.status) == (
        "+14155550199",
        "Hi Grace, tell us",
        MStatus.DELIVERED,
    )
    assert test.is_test and test.name.startswith("[Test] ")
    assert test.status == Status.SENT
    # Charged like any message, on the test's own distribution.
    debit = CreditEntry.objects.get(message=row, kind=CreditEntry.Kind.DEBIT)
    assert debit.amount == Decimal("-1")
    # Never counted with the original, never listed.
    assert distribution_metrics(distribution=original)["participants"] == 0
    assert original.status == Status.SCHEDULED
    client_list = [d["id"] for d in _api(tenancy).get(API).json()["results"]]
    assert test.pk not in client_list and original.pk in client_list
    assert DistributionAudit.objects.filter(distribution=original, action="test_sent").exists()


def test_test_message_api_refuses_a_bad_phone_naming_the_field(tenancy, people, api_a):
    original = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    answer = api_a.post(f"{API}{original.pk}/test/", {"address": "12"}, format="json")
    assert answer.status_code == 400
    assert "address" in answer.json()["error"]["fields"]
    other = ParticipantFactory(project=tenancy.project_b)
    answer = api_a.post(
        f"{API}{original.pk}/test/",
        {"address": "+14155550199", "participant": other.pk},
        format="json",
    )
    assert answer.status_code == 404


def test_test_message_api_answers_the_row(tenancy, people, api_a, eager_tasks):
    original = distribution_create(project=tenancy.project_a, message="Hi ${first_name}")
    answer = api_a.post(
        f"{API}{original.pk}/test/",
        {"address": "+14155550199", "participant": people["ada"].pk},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["test"] is True and body["origin"] == original.pk
    assert body["address"] == "+14155550199" and body["participant"] == people["ada"].pk


def _api(tenancy):
    from tests.conftest import make_api_client

    return make_api_client(user=tenancy.admin_a)


# --- message library ------------------------------------------------------------------------
def test_library_crud_with_segment_counter_and_scoping(tenancy, api_a, api_client_for):
    answer = api_a.post(
        "/api/v1/library-messages/",
        {"name": "Reminder", "type": "reminder", "message": "Still time: ${link} 😀"},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    saved = answer.json()
    assert saved["segments"] == {"segments": 1, "encoding": "UCS-2", "units": 22}
    assert saved["channel"] == "sms"
    listed = api_a.get("/api/v1/library-messages/?type=reminder").json()["results"]
    assert [m["id"] for m in listed] == [saved["id"]]
    assert api_a.get("/api/v1/library-messages/?type=invite").json()["results"] == []
    other = make_other_brand_client(tenancy, api_client_for)
    assert other.get(f"/api/v1/library-messages/{saved['id']}/").status_code == 404
    bad = api_a.post(
        "/api/v1/library-messages/",
        {"name": "X", "channel": "sms", "message": "Hi", "subject": "No"},
        format="json",
    )
    assert bad.status_code == 400 and "subject" in bad.json()["error"]["fields"]


def make_other_brand_client(tenancy, api_client_for):
    from brands.roles import Role
    from tests.factories.brands import ApiKeyFactory

    return api_client_for(api_key=ApiKeyFactory(brand=tenancy.brand_b, role=Role.BRAND_ADMIN))


def test_distribution_from_a_library_message_keeps_its_copy(tenancy, people, api_a):
    library = LibraryMessage.objects.create(
        brand=tenancy.brand_a, name="Invite", message="Hello ${first_name}: ${link}"
    )
    answer = api_a.post(
        API,
        {
            "project": tenancy.project_a.pk,
            "library_message": library.pk,
            "send_at": later().isoformat(),
        },
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    made = answer.json()
    assert made["message"] == "Hello ${first_name}: ${link}"
    assert made["library_message"] == library.pk
    edit = api_a.patch(
        f"/api/v1/library-messages/{library.pk}/", {"message": "Changed"}, format="json"
    )
    assert edit.status_code == 200
    assert Distribution.objects.get(pk=made["id"]).message == "Hello ${first_name}: ${link}"
    # Another channel's library message is refused, naming the field.
    email_library = LibraryMessage.objects.create(
        brand=tenancy.brand_a, name="E", channel="email", message="<p>${link}</p>"
    )
    answer = api_a.post(
        API,
        {"project": tenancy.project_a.pk, "library_message": email_library.pk},
        format="json",
    )
    assert answer.status_code == 400
    assert "library_message" in answer.json()["error"]["fields"]
    # Neither a message nor a library message.
    answer = api_a.post(API, {"project": tenancy.project_a.pk}, format="json")
    assert answer.status_code == 400 and "message" in answer.json()["error"]["fields"]


# --- list: search, filters, sorting ---------------------------------------------------------
@pytest.fixture
def listed(tenancy, people):
    project = tenancy.project_a
    second = ProjectFactory(brand=tenancy.brand_a, name="Second")
    now = timezone.now()
    made = {
        "spring": DistributionFactory(
            project=project,
            name="Spring pulse",
            send_at=now - timedelta(days=10),
            status=Status.SENT,
            created_by=tenancy.admin_a,
        ),
        "autumn": DistributionFactory(
            project=project,
            name="Autumn",
            message="Hello autumn ${link}",
            send_at=now + timedelta(days=10),
        ),
        "email": DistributionFactory(
            project=second,
            name="Mail",
            channel="email",
            kind="reminder",
            send_at=now + timedelta(days=20),
            created_by=tenancy.project_admin_a,
        ),
        "archived": DistributionFactory(
            project=project,
            name="Old",
            status=Status.SENT,
            archived_at=now,
            send_at=now - timedelta(days=30),
        ),
        "test": DistributionFactory(project=project, name="[Test] x", origin_kind="test"),
        "other_brand": DistributionFactory(project=tenancy.project_b, name="Spring beta"),
    }
    return made


def ids(answer) -> list[int]:
    assert answer.status_code == 200, answer.json()
    return [d["id"] for d in answer.json()["results"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["email", "autumn", "spring"]),
        ("?search=spring", ["spring"]),
        ("?search=HELLO%20AUTUMN", ["autumn"]),
        ("?channel=email", ["email"]),
        ("?kind=reminder", ["email"]),
        ("?kind=invite", ["autumn", "spring"]),
        ("?status=sent", ["spring"]),
        ("?archived=true", ["archived"]),
        ("?archived=false", ["email", "autumn", "spring"]),
        ("?ordering=send_at", ["spring", "autumn", "email"]),
        ("?ordering=name", ["autumn", "email", "spring"]),
        ("?ordering=-name", ["spring", "email", "autumn"]),
        ("?page_size=1&page=2", ["autumn"]),
    ],
)
def test_api_list_filters(tenancy, listed, api_a, query, expected):
    assert ids(api_a.get(API + query)) == [listed[name].pk for name in expected]


def test_api_list_filters_by_project_creator_and_dates(tenancy, listed, api_a):
    second = listed["email"].project_id
    assert ids(api_a.get(f"{API}?project={second}")) == [listed["email"].pk]
    assert ids(api_a.get(f"{API}?created_by={tenancy.admin_a.pk}")) == [listed["spring"].pk]
    today = timezone.localdate(timezone.now(), tenancy.brand_a.zone)
    assert ids(api_a.get(f"{API}?date_from={today}")) == [listed["email"].pk, listed["autumn"].pk]
    assert ids(api_a.get(f"{API}?date_to={today}")) == [listed["spring"].pk]
    window = f"date_from={today + timedelta(days=5)}&date_to={today + timedelta(days=15)}"
    assert ids(api_a.get(f"{API}?{window}")) == [listed["autumn"].pk]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?colour=red", "colour"),
        ("?kind=sms", "kind"),
        ("?date_from=yesterday", "date_from"),
        ("?ordering=pk", "ordering"),
        ("?archived=maybe", "archived"),
        ("?created_by=me", "created_by"),
    ],
)
def test_api_list_refuses_unknown_or_bad_parameters_naming_them(tenancy, api_a, query, field):
    answer = api_a.get(API + query)
    assert answer.status_code == 400
    assert field in answer.json()["error"]["fields"]


def test_list_page_filters_and_keeps_them_in_the_url(tenancy, listed, page_client_for):
    client = page_client_for(tenancy.admin_a)
    page = client.get(reverse("distributions:list") + "?search=spring&channel=sms")
    content = page.content.decode()
    assert "Spring pulse" in content and "Autumn" not in content and "Spring beta" not in content
    assert 'name="search" value="spring"' in content
    page = client.get(reverse("distributions:list") + "?archived=true").content.decode()
    assert "Old" in page and "Spring pulse" not in page
    page = client.get(reverse("distributions:list") + "?kind=reminder&ordering=name")
    assert "Mail" in page.content.decode() and "Autumn" not in page.content.decode()


# --- delete and archive ---------------------------------------------------------------------
def test_delete_a_scheduled_distribution_keeps_its_audit(tenancy, people, api_a):
    scheduled = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    answer = api_a.delete(f"{API}{scheduled.pk}/")
    assert answer.status_code == 204
    assert not Distribution.objects.filter(pk=scheduled.pk).exists()
    audit = api_a.get(f"{API}audit/?distribution={scheduled.pk}").json()["results"]
    assert [(a["action"], a["distribution"]) for a in audit] == [("deleted", scheduled.pk)]
    sent = DistributionFactory(project=tenancy.project_a, status=Status.SENT)
    assert api_a.delete(f"{API}{sent.pk}/").status_code == 409


def test_an_invite_followed_by_scheduled_reminders_is_not_deleted(tenancy, people):
    invite = distribution_create(project=tenancy.project_a, message="Hi ${link}", send_at=later())
    distribution_create(
        project=tenancy.project_a,
        message="R ${link}",
        kind="reminder",
        parent=invite,
        send_at=later(3),
    )
    with pytest.raises(ValidationError) as refused:
        distribution_delete(distribution=invite)
    assert "reminders" in refused.value.message_dict


def test_archive_hides_but_keeps_history_and_ledger(tenancy, people, send, api_a):
    sent = send(distribution_create, project=tenancy.project_a, message="Hi ${first_name}")
    scheduled = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    assert api_a.post(f"{API}{scheduled.pk}/archive/").status_code == 409
    answer = api_a.post(f"{API}{sent.pk}/archive/")
    assert answer.status_code == 200 and answer.json()["archived_at"]
    assert sent.pk not in ids(api_a.get(API))
    assert ids(api_a.get(f"{API}?archived=true")) == [sent.pk]
    csv = api_a.get(f"{API}{sent.pk}/history.csv")
    assert csv.status_code == 200
    assert len(b"".join(csv.streaming_content).decode().strip().splitlines()) == 4
    assert CreditEntry.objects.filter(distribution=sent, kind="usage").count() == 3
    api_a.post(f"{API}{sent.pk}/unarchive/")
    actions = [a["action"] for a in api_a.get(f"{API}audit/").json()["results"]]
    assert actions == ["unarchived", "archived"]
    with pytest.raises(ValidationError):
        distribution_archive(distribution=scheduled)


# --- pages ----------------------------------------------------------------------------------
def page_url(name, *args) -> str:
    return reverse(f"distributions:{name}", args=args)


def test_distribution_page_offers_what_each_state_allows(tenancy, people, page_client_for):
    admin = page_client_for(tenancy.project_admin_a)
    scheduled = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    content = admin.get(page_url("detail", scheduled.pk)).content.decode()
    assert "Copy distribution" in content and "Delete distribution" in content
    assert "Try again" not in content and "Archive" not in content
    assert 'id="test-form"' in content

    failed = DistributionFactory(
        project=tenancy.project_a, status=Status.FAILED, status_reason="Provider refused"
    )
    content = admin.get(page_url("detail", failed.pk)).content.decode()
    assert 'id="retry-advice"' in content and "Check the provider settings" in content

    sent = DistributionFactory(project=tenancy.project_a, status=Status.SENT)
    MessageFactory(distribution=sent, participant=people["ada"], status=MStatus.BOUNCED)
    content = admin.get(page_url("detail", sent.pk)).content.decode()
    assert "Resend to 1 failed recipient" in content and ">Archive<" in content

    viewer = page_client_for(tenancy.viewer_a)
    content = viewer.get(page_url("detail", sent.pk)).content.decode()
    assert "Copy distribution" not in content and 'id="test-form"' not in content
    assert viewer.post(page_url("resend", sent.pk)).status_code == 403


def test_copy_page_offers_only_the_brands_projects(tenancy, people, page_client_for):
    admin = page_client_for(tenancy.project_admin_a)
    original = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    day = (timezone.localtime(later(), tenancy.brand_a.zone)).date()
    answer = admin.post(
        page_url("copy", original.pk),
        {"project": tenancy.project_b.pk, "send_date": day, "send_time": "10:00"},
    )
    assert answer.status_code == 400
    assert "Select a valid choice" in answer.content.decode()
    answer = admin.post(
        page_url("copy", original.pk),
        {"project": tenancy.project_a.pk, "send_date": day, "send_time": "10:00", "name": "C"},
    )
    copy = Distribution.objects.get(name="C")
    assert answer.status_code == 302 and answer["Location"] == page_url("detail", copy.pk)
    other_brand = DistributionFactory(project=tenancy.project_b)
    assert admin.get(page_url("copy", other_brand.pk)).status_code == 404


def test_delete_and_archive_pages(tenancy, people, page_client_for, send):
    admin = page_client_for(tenancy.project_admin_a)
    scheduled = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    answer = admin.post(page_url("delete", scheduled.pk))
    assert answer["Location"] == page_url("project_sms", tenancy.project_a.pk)
    assert not Distribution.objects.filter(pk=scheduled.pk).exists()
    assert DistributionAudit.objects.get(distribution_ref=scheduled.pk).action == "deleted"

    sent = send(distribution_create, project=tenancy.project_a, message="Hi", name="Done")
    admin.post(page_url("archive", sent.pk))
    sent.refresh_from_db()
    assert sent.archived_at is not None
    tab = admin.get(page_url("project_sms", tenancy.project_a.pk)).content.decode()
    assert "Done" not in tab
    detail = admin.get(page_url("detail", sent.pk)).content.decode()
    assert 'id="archived-note"' in detail and "Restore from the archive" in detail
    assert admin.get(page_url("history_csv", sent.pk)).status_code == 200
    admin.post(page_url("archive", sent.pk), {"restore": "1"})
    sent.refresh_from_db()
    assert sent.archived_at is None


def test_test_message_page_names_a_bad_phone(tenancy, people, page_client_for):
    admin = page_client_for(tenancy.project_admin_a)
    original = distribution_create(project=tenancy.project_a, message="Hi", send_at=later())
    answer = admin.post(
        page_url("test", original.pk),
        {"address": "12", "participant": people["ada"].pk},
        follow=True,
    )
    assert "is not a" in answer.content.decode()
    assert not Distribution.objects.filter(origin=original).exists()


def test_library_pages_roles_and_scoping(tenancy, page_client_for):
    theirs = LibraryMessage.objects.create(brand=tenancy.brand_b, name="Theirs", message="x")
    viewer = page_client_for(tenancy.viewer_a)
    content = viewer.get(page_url("library")).content.decode()
    assert "never changes what was scheduled or sent" in content
    assert 'id="library-form"' not in content
    assert viewer.post(page_url("library"), {"name": "N"}).status_code == 403
    admin = page_client_for(tenancy.project_admin_a)
    assert admin.get(page_url("library_edit", theirs.pk)).status_code == 404
    answer = admin.post(
        page_url("library"),
        {"name": "Mine", "channel": "sms", "type": "invite", "message": "Hi", "subject": "S"},
    )
    assert answer.status_code == 400 and "Only emails have a subject" in answer.content.decode()
    answer = admin.post(
        page_url("library"), {"name": "Mine", "channel": "sms", "type": "invite", "message": "Hi"}
    )
    assert answer.status_code == 302
    mine = LibraryMessage.objects.get(name="Mine")
    form = admin.get(page_url("create", tenancy.project_a.pk)).content.decode()
    assert f'value="{mine.pk}"' in form and "Theirs" not in form
