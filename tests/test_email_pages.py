"""The email distribution pages: the project's Emails tab, the email schedule form (fields,
live count, weekly allowance, sandboxed preview, the seed's errors from the service), the
distribution page with the seed's email metrics and the Email column, edit and cancel, and the
brand's email settings (SMTP relay, From domains with DKIM, the operator's weekly limit).

Sends go through the real engine to a real SMTP server on 127.0.0.1 (aiosmtpd, tasks inline
on commit).
"""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import UTC, datetime

from django.urls import reverse
from django.utils import timezone

import pytest

from distributions.email_services import email_domain_create
from distributions.models import Distribution, EmailAccount, EmailDomain, Message
from distributions.selectors import EMAIL_HISTORY_HEADER
from tests.factories.distributions import DistributionFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.factories.projects import ResponseFactory
from tests.smtp_server import SmtpServer

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:Requiring AUTH")]
S = Distribution.Status
M = Message.Status
FUTURE = datetime(2030, 7, 1, 13, 30, tzinfo=UTC)  # 09:30 in New York (EDT)
BODY = (
    '<p>Hello ${first_name},</p><p><a href="${link}">Take the survey</a></p>'
    '<p><a href="${opt_out_link}">Unsubscribe</a></p>'
)


def text(response) -> str:
    return html.unescape(response.content.decode())


def url(name, *args) -> str:
    return reverse(f"distributions:{name}", args=args)


def add(project, first, address, *, team=""):
    person = PersonFactory(
        brand=project.brand, first_name=first, email=address, metadata={"Team": team}
    )
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def smtp(settings):
    with SmtpServer() as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        settings.EMAIL_TIMEOUT = 5
        settings.DEFAULT_FROM_EMAIL = "surveys@relay.example"
        settings.RELAY_EMAIL_PLATFORM_DOMAINS = []
        yield server


@pytest.fixture
def people(tenancy):
    """Brand A in New York; its project has three participants, one without an address."""
    brand = tenancy.brand_a
    brand.time_zone = "America/New_York"
    brand.save()
    project = tenancy.project_a
    tenancy.participant_a.delete()
    return {
        "ada": add(project, "Ada", "ada@example.com", team="Sales"),
        "alan": add(project, "Alan", "alan@example.com", team="R&D"),
        "nemo": add(project, "Nemo", ""),
    }


@pytest.fixture
def admin(tenancy, page_client_for):
    return page_client_for(tenancy.admin_a)


