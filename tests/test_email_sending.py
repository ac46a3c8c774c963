"""Email distributions sent over real SMTP (aiosmtpd on 127.0.0.1): content, headers, DKIM,
bounces at send time and by DSN, retries, refused logins, hangs, opt-outs, history, metrics."""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import hashlib
import hmac
import io
import socket
import uuid
from datetime import timedelta

from django.utils import timezone

import dkim
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from distributions.email_services import (
    email_account_for,
    email_account_update,
    email_domain_create,
)
from distributions.models import BounceReport, Distribution, EmailDomain, Message
from distributions.providers.base import HandedOver, Outcome, OutgoingEmail, SentQuery
from distributions.providers.registry import channel_provider_for
from distributions.sending import reconcile_range
from distributions.services import distribution_create
from distributions.verp import verp_message_id
from optouts.models import OptOut
from projects.models import SurveyLink
from tests.factories.distributions import DistributionFactory, MessageFactory
from tests.factories.participants import ParticipantFactory, PersonFactory
from tests.smtp_server import SmtpServer

pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:Requiring AUTH")]
S = Message.Status
BODY = (
    '<p>Hello ${first_name} of ${Team},</p><p><a href="${link}">Take the survey</a></p>'
    '<script>steal()</script><p><a href="${opt_out_link}">Unsubscribe</a></p>'
)
BOUNCE_SECRET = "bounce-secret-for-tests"  # noqa: S105 - a test value


def add(project, first, address, **metadata):
    person = PersonFactory(brand=project.brand, first_name=first, email=address)
    return ParticipantFactory(project=project, person=person, metadata=metadata)


@pytest.fixture
def smtp(settings):
    with SmtpServer() as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        settings.EMAIL_TIMEOUT = 2
        settings.RELAY_BOUNCE_SECRET = BOUNCE_SECRET
        yield server


@pytest.fixture
def dkim_key(tenancy):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    domain = email_domain_create(
        brand=tenancy.brand_a, domain="alpha.test", dkim_selector="relay", dkim_private_key=pem
    )
    EmailDomain.objects.filter(pk=domain.pk).update(verified_at=timezone.now())
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def send_now(project, capture, **kwargs):
    values = {"channel": "email", "message": BODY, "subject": "Hi ${first_name}"}
    values.update(kwargs)
    with capture(execute=True):
        distribution = distribution_create(project=project, **values)
    distribution.refresh_from_db()
    return distribution


def parsed(received):
    return email.message_from_bytes(received.data, policy=email.policy.default)


def test_email_is_sent_once_with_piped_values_headers_and_dkim(
    tenancy, smtp, dkim_key, eager_tasks, django_capture_on_commit_callbacks
):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    ada = add(project, "Ada", "ada@example.com", Team="Engines")
    alan = add(project, "Al<b>an", "alan@example.com", Team="Bletchley")
    twin = add(project, "Twin", "ADA@example.com")  # the same address, another case
    bad = add(project, "Bad", "not-an-address")
    none = add(project, "None", "")
    distribution = send_now(
        project,
        django_capture_on_commit_callbacks,
        from_name="Alpha surveys",
        from_address="news@alpha.test",
        reply_to="help@alpha.test",
    )
    assert distribution.status == Distribution.Status.SENT
    rows = {m.participant_id: m for m in distribution.messages.all()}
    assert rows[ada.pk].status == S.SENT and rows[alan.pk].status == S.SENT
    assert rows[twin.pk].status == S.DUPLICATED
    assert (rows[bad.pk].status, rows[bad.pk].status_reason) == (S.SKIPPED, "Invalid email address")
    assert rows[none.pk].status == S.SKIPPED

    received = smtp.messages
    assert sorted(r.rcpt_tos[0] for r in received) == ["ada@example.com", "alan@example.com"]
    by_to = {r.rcpt_tos[0]: r for r in received}
    for participant, address in ((ada, "ada@example.com"), (alan, "alan@example.com")):
        row = rows[participant.pk]
        raw = by_to[address]
        assert verp_message_id(raw.mail_from) == row.pk  # VERP Return-Path names the row
        message = parsed(raw)
        assert message["Message-ID"] == f"<{row.provider_id}>"
        assert message["From"] == "Alpha surveys <news@alpha.test>"
        assert message["Reply-To"] == "help@alpha.test"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert (
            message["List-Unsubscribe"].startswith("<http")
            and "/o/" in (message["List-Unsubscribe"])
        )
        assert dkim.verify(raw.data, dnsfunc=lambda name, timeout=5: dkim_key)
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content()
        link = SurveyLink.objects.get(message=row)
        assert link.url in html and link.url in text
        assert "<script" not in html and "steal()" not in html
    ada_html = parsed(by_to["ada@example.com"]).get_body(("html",)).get_content()
    assert "Hello Ada of Engines" in ada_html
    alan_message = parsed(by_to["alan@example.com"])
    assert "Al&lt;b&gt;an of Bletchley" in alan_message.get_body(("html",)).get_content()
    assert alan_message["Subject"] == "Hi Al<b>an"
    assert "Hello Al<b>an of Bletchley" in alan_message.get_body(("plain",)).get_content()


