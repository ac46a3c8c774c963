"""Email distributions at scheduling: content, From domains, the weekly limit, the API."""

from django.core.exceptions import ValidationError
from django.utils import timezone

import pytest

from distributions.email_services import (
    email_account_update,
    email_domain_create,
    email_domain_verify,
)
from distributions.models import Distribution, EmailAccount, Message
from distributions.services import distribution_create, distribution_update
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db

BODY = (
    '<p>Hi ${first_name}, <a href="${link}">take the survey</a>.</p>'
    '<p><a href="${opt_out_link}">Unsubscribe</a></p>'
)


def add(project, first, email):
    person = PersonFactory(brand=project.brand, first_name=first, email=email)
    return ParticipantFactory(project=project, person=person)


def schedule(project, **kwargs):
    values = {
        "channel": "email",
        "message": BODY,
        "subject": "Your opinion, ${first_name}",
        "send_at": timezone.now() + timezone.timedelta(days=1),
    }
    values.update(kwargs)
    return distribution_create(project=project, **values)


def errors_of(exc_info) -> dict:
    return exc_info.value.message_dict


def test_email_is_scheduled_with_defaults_and_scripts_stripped(tenancy):
    distribution = schedule(
        tenancy.project_a,
        message=BODY + '<script>alert(1)</script><img src="x.png" onerror="alert(2)">',
        from_name="Alpha team",
    )
    assert distribution.channel == "email"
    assert "<script" not in distribution.message and "onerror" not in distribution.message
    assert 'href="${link}"' in distribution.message
    assert distribution.from_address == "surveys@relay.example"  # the platform's
    assert distribution.from_name == "Alpha team"
    assert distribution.subject == "Your opinion, ${first_name}"


@pytest.mark.parametrize(
    ("kind", "body", "field", "words"),
    [
        ("invite", '<a href="${opt_out_link}">out</a>', "message", "no survey link"),
        ("invite", '<a href="${link}">go</a>', "message", "no opt-out link"),
        ("thank_you", "<p>Thanks ${first_name}</p>", "message", "no opt-out link"),
    ],
)
def test_missing_links_are_refused(tenancy, kind, body, field, words):
    with pytest.raises(ValidationError) as exc_info:
        schedule(tenancy.project_a, kind=kind, message=body)
    assert words in errors_of(exc_info)[field][0]
    assert not Distribution.objects.exists()


def test_thank_you_needs_no_survey_link(tenancy):
    distribution = schedule(
        tenancy.project_a,
        kind="thank_you",
        message='<p>Thank you!</p><a href="${opt_out_link}">out</a>',
    )
    assert distribution.kind == "thank_you"


def test_text_part_is_checked_too(tenancy):
    with pytest.raises(ValidationError) as exc_info:
        schedule(tenancy.project_a, text_body="Hi, go to ${link}")
    assert "no opt-out link" in errors_of(exc_info)["text_body"][0]


def test_subject_is_required(tenancy):
    with pytest.raises(ValidationError) as exc_info:
        schedule(tenancy.project_a, subject="  ")
    assert "subject" in errors_of(exc_info)


def test_from_address_outside_verified_domains_is_refused(tenancy):
    with pytest.raises(ValidationError) as exc_info:
        schedule(tenancy.project_a, from_address="news@alpha.test")
    assert "alpha.test is not verified" in errors_of(exc_info)["from_address"][0]

    domain = email_domain_create(brand=tenancy.brand_a, domain="alpha.test")
    with pytest.raises(ValidationError):  # added, not yet verified
        schedule(tenancy.project_a, from_address="news@alpha.test")
    email_domain_verify(domain=domain)
    assert schedule(tenancy.project_a, from_address="News@Alpha.test").from_address == (
        "news@alpha.test"
    )
    # Another brand's verified domain does not count.
    with pytest.raises(ValidationError):
        schedule(tenancy.project_b, from_address="news@alpha.test")