def form_data(**overrides) -> dict:
    data = {
        "kind": "invite",
        "name": "",
        "subject": "Hi ${first_name}",
        "from_name": "Alpha surveys",
        "from_address": "surveys@relay.example",
        "reply_to": "",
        "message": BODY,
        "text_body": "",
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


def email_distribution(project, **kwargs):
    values = {
        "channel": "email",
        "message": BODY,
        "subject": "Hello",
        "from_address": "surveys@relay.example",
        "send_at": FUTURE,
    }
    values.update(kwargs)
    return DistributionFactory(project=project, **values)


# --- the Emails tab -------------------------------------------------------------------------
def test_project_page_has_the_emails_tab_beside_text_messages(tenancy, admin):
    content = text(admin.get(reverse("projects:detail", args=[tenancy.project_a.pk])))
    assert f'href="{url("project_email", tenancy.project_a.pk)}"' in content
    assert content.index("Text messages (SMS)") < content.index(">Emails</a>")


def test_emails_tab_lists_the_projects_emails_with_their_status(tenancy, people, admin):
    project = tenancy.project_a
    scheduled = email_distribution(project, name="July invite")
    sent = email_distribution(project, subject="Thanks!", kind="thank_you", status=S.SENT)
    DistributionFactory(project=project, name="By SMS", send_at=FUTURE)
    email_distribution(tenancy.project_b, name="Beta email")

    response = admin.get(url("project_email", project.pk))

    assert response.status_code == 200
    content = text(response)
    assert '<h2 class="section-title">Emails</h2>' in content
    assert "July invite" in content and "Thanks!" in content
    assert "By SMS" not in content and "Beta email" not in content
    assert "2030-07-01 09:30" in content  # the brand's time zone
    assert ">Scheduled</span>" in content and ">Sent</span>" in content
    assert url("edit", scheduled.pk) in content
    assert f'href="{url("email_create", project.pk)}"' in content
    assert "Schedule an email" in content
    assert f"{url('email_create', project.pk)}?parent={sent.pk}" not in content  # a thank-you
    assert 'name="ids"' not in content  # bulk edit is for SMS texts


def test_viewer_reads_the_emails_tab_without_write_controls(tenancy, page_client_for):
    email_distribution(tenancy.project_a, name="Viewer sees me")
    viewer = page_client_for(tenancy.viewer_a)
    content = text(viewer.get(url("project_email", tenancy.project_a.pk)))
    assert "Viewer sees me" in content
    assert "Schedule an email" not in content and "Edit distribution" not in content


# --- the schedule form ----------------------------------------------------------------------
def test_email_form_has_the_email_fields_and_a_sandboxed_preview(tenancy, people, admin, smtp):
    domain = email_domain_create(brand=tenancy.brand_a, domain="alpha.test")
    EmailDomain.objects.filter(pk=domain.pk).update(verified_at=timezone.now())
    email_domain_create(brand=tenancy.brand_a, domain="unverified.test")

    response = admin.get(url("email_create", tenancy.project_a.pk))

    assert response.status_code == 200
    content = text(response)
    for name in ("subject", "from_name", "from_address", "reply_to", "message", "text_body"):
        assert f'name="{name}"' in content, name
    for kind in ("invite", "reminder", "thank_you"):
        assert f'value="{kind}"' in content
    assert 'name="on_completion"' in content
    assert 'name="sender"' not in content and 'id="segment-counter"' not in content
    assert '<option value="surveys@alpha.test">' in content  # verified domain offered
    assert "@unverified.test" not in content
    assert "<code>@relay.example</code>" in content
    for token in ("${first_name}", "${link}", "${opt_out_link}", "${Team}"):
        assert f'data-insert="{token}"' in content
    assert "3 participants match" in content and "2 with an email address" in content
    assert "You are currently allowed to send 10000 emails per week" in content
    # The preview: the default body rendered for the first recipient, in a sandboxed frame.
    frame = re.search(r"<iframe id=\"preview-html\"[^>]*>", response.content.decode()).group(0)
    assert 'sandbox=""' in frame and "allow-scripts" not in frame
    assert "Hello Ada," in text(response).split('id="preview-html"')[1]
    assert "America/New_York" in content
    assert f'action="{url("email_create", tenancy.project_a.pk)}"' in content
    assert f'hx-post="{url("email_preview_count", tenancy.project_a.pk)}"' in content


def test_preview_strips_scripts_and_shows_the_text_part(tenancy, people, admin):
    body = BODY + '<script>alert(1)</script><img src="x" onerror="steal()">'
    response = admin.post(
        url("email_preview_count", tenancy.project_a.pk),
        form_data(message=body, subject="For ${first_name}", text_body="Plain ${first_name}"),
    )
    assert response.status_code == 200
    raw = response.content.decode()
    frame = re.search(r'<iframe id="preview-html"[^>]*srcdoc="([^"]*)"', raw)
    srcdoc = html.unescape(frame.group(1))
    assert "Hello Ada," in srcdoc and "/s/" in srcdoc and "/o/" in srcdoc  # sample links
    assert "<script" not in srcdoc and "alert(1)" not in srcdoc and "onerror" not in srcdoc
    assert 'id="email-preview" class="email-preview" hx-swap-oob="true"' in raw
    content = text(response)
    assert '<dd id="preview-subject">For Ada</dd>' in content
    assert '<pre id="preview-text" class="message-template">Plain Ada</pre>' in content
    assert "2 with an email address" in content


def test_send_now_emails_through_smtp_and_lands_on_the_distribution(
    tenancy, people, admin, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(url("email_create", tenancy.project_a.pk), form_data(name="Pulse"))
    distribution = Distribution.objects.get(name="Pulse")
    assert response.status_code == 302 and response.url == url("detail", distribution.pk)
    assert distribution.channel == "email" and distribution.status == S.SENT
    assert distribution.created_by == tenancy.admin_a
    assert sorted(r.rcpt_tos[0] for r in smtp.messages) == ["ada@example.com", "alan@example.com"]

    content = text(admin.get(url("detail", distribution.pk)))
    for metric, value in (("sent", 2), ("failed", 0), ("opened", 0), ("finished", 0)):
        assert f'data-metric="{metric}">{value}</div>' in content, metric
    assert 'data-metric="bounced">0</div>' in content
    assert 'data-metric="skipped">1</div>' in content  # Nemo has no address
    assert "Credits consumed" not in content
    assert '<dd id="email-subject">Hi ${first_name}</dd>' in content
    assert "Alpha surveys <surveys@relay.example>" in content
    assert "<th>Email</th>" in content and "ada@example.com" in content
    assert f'href="{url("project_email", tenancy.project_a.pk)}">Emails</a>' in content
    assert f"{url('email_create', tenancy.project_a.pk)}?parent={distribution.pk}" in content

    # A response and an opened link move the seed's metrics.
    ada_row = distribution.messages.get(participant=people["ada"])
    Message.objects.filter(pk=ada_row.pk).update(status=M.OPENED)
    ResponseFactory(project=tenancy.project_a, participant=people["ada"])
    content = text(admin.get(url("live", distribution.pk)))
    assert 'data-metric="opened">1</div>' in content
    assert 'data-metric="finished">1</div>' in content


def test_history_download_has_the_email_column(
    tenancy, people, admin, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(url("email_create", tenancy.project_a.pk), form_data(name="Pulse"))
    distribution = Distribution.objects.get(name="Pulse")
    response = admin.get(url("history_csv", distribution.pk))
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == EMAIL_HISTORY_HEADER and "Email" in rows[0]
    emails = {row[rows[0].index("Email")]: row[rows[0].index("Status")] for row in rows[1:]}
    assert emails == {"ada@example.com": "Sent", "alan@example.com": "Sent", "": "Skipped"}


@pytest.mark.parametrize(
    ("overrides", "field", "wording"),
    [
        (
            {"message": '<p><a href="${link}">Go</a></p>'},
            "message",
            "The email has no opt-out link: include ${opt_out_link}",
        ),
        (
            {"message": '<p><a href="${opt_out_link}">Unsubscribe</a></p>'},
            "message",
            "The email has no survey link: include ${link}",
        ),
        (
            {"from_address": "boss@elsewhere.test"},
            "from_address",
            "elsewhere.test is not verified for this brand (the SPF check would fail)",
        ),
        ({"subject": ""}, "subject", "This field is required."),
        (
            {"text_body": "Plain text without links"},
            "text_body",
            "The email has no survey link",
        ),
    ],
)
def test_scheduling_errors_are_shown_on_the_form_and_nothing_is_created(
    tenancy, people, admin, smtp, overrides, field, wording
):
    response = admin.post(url("email_create", tenancy.project_a.pk), form_data(**overrides))
    assert response.status_code == 400
    content = text(response)
    assert "Nothing was scheduled." in content
    assert re.search(rf'<li data-field="{field}">.*{re.escape(wording)}', content), content[:0]
    assert 'class="field has-error"' in content
    assert not Distribution.objects.exists()


def test_the_weekly_limit_is_refused_in_the_seeds_words(tenancy, people, admin, smtp):
    EmailAccount.objects.create(brand=tenancy.brand_a, weekly_limit=1)
    form = admin.get(url("email_create", tenancy.project_a.pk))
    # Warned before submitting (the service's own message) ...
    assert "You are currently allowed to send 1 emails per week" in text(form)
    assert 'id="limit-warning"' in text(form)
    # ... and refused when submitted.
    response = admin.post(url("email_create", tenancy.project_a.pk), form_data())
    assert response.status_code == 400
    assert (
        "Your email distribution cannot be sent at this time. You are currently allowed to "
        "send 1 emails per week. Please contact your account representative to increase this "
        "limit." in text(response)
    )
    assert not Distribution.objects.exists()
    # One recipient fits.
    response = admin.post(
        url("email_create", tenancy.project_a.pk),
        form_data(
            audience="some",
            c_criterion=["metadata"],
            c_field=["Team"],
            c_operator=["is"],
            c_value=["Sales"],
            when="later",
            send_date="2030-07-01",
            send_time="09:30",
        ),
    )
    assert response.status_code == 302
    distribution = Distribution.objects.get()
    assert distribution.send_at == FUTURE and distribution.conditions


def test_thank_you_can_go_on_completion(
    tenancy, people, admin, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            url("email_create", tenancy.project_a.pk),
            form_data(
                kind="thank_you",
                subject="Thank you",
                message='<p>Thanks! <a href="${opt_out_link}">Unsubscribe</a></p>',
                on_completion="on",
                when="later",  # ignored: it goes on each completion
            ),
        )
    assert response.status_code == 302
    distribution = Distribution.objects.get()
    assert distribution.kind == "thank_you" and distribution.trigger == "completion"
    assert distribution.status == S.IN_PROGRESS and not smtp.messages
    content = text(admin.get(url("detail", distribution.pk)))
    assert "To each participant when they complete the survey" in content
    assert "Each participant who completes the survey" in content  # who receives it
    assert 'id="trigger-note"' in content and 'id="send-progress"' not in content
    assert 'hx-trigger="every' not in content  # nothing to watch for


def test_an_email_reminder_follows_an_email_invite_only(tenancy, people, admin, smtp):
    invite = email_distribution(tenancy.project_a, name="The invite", status=S.SENT)
    sms_invite = DistributionFactory(project=tenancy.project_a, status=S.SENT)
    response = admin.get(url("email_create", tenancy.project_a.pk) + f"?parent={invite.pk}")
    assert response.status_code == 200
    assert "Email reminder" in text(response) and "The invite" in text(response)
    for parent in (sms_invite, email_distribution(tenancy.project_b, status=S.SENT)):
        address = url("email_create", tenancy.project_a.pk) + f"?parent={parent.pk}"
        assert admin.get(address).status_code == 404
    response = admin.post(
        url("email_create", tenancy.project_a.pk), form_data(parent=invite.pk, name="Nudge")
    )
    assert response.status_code == 302
    reminder = Distribution.objects.get(name="Nudge")
    assert reminder.kind == "reminder" and reminder.parent == invite


def test_edit_and_cancel_a_scheduled_email(tenancy, people, admin, smtp):
    distribution = email_distribution(tenancy.project_a, name="Later", subject="Old subject")
    form = text(admin.get(url("edit", distribution.pk)))
    assert 'value="Old subject"' in form and 'name="on_completion"' not in form
    response = admin.post(
        url("edit", distribution.pk),
        form_data(
            name="Later",
            subject="New subject",
            when="later",
            send_date="2030-07-02",
            send_time="10:00",
        ),
    )
    assert response.status_code == 302
    distribution.refresh_from_db()
    assert distribution.subject == "New subject" and distribution.status == S.SCHEDULED
    response = admin.post(url("edit", distribution.pk), form_data(from_address="x@nope.test"))
    assert response.status_code == 400 and "nope.test is not verified" in text(response)
    admin.post(url("cancel", distribution.pk))
    distribution.refresh_from_db()
    assert distribution.status == S.CANCELLED


def test_preview_page_of_an_email(tenancy, people, admin):
    distribution = email_distribution(tenancy.project_a, text_body="Plain ${link} ${opt_out_link}")
    response = admin.get(url("preview", distribution.pk))
    assert response.status_code == 200
    raw = response.content.decode()
    assert re.search(r'<iframe id="preview-html"[^>]*sandbox=""', raw)
    assert "Sample email" in text(response) and "Plain http" in text(response)


# --- the brand's email settings ----------------------------------------------------------
def test_email_settings_are_for_brand_admins(tenancy, page_client_for):
    for user in (tenancy.project_admin_a, tenancy.viewer_a):
        client = page_client_for(user)
        assert client.get(url("email_settings")).status_code == 403
        assert client.post(url("email_settings"), {"transport": "smtp"}).status_code == 403
    admin = page_client_for(tenancy.admin_a)
    content = text(admin.get(url("email_settings")))
    assert "You are currently allowed to send 10000 emails per week" in content
    assert url("email_settings") in text(admin.get(reverse("brands:settings")))


def test_smtp_relay_password_is_write_only_and_masked(tenancy, admin):
    data = {
        "action": "account",
        "transport": "smtp",
        "smtp_host": "mail.alpha.test",
        "smtp_port": "2525",
        "smtp_security": "starttls",
        "smtp_username": "relay",
        "smtp_password": "s3cret-relay-password",
        "default_from_name": "Alpha",
        "default_from_address": "",
        "default_reply_to": "",
        "weekly_limit": "999999",  # not a brand admin's to set: ignored
    }
    assert admin.post(url("email_settings"), data).status_code == 302
    account = EmailAccount.objects.get(brand=tenancy.brand_a)
    assert account.smtp_host == "mail.alpha.test" and account.smtp_port == 2525
    assert account.smtp_password == "s3cret-relay-password" and account.weekly_limit is None
    content = text(admin.get(url("email_settings")))
    assert "s3cret-relay-password" not in content
    assert '<code id="password-masked">' + "\u2022" * 8 + "word</code>" in content
    # An empty password keeps the stored one.
    assert admin.post(url("email_settings"), {**data, "smtp_password": ""}).status_code == 302
    account.refresh_from_db()
    assert account.smtp_password == "s3cret-relay-password"
    # The service's errors are shown next to their field.
    response = admin.post(url("email_settings"), {**data, "smtp_host": ""})
    assert response.status_code == 400
    assert "Give the host name of your SMTP relay." in text(response)


def test_from_domains_with_dkim(tenancy, admin, page_client_for):
    response = admin.post(
        url("email_settings"),
        {
            "action": "add_domain",
            "domain": "Alpha.Test",
            "dkim_selector": "",
            "dkim_private_key": "",
        },
    )
    assert response.status_code == 302
    domain = EmailDomain.objects.get(brand=tenancy.brand_a)
    assert domain.domain == "alpha.test" and not domain.verified
    content = text(admin.get(url("email_settings")))
    assert "alpha.test" in content and "Waiting for verification" in content
    response = admin.post(
        url("email_settings"),
        {
            "action": "domain_key",
            "domain_id": domain.pk,
            f"d{domain.pk}-dkim_selector": "relay",
            f"d{domain.pk}-dkim_private_key": "not a key",
        },
    )
    assert response.status_code == 400
    assert "The DKIM key is not an unencrypted PEM private key." in text(response)
    response = admin.post(url("email_settings"), {"action": "add_domain", "domain": "alpha.test"})
    assert response.status_code == 400 and "already one of your domains" in text(response)
    # Another brand's domain answers 404.
    other = email_domain_create(brand=tenancy.brand_b, domain="beta.test")
    response = admin.post(
        url("email_settings"),
        {"action": "domain_key", "domain_id": other.pk, f"d{other.pk}-dkim_selector": ""},
    )
    assert response.status_code == 404
    assert "beta.test" not in text(admin.get(url("email_settings")))
    assert "alpha.test" not in text(page_client_for(tenancy.admin_b).get(url("email_settings")))


# --- tenancy and roles --------------------------------------------------------------------
def test_other_brands_email_pages_answer_404(tenancy, admin):
    distribution_b = email_distribution(tenancy.project_b)
    project_b = tenancy.project_b.pk
    for address, method in (
        (url("project_email", project_b), "get"),
        (url("email_create", project_b), "get"),
        (url("email_create", project_b), "post"),
        (url("email_preview_count", project_b), "post"),
        (url("detail", distribution_b.pk), "get"),
        (url("edit", distribution_b.pk), "get"),
        (url("edit", distribution_b.pk), "post"),
        (url("preview", distribution_b.pk), "get"),
        (url("history_csv", distribution_b.pk), "get"),
    ):
        response = getattr(admin, method)(address, form_data())
        assert response.status_code == 404, (address, method)
    distribution_b.refresh_from_db()
    assert distribution_b.subject == "Hello"


def test_viewers_cannot_schedule_or_edit_emails(tenancy, people, page_client_for):
    viewer = page_client_for(tenancy.viewer_a)
    scheduled = email_distribution(tenancy.project_a)
    project = tenancy.project_a.pk
    for address in (url("email_create", project), url("edit", scheduled.pk)):
        assert viewer.get(address).status_code == 403
    for address in (
        url("email_create", project),
        url("email_preview_count", project),
        url("edit", scheduled.pk),
        url("cancel", scheduled.pk),
    ):
        assert viewer.post(address, form_data()).status_code == 403, address
    for address in (url("project_email", project), url("detail", scheduled.pk)):
        assert viewer.get(address).status_code == 200
    assert Distribution.objects.count() == 1


def test_project_admins_schedule_emails(tenancy, people, page_client_for, smtp):
    client = page_client_for(tenancy.project_admin_a)
    response = client.post(
        url("email_create", tenancy.project_a.pk),
        form_data(
            name="By a project admin", when="later", send_date="2030-07-01", send_time="09:30"
        ),
    )
    assert response.status_code == 302
    assert Distribution.objects.get().send_at == FUTURE


def test_check_the_relay_connection_from_the_page(tenancy, admin):
    with SmtpServer(users={"relay": "right-password"}) as server:
        data = {
            "action": "account",
            "transport": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": str(server.port),
            "smtp_security": "none",
            "smtp_username": "relay",
            "smtp_password": "wrong-password",
        }
        assert admin.post(url("email_settings"), data).status_code == 302
        response = admin.post(url("email_settings"), {"action": "check"}, follow=True)
        content = text(response)
        assert "The mail server did not accept the connection" in content
        assert "535" in content  # the server's reply
        admin.post(url("email_settings"), {**data, "smtp_password": "right-password"})
        response = admin.post(url("email_settings"), {"action": "check"}, follow=True)
        assert "Connected to the mail server and logged in." in text(response)
        assert not server.messages  # nothing was sent


def test_the_live_summary_costs_the_same_queries_for_3_or_30_participants(
    tenancy, people, admin, django_assert_max_num_queries
):
    def summary():
        return admin.post(
            url("email_preview_count", tenancy.project_a.pk),
            form_data(
                audience="some",
                c_criterion=["metadata"],
                c_field=["Team"],
                c_operator=["is"],
                c_value=["Sales"],
            ),
        )

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        assert summary().status_code == 200
    for n in range(27):
        add(tenancy.project_a, f"P{n}", f"p{n}@example.com", team="Sales")
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = summary()
    assert "28 participants match" in text(response)  # Ada and the 27


def test_the_reminder_form_is_offered_by_email_from_the_responses_tab(tenancy, people, admin):
    content = text(admin.get(reverse("projects:responses", args=[tenancy.project_a.pk])))
    assert f"{url('email_create', tenancy.project_a.pk)}?kind=reminder" in content
    form = text(admin.get(url("email_create", tenancy.project_a.pk) + "?kind=reminder"))
    assert re.search(r'value="reminder"[^>]*checked', form)