def test_5xx_at_rcpt_bounces_and_suppresses_4xx_is_retried(
    tenancy, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    gone = add(project, "Gone", "gone@example.com")
    slow = add(project, "Slow", "slow@example.com")
    fine = add(project, "Fine", "fine@example.com")
    smtp.behaviour.rcpt_codes["gone@example.com"] = "550 5.1.1 No such user here"
    smtp.behaviour.rcpt_codes["slow@example.com"] = "451 4.3.0 Try again later"
    original = smtp.handler.handle_RCPT

    async def once_then_ok(server, session, envelope, address, options):
        reply = await original(server, session, envelope, address, options)
        if address == "slow@example.com":
            smtp.behaviour.rcpt_codes.pop(address, None)  # the next attempt is accepted
        return reply

    smtp.handler.handle_RCPT = once_then_ok
    distribution = send_now(project, django_capture_on_commit_callbacks)
    rows = {m.participant_id: m for m in distribution.messages.all()}
    assert rows[gone.pk].status == S.BOUNCED
    assert "550" in rows[gone.pk].status_reason and "No such user" in rows[gone.pk].status_reason
    assert rows[slow.pk].status == S.SENT and rows[slow.pk].attempts == 2  # refused, then sent
    assert rows[fine.pk].status == S.SENT
    assert sorted(r.rcpt_tos[0] for r in smtp.messages) == ["fine@example.com", "slow@example.com"]
    optout = OptOut.objects.get(brand=tenancy.brand_a, channel="email", active=True)
    assert (optout.address, optout.source) == ("gone@example.com", "bounce")
    metrics = _metrics(tenancy, distribution)
    assert metrics["email"] == {"sent": 3, "failed": 0, "opened": 0, "finished": 0, "bounced": 1}

    # The suppressed address is never emailed again.
    again = send_now(project, django_capture_on_commit_callbacks)
    assert again.messages.get(participant=gone).status == S.SKIPPED_OPTOUT


def _metrics(tenancy, distribution):
    from tests.conftest import make_api_client

    response = make_api_client(user=tenancy.admin_a).get(
        f"/api/v1/distributions/{distribution.pk}/"
    )
    assert response.status_code == 200
    return response.json()["metrics"]


def test_relay_refusing_login_fails_with_its_reply(
    tenancy, settings, eager_tasks, django_capture_on_commit_callbacks
):
    with SmtpServer(users={"relay": "right"}) as server:
        email_account_update(
            brand=tenancy.brand_a,
            transport="smtp",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security="none",
            smtp_username="relay",
            smtp_password="wrong",
        )
        tenancy.participant_a.delete()
        add(tenancy.project_a, "Ada", "ada@example.com")
        distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
        assert server.messages == []
    row = distribution.messages.get()
    assert row.status == S.FAILED and "535" in row.status_reason
    assert distribution.status == Distribution.Status.FAILED
    assert "535" in distribution.status_reason


def test_brand_relay_with_the_right_login_sends(
    tenancy, settings, eager_tasks, django_capture_on_commit_callbacks
):
    with SmtpServer(users={"relay": "right"}) as server:
        email_account_update(
            brand=tenancy.brand_a,
            transport="smtp",
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security="none",
            smtp_username="relay",
            smtp_password="right",
        )
        tenancy.participant_a.delete()
        add(tenancy.project_a, "Ada", "ada@example.com")
        distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
        assert [r.rcpt_tos for r in server.messages] == [["ada@example.com"]]
    assert distribution.messages.get().status == S.SENT


def test_a_hanging_server_fails_the_row_and_never_resends(
    tenancy, smtp, settings, eager_tasks, django_capture_on_commit_callbacks
):
    settings.EMAIL_TIMEOUT = 1
    smtp.behaviour.hang_seconds = 3
    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    row = distribution.messages.get()
    assert row.status == S.FAILED and row.attempts == 1
    assert "not sent again" in row.status_reason


def test_dsn_marks_bounced_and_suppresses(
    tenancy, smtp, client, eager_tasks, django_capture_on_commit_callbacks
):
    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    row = distribution.messages.get()
    verp = smtp.messages[0].mail_from
    dsn = (
        f"From: MAILER-DAEMON@mx.example.com\r\nTo: {verp}\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        "Final-Recipient: rfc822; ada@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{row.provider_id}>\r\n"
        "\r\n--B--\r\n"
    ).encode()
    url = "/webhooks/email/bounces/"
    assert client.post(url, dsn, content_type="message/rfc822").status_code == 403
    forged = client.post(
        url, dsn, content_type="message/rfc822", headers={"X-Relay-Signature": "sha256=00"}
    )
    assert forged.status_code == 403
    row.refresh_from_db()
    assert row.status == S.SENT

    signature = hmac.new(BOUNCE_SECRET.encode(), dsn, hashlib.sha256).hexdigest()
    response = client.post(
        url,
        dsn,
        content_type="message/rfc822",
        headers={"X-Relay-Signature": f"sha256={signature}"},
    )
    assert response.status_code == 202 and response.json()["action"] == "bounced"
    row.refresh_from_db()
    assert row.status == S.BOUNCED and "5.1.1" in row.status_reason
    assert row.events.filter(status=S.BOUNCED, source="bounce").count() == 1
    optout = OptOut.objects.get(brand=tenancy.brand_a, channel="email", active=True)
    assert (optout.address, optout.source) == ("ada@example.com", "bounce")
    page = client
    page.force_login(tenancy.admin_a)
    listing = page.get("/optouts/?state=active")
    assert listing.status_code == 200 and b"ada@example.com" in listing.content

    # Malformed: stored, not acted on.
    junk = b"this is not a delivery status notification"
    response = client.post(
        url, junk, content_type="text/plain", headers={"X-Relay-Bounce-Token": BOUNCE_SECRET}
    )
    assert response.status_code == 202 and response.json()["action"] == "malformed"
    assert BounceReport.objects.filter(action="malformed", raw__contains="not a delivery").exists()


def test_one_click_unsubscribe_opts_out_the_email(
    tenancy, smtp, client, eager_tasks, django_capture_on_commit_callbacks
):
    tenancy.participant_a.delete()
    ada = add(tenancy.project_a, "Ada", "ada@example.com")
    send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    header = parsed(smtp.messages[0])["List-Unsubscribe"]
    url = header.strip("<>").split(">")[0]
    path = url.split("://", 1)[1].split("/", 1)[1]
    client.handler.enforce_csrf_checks = True
    response = client.post(
        "/" + path,
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    optout = OptOut.objects.get(brand=tenancy.brand_a, channel="email", active=True)
    assert (optout.address, optout.source) == ("ada@example.com", "link")
    again = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    assert again.messages.get(participant=ada).status == S.SKIPPED_OPTOUT
    assert len(smtp.messages) == 1


def test_history_csv_has_an_email_column(
    tenancy, smtp, api_a, eager_tasks, django_capture_on_commit_callbacks
):
    tenancy.participant_a.delete()
    person = PersonFactory(
        brand=tenancy.brand_a, first_name="Ada", email="ada@example.com", phone="+14155550101"
    )
    ParticipantFactory(project=tenancy.project_a, person=person)
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    response = api_a.get(f"/api/v1/distributions/{distribution.pk}/history.csv")
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0][:6] == [
        "PersonID",
        "First name",
        "Last name",
        "Phone number",
        "Email",
        "User name",
    ]
    assert lines[1][3:5] == ["+14155550101", "ada@example.com"] and lines[1][7] == "Sent"


def test_thank_you_goes_when_a_recipient_completes(
    tenancy, smtp, client, eager_tasks, django_capture_on_commit_callbacks
):
    from django.http import QueryDict

    from surveys.answers import form_stamp
    from surveys.services import link_scope, question_create, response_submit_link

    tenancy.participant_a.delete()
    ada = add(tenancy.project_a, "Ada", "ada@example.com")
    score = question_create(project=tenancy.project_a, kind="rating", text="Score?", required=True)
    invite = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    thanks = send_now(
        tenancy.project_a,
        django_capture_on_commit_callbacks,
        kind="thank_you",
        trigger="completion",
        subject="Thank you ${first_name}",
        message='<p>Thanks!</p><a href="${opt_out_link}">out</a>',
    )
    assert thanks.status == Distribution.Status.IN_PROGRESS
    assert len(smtp.messages) == 1
    link = SurveyLink.objects.get(message__distribution=invite)
    data = QueryDict(mutable=True)
    data[score.field_name] = "5"
    stamp = form_stamp(link_scope(link.token), now=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        response_submit_link(token=link.token, data=data, stamp=stamp)
    received = smtp.wait_for(2, timeout=10)
    assert [parsed(r)["Subject"] for r in received][1] == "Thank you Ada"
    assert thanks.messages.get(participant=ada).status == S.SENT
    thanks.refresh_from_db()
    assert thanks.status == Distribution.Status.IN_PROGRESS  # until it is stopped


def test_unreachable_relay_is_retried_then_failed_with_the_reason(
    tenancy, settings, monkeypatch, eager_tasks, django_capture_on_commit_callbacks
):
    from distributions import sending
    from tests.smtp_server import _free_port

    # Short backoff so that every attempt runs within the test (the counts stay the real ones).
    monkeypatch.setattr(sending, "RETRY_BASE_SECONDS", 0.01)
    monkeypatch.setattr(sending, "RETRY_MAX_SECONDS", 0.02)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = _free_port()  # nothing listens there
    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    row = distribution.messages.get()
    assert row.status == S.FAILED
    assert row.status_reason.startswith("Not sent after 6 attempts: cannot reach the mail server")
    assert row.attempts == 6
    assert distribution.status == Distribution.Status.FAILED


def test_weekly_limit_is_checked_again_at_start(
    tenancy, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    from distributions.models import EmailAccount
    from distributions.services import distribution_start

    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    add(tenancy.project_a, "Alan", "alan@example.com")
    later = distribution_create(
        project=tenancy.project_a,
        channel="email",
        subject="Hi",
        message=BODY,
        send_at=timezone.now() + timezone.timedelta(minutes=5),
    )
    EmailAccount.objects.create(brand=tenancy.brand_a, weekly_limit=1)  # lowered meanwhile
    Distribution.objects.filter(pk=later.pk).update(send_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        distribution_start(distribution_id=later.pk)
    later.refresh_from_db()
    assert later.status == Distribution.Status.FAILED
    assert "allowed to send 1 emails per week" in later.status_reason
    assert smtp.messages == []


def test_dsn_variants_are_stored_and_only_hard_bounces_act(
    tenancy, smtp, client, eager_tasks, django_capture_on_commit_callbacks
):
    from distributions.verp import verp_address

    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    row = distribution.messages.get()

    def dsn(to: str, action: str, status: str) -> bytes:
        return (
            f"To: {to}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.com\r\n\r\n"
            f"Final-Recipient: rfc822; ada@example.com\r\nAction: {action}\r\n"
            f"Status: {status}\r\n\r\n--B--\r\n"
        ).encode()

    def post(body: bytes) -> str:
        response = client.post(
            "/webhooks/email/bounces/",
            body,
            content_type="message/rfc822",
            headers={"X-Relay-Bounce-Token": BOUNCE_SECRET},
        )
        assert response.status_code == 202
        return response.json()["action"]

    assert post(dsn(verp_address(row.pk), "delayed", "4.4.1")) == "soft"
    forged = verp_address(row.pk).replace("bounces+", "bounces+1")
    assert post(dsn(forged, "failed", "5.1.1")) == "unmatched"
    assert post(dsn(verp_address(row.pk + 999), "failed", "5.1.1")) == "unmatched"
    row.refresh_from_db()
    assert row.status == S.SENT
    assert not OptOut.objects.filter(channel="email").exists()
    assert BounceReport.objects.count() == 3


def test_other_backends_receive_the_same_message(
    tenancy, mailoutbox, eager_tasks, django_capture_on_commit_callbacks
):
    """Without SMTP (the development default writes files; tests use locmem) the message goes
    through the backend's ``send_messages`` with the same headers."""
    tenancy.participant_a.delete()
    add(tenancy.project_a, "Ada", "ada@example.com")
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    row = distribution.messages.get()
    assert row.status == S.SENT
    [sent] = mailoutbox
    assert sent.to == ["ada@example.com"] and sent.subject == "Hi Ada"
    assert sent.extra_headers["Message-ID"] == f"<{row.provider_id}>"
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Hello Ada" in sent.alternatives[0][0]


def _outgoing(message_id, to="ada@example.com", lease="lease-1"):
    return OutgoingEmail(
        message_id=message_id,
        to=to,
        from_name="",
        from_address="surveys@alpha.test",
        reply_to="",
        subject="Hi",
        html="<p>Hi</p>",
        text="Hi\n.leading dot stays",
        unsubscribe_url="https://relay.test/o/x/",
        return_path=f"bounce+{message_id}@relay.test",
        lease=lease,
    )


def _query(message_id, lease="lease-1"):
    return SentQuery(message_id=message_id, to="", body="", lease=lease, since=timezone.now())


def test_the_journal_holds_a_message_before_the_server_can_take_it(tenancy, smtp):
    """A worker killed between the server's commit and its reply must find the message in
    the journal, pending (reconciliation then fails the row "may have been delivered" and never
    sends it again); once the 250 is read, the entry is confirmed (reconciliation: Sent)."""
    provider = channel_provider_for(email_account_for(tenancy.brand_a), "email")
    seen_at_commit = []
    smtp.behaviour.on_data = lambda envelope: seen_at_commit.append(
        provider.find_handed_over(queries=[_query(41)], sender="")
    )
    try:
        (result,) = provider.send_window([_outgoing(41)])
        after = provider.find_handed_over(queries=[_query(41)], sender="")
    finally:
        provider.close()
    assert result.outcome == Outcome.ACCEPTED
    assert seen_at_commit == [HandedOver(sent={}, in_doubt={41: result.provider_id})]
    assert after == HandedOver(sent={41: result.provider_id}, in_doubt={})
    plain = parsed(smtp.messages[0]).get_body(("plain",)).get_content()
    assert plain.splitlines()[-1] == ".leading dot stays"  # dot-stuffed on the wire, not lost


def test_a_message_refused_at_data_leaves_no_journal_entry(tenancy, smtp):
    provider = channel_provider_for(email_account_for(tenancy.brand_a), "email")
    smtp.behaviour.data_reply = "554 5.7.1 Message rejected"
    try:
        (result,) = provider.send_window([_outgoing(42)])
        found = provider.find_handed_over(queries=[_query(42)], sender="")
    finally:
        provider.close()
    assert (result.outcome, result.bounced) == (Outcome.REJECTED, True)
    assert found == HandedOver(sent={}, in_doubt={}) and smtp.messages == []


def test_reconciliation_reads_the_journal_confirmed_sent_pending_failed_none_retried(
    tenancy, smtp, settings
):
    """A dead worker's rows: the one whose 250 was confirmed is Sent; the one handed over
    without an answer (its connection dropped after the dot: the server has it) is Failed
    "may have been delivered" and never sent again; the one never handed over is sent again."""
    distribution = DistributionFactory(
        project=tenancy.project_a, channel="email", subject="Hi", status="in_progress"
    )
    lease = f"dead-{uuid.uuid4().hex[:16]}"
    long_ago = timezone.now() - timedelta(seconds=settings.RELAY_SEND_LEASE_SECONDS + 5)
    confirmed, pending, never = (
        MessageFactory(
            distribution=distribution,
            address=f"{name}@example.com",
            status=S.SENDING,
            lease=lease,
            leased_at=long_ago,
        )
        for name in ("ada", "bob", "cy")
    )
    provider = channel_provider_for(email_account_for(tenancy.brand_a), "email")
    try:
        (accepted,) = provider.send_window([_outgoing(confirmed.pk, confirmed.address, lease)])

        def drop_the_connection(envelope):  # the server has the message; its reply is lost
            provider.backend.connection.sock.shutdown(socket.SHUT_RDWR)

        smtp.behaviour.on_data = drop_the_connection
        (unknown,) = provider.send_window([_outgoing(pending.pk, pending.address, lease)])
    finally:
        provider.close()
    assert (accepted.outcome, unknown.outcome) == (Outcome.ACCEPTED, Outcome.REJECTED)
    # The worker died before recording either result: reconciliation settles all three.
    provider = channel_provider_for(email_account_for(tenancy.brand_a), "email")
    assert reconcile_range(distribution=distribution, provider=provider) == 3
    for row in (confirmed, pending, never):
        row.refresh_from_db()
    assert (confirmed.status, confirmed.provider_id) == (S.SENT, accepted.provider_id)
    assert pending.status == S.FAILED and pending.error_code == "unknown"
    assert "it may have been delivered; not sent again" in pending.status_reason
    assert pending.events.filter(status=S.FAILED, source="reconcile").count() == 1
    assert (never.status, never.lease, never.attempts) == (S.PENDING, "", 0)
    # Asked again (another recovery pass), nothing changes: the in-doubt row stays Failed.
    assert reconcile_range(distribution=distribution, provider=provider) == 0
    assert sorted(r.rcpt_tos[0] for r in smtp.messages) == ["ada@example.com", "bob@example.com"]


class CountingConnection(redis.Connection):
    """A Redis connection that counts what it writes to the socket: one per round trip."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        type(self).sent += 1
        return super().send_packed_command(command, check_health)


def test_confirmations_ride_with_the_next_pending_entry_no_extra_round_trip(
    tenancy, smtp, settings, monkeypatch
):
    """Each 250 is confirmed in the same Redis round trip as the next message's pending entry;
    the last one at the end of the window: a window of n messages costs n + 1 round trips."""
    if not settings.REDIS_URL:
        pytest.skip("set REDIS_URL: the journal's pipelining is Redis's")
    from distributions.providers import email as email_provider

    pool = redis.ConnectionPool.from_url(settings.REDIS_URL, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # the connection's handshake is once per process, not per window
    monkeypatch.setattr(email_provider, "_redis", client)
    monkeypatch.setattr(CountingConnection, "sent", 0)
    lease = f"window-{uuid.uuid4().hex[:16]}"
    window = [_outgoing(100 + n, f"r{n}@example.com", lease) for n in range(5)]
    provider = channel_provider_for(email_account_for(tenancy.brand_a), "email")
    try:
        results = provider.send_window(window)
        round_trips = CountingConnection.sent
        found = provider.find_handed_over(
            queries=[_query(m.message_id, lease) for m in window], sender=""
        )
    finally:
        provider.close()
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    assert round_trips == len(window) + 1
    assert found == HandedOver(sent={r.message_id: r.provider_id for r in results}, in_doubt={})
    assert CountingConnection.sent == round_trips + 1  # the read; close() had nothing to write


def test_a_test_email_goes_to_the_tester_rendered_for_a_participant(
    tenancy, smtp, eager_tasks, django_capture_on_commit_callbacks
):
    """The email test message (issue 22): one email to the tester's address, with the
    chosen participant's fields, through the same SMTP path; the original counts nothing."""

    from distributions.copies import distribution_test_send

    project = tenancy.project_a
    tenancy.participant_a.delete()
    add(project, "Ada", "ada@example.com")
    grace = add(project, "Grace", "grace@example.com")
    original = distribution_create(
        project=project,
        channel="email",
        message=BODY,
        subject="Hi ${first_name}",
        send_at=timezone.now() + timedelta(days=1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        test = distribution_test_send(
            original=original, address="me@alpha.example", participant=grace
        )
    (received,) = smtp.messages
    assert received.rcpt_tos == ["me@alpha.example"]
    assert parsed(received)["Subject"] == "Hi Grace"
    assert test.messages.get().status == S.SENT
    assert not original.messages.exists()