def test_weekly_limit_is_refused_with_the_seeds_words(tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    for n in range(3):
        add(project, f"P{n}", f"p{n}@example.com")
    EmailAccount.objects.create(brand=tenancy.brand_a, weekly_limit=4)
    earlier = DistributionFactory(project=project, channel="email")
    MessageFactory(
        distribution=earlier, address="x@example.com", status="sent", sent_at=timezone.now()
    )
    MessageFactory(
        distribution=earlier,
        address="y@example.com",
        status="sent",
        sent_at=timezone.now() - timezone.timedelta(days=8),  # outside the week
    )
    assert schedule(project).pk  # 1 sent this week + 3 = 4: allowed
    MessageFactory(
        distribution=earlier, address="z@example.com", status="sent", sent_at=timezone.now()
    )
    with pytest.raises(ValidationError) as exc_info:
        schedule(project)
    assert errors_of(exc_info)["message"] == [
        "Your email distribution cannot be sent at this time. You are currently allowed to "
        "send 4 emails per week. Please contact your account representative to increase this "
        "limit."
    ]
    # SMS distributions do not count against it.
    assert Message.objects.filter(distribution__channel="sms").count() == 0


def test_edit_keeps_the_rules(tenancy):
    distribution = schedule(tenancy.project_a)
    edited = distribution_update(distribution=distribution, subject="New subject")
    assert edited.subject == "New subject"
    with pytest.raises(ValidationError) as exc_info:
        distribution_update(distribution=distribution, message="<p>no links</p>")
    assert "message" in errors_of(exc_info)
    sms = DistributionFactory(project=tenancy.project_a, send_at=timezone.now())
    with pytest.raises(ValidationError):
        distribution_update(distribution=sms, subject="x")


def test_trigger_only_for_email_thank_you(tenancy):
    with pytest.raises(ValidationError) as exc_info:
        schedule(tenancy.project_a, trigger="completion")
    assert "trigger" in errors_of(exc_info)


def test_email_settings_keep_secrets_encrypted(tenancy):
    from django.db import connection

    account = email_account_update(
        brand=tenancy.brand_a,
        transport="smtp",
        smtp_host="smtp.alpha.test",
        smtp_port=2525,
        smtp_username="relay",
        smtp_password="s3cret-password-value",
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT smtp_password FROM distributions_emailaccount WHERE id = %s", [account.pk]
        )
        stored = cursor.fetchone()[0]
    assert "s3cret" not in stored
    assert account.smtp_password_redacted.endswith("alue") and "s3cret" not in (
        account.smtp_password_redacted
    )
    # An empty password on edit keeps the stored one.
    again = email_account_update(brand=tenancy.brand_a, smtp_password="", smtp_port=587)
    again.refresh_from_db()
    assert again.smtp_password == "s3cret-password-value"
    with pytest.raises(ValidationError) as exc_info:
        email_account_update(brand=tenancy.brand_a, weekly_limit=10**9)
    assert "weekly_limit" in errors_of(exc_info)


def test_api_creates_and_shows_email_fields(tenancy, api_a, api_client_for, key_a):
    response = api_a.post(
        "/api/v1/distributions/",
        {
            "project": tenancy.project_a.pk,
            "channel": "email",
            "message": BODY,
            "subject": "Hello",
            "from_name": "Alpha",
            "reply_to": "help@alpha.test",
            "send_at": (timezone.now() + timezone.timedelta(hours=2)).isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["channel"] == "email" and data["subject"] == "Hello"
    assert data["reply_to"] == "help@alpha.test"
    refused = api_a.post(
        "/api/v1/distributions/",
        {
            "project": tenancy.project_a.pk,
            "channel": "email",
            "message": "<p>${link}</p>",
            "subject": "Hello",
        },
        format="json",
    )
    assert refused.status_code == 400
    assert "no opt-out link" in str(refused.json()["error"]["fields"]["message"])


def test_email_settings_api_for_brand_admins_only(tenancy, api_client_for):
    admin = api_client_for(user=tenancy.admin_a)
    response = admin.put(
        "/api/v1/email-settings/",
        {
            "transport": "smtp",
            "smtp_host": "smtp.alpha.test",
            "smtp_port": 2525,
            "smtp_security": "starttls",
            "smtp_username": "relay",
            "smtp_password": "very-secret-password",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    data = response.json()
    assert "smtp_password" not in data and "very-secret" not in str(data)
    assert data["smtp_password_redacted"].endswith("word")
    assert data["weekly_limit"] == 10_000
    refused = admin.put("/api/v1/email-settings/", {"weekly_limit": 5}, format="json")
    assert refused.status_code == 400
    padmin = api_client_for(user=tenancy.project_admin_a)
    assert padmin.get("/api/v1/email-settings/").status_code == 403
    other = api_client_for(user=tenancy.admin_b).get("/api/v1/email-settings/").json()
    assert other["transport"] == "platform" and other["smtp_host"] == ""


def test_email_domains_api_keeps_keys_secret_and_scoped(tenancy, api_client_for):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    admin = api_client_for(user=tenancy.admin_a)
    created = admin.post(
        "/api/v1/email-domains/",
        {"domain": "Alpha.Test", "dkim_selector": "relay", "dkim_private_key": pem},
        format="json",
    )
    assert created.status_code == 201, created.content
    data = created.json()
    assert data["domain"] == "alpha.test" and data["verified"] is False
    assert "PRIVATE KEY" not in str(data)
    bad = admin.post(
        "/api/v1/email-domains/",
        {"domain": "beta.test", "dkim_selector": "s", "dkim_private_key": "nope"},
        format="json",
    )
    assert bad.status_code == 400 and "dkim_private_key" in bad.json()["error"]["fields"]
    other = api_client_for(user=tenancy.admin_b)
    assert other.get(f"/api/v1/email-domains/{data['id']}/").status_code == 404
    assert other.get("/api/v1/email-domains/").json()["results"] == []
    # Adding a domain does not verify it: only the platform operator does.
    with pytest.raises(ValidationError):
        schedule(tenancy.project_a, from_address="news@alpha.test")


def test_preview_renders_the_first_recipient_without_scripts(tenancy, api_a):
    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    response = api_a.post(
        "/api/v1/distributions/preview/",
        {
            "project": tenancy.project_a.pk,
            "channel": "email",
            "subject": "For ${first_name}",
            "message": BODY + "<script>alert(1)</script>",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    email = response.json()["email"]
    assert email["subject"] == "For Ada"
    assert "<script" not in email["html"] and "Hi Ada" in email["html"]
    assert "take the survey (http" in email["text"] and "/o/PREVIEW" in email["text"]
    assert response.json()["participants"] == 1


def test_recurring_email_series_makes_email_runs_with_the_same_rules(tenancy):
    from datetime import UTC, date, datetime, time

    from distributions.series import series_create, series_run_due
    from projects.models import Project
    from tests.factories.projects import ProjectFactory

    lifecycle = ProjectFactory(brand=tenancy.brand_a, kind=Project.Kind.LIFECYCLE)
    add(lifecycle, "Ada", "ada@example.com")
    base = {
        "project": lifecycle,
        "channel": "email",
        "frequency": "daily",
        "time_of_day": time(9, 0),
        "starts_on": date(2030, 1, 1),
        "now": datetime(2030, 1, 1, 0, tzinfo=UTC),
    }
    with pytest.raises(ValidationError) as exc_info:
        series_create(message="<p>${link}</p>", subject="Weekly", **base)
    assert "no opt-out link" in errors_of(exc_info)["message"][0]
    with pytest.raises(ValidationError) as exc_info:
        series_create(message=BODY, subject="Weekly", from_address="x@nowhere.test", **base)
    assert "from_address" in errors_of(exc_info)
    series = series_create(
        message=BODY + "<script>x()</script>", subject="Daily, ${first_name}", **base
    )
    assert "<script" not in series.message
    assert series_run_due(now=datetime(2030, 1, 1, 9, tzinfo=UTC))["runs"] == 1
    run = Distribution.objects.get(series=series)
    assert (run.channel, run.subject, run.from_address) == (
        "email",
        "Daily, ${first_name}",
        "surveys@relay.example",
    )
