"""Email through real parts: Redis broker, real Celery worker processes, PostgreSQL, and a real
SMTP server on 127.0.0.1 (aiosmtpd). Integration: needs REDIS_URL (and PostgreSQL)."""

from __future__ import annotations

import base64
import email
import email.policy
import signal
import time
from collections import Counter

from django.utils import timezone

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from distributions.models import Distribution, EmailDomain, Message
from distributions.services import distribution_create
from distributions.verp import verp_message_id
from participants.models import Participant, Person
from tests.progress import KillClock, until, wait_until_finished
from tests.smtp_server import SmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BODY = (
    '<p>Hello ${first_name} from ${Team}</p><p><a href="${link}">Survey</a></p>'
    '<p><a href="${opt_out_link}">Unsubscribe</a></p>'
)


def populate(project, count: int) -> list[str]:
    addresses = [f"r{i}@example.com" for i in range(count)]
    people = Person.objects.bulk_create(
        [
            Person(brand=project.brand, person_id=f"E{i}", first_name=f"N{i}", email=address)
            for i, address in enumerate(addresses)
        ],
        batch_size=1000,
    )
    Participant.objects.bulk_create(
        [
            Participant(project=project, person=person, metadata={"Team": f"T{i % 7}"})
            for i, person in enumerate(people)
        ],
        batch_size=1000,
    )
    return addresses


def dkim_domain(brand) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    EmailDomain.objects.create(
        brand=brand,
        domain="alpha.test",
        verified_at=timezone.now(),
        dkim_selector="relay",
        dkim_private_key=pem,
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def smtp_env(server, **extra) -> dict:
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(server.port),
        "EMAIL_TIMEOUT": "10",
        **extra,
    }


def test_1000_emails_arrive_once_each_with_values_headers_and_dkim(start_worker, tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    addresses = populate(project, 1000)
    record = dkim_domain(tenancy.brand_a)
    with SmtpServer() as server:
        start_worker(concurrency=2, extra_env=smtp_env(server))
        distribution = distribution_create(
            project=project,
            channel="email",
            subject="Survey for ${first_name}",
            message=BODY,
            from_name="Alpha",
            from_address="surveys@alpha.test",
        )
        wait_until_finished(distribution)
        received = server.messages
    assert distribution.status == Distribution.Status.SENT, distribution.status_reason
    per_address = Counter(r.rcpt_tos[0] for r in received)
    assert set(per_address) == set(addresses)
    assert set(per_address.values()) == {1}
    rows = {
        m.pk: m for m in Message.objects.filter(distribution=distribution).select_related("person")
    }
    assert {m.status for m in rows.values()} == {Message.Status.SENT}
    for raw in received:
        row = rows[verp_message_id(raw.mail_from)]
        message = email.message_from_bytes(raw.data, policy=email.policy.default)
        number = row.person.person_id.removeprefix("E")
        assert raw.rcpt_tos == [row.address] and message["To"] == row.address
        assert message["Subject"] == f"Survey for N{number}"
        assert message["Message-ID"] == f"<{row.provider_id}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = message.get_body(("html",)).get_content()
        assert f"Hello N{number} from T{int(number) % 7}" in html
        assert dkim.verify(raw.data, dnsfunc=lambda name, timeout=5: record)


def test_worker_killed_mid_send_loses_and_duplicates_no_email(start_worker, tenancy):
    """A worker SIGKILLed mid-send: no address receives a message twice, and no row the server
    never received is Sent. A message the dead worker had handed over without reading the
    answer (its journal entry pending, not confirmed) cannot be known either way: its row is
    Failed "it may have been delivered; not sent again" (one at most per SMTP connection the
    kill cut); every other row is Sent, received once."""
    project = tenancy.project_a
    tenancy.participant_a.delete()
    addresses = populate(project, 4000)
    kills, concurrency = 1, 2
    with SmtpServer() as server:
        server.behaviour.hang_seconds = 0.003  # slow enough to be killed mid-distribution
        env = smtp_env(
            server,
            RELAY_SEND_LEASE_SECONDS="4",
            RELAY_PROVIDER_TIMEOUT_SECONDS="2",
            EMAIL_TIMEOUT="2",
        )
        worker = start_worker(concurrency=concurrency, extra_env=env)
        distribution = distribution_create(
            project=project, channel="email", subject="Hi ${first_name}", message=BODY
        )
        clock = KillClock(lambda: server.count)
        until(lambda: server.count >= 800, progress=lambda: server.count, describe=worker.output)
        worker.kill(signal.SIGKILL)
        killed_at = clock.killed(distribution)
        assert killed_at < 4000, "the distribution finished before the worker could be killed"
        worker = start_worker(concurrency=concurrency, extra_env=env)
        clock.wait_recovered(ready=time.monotonic(), describe=worker.output)
        wait_until_finished(distribution)
        received = server.messages
    assert distribution.status == Distribution.Status.SENT, distribution.status_reason
    per_address = Counter(r.rcpt_tos[0] for r in received)
    duplicates = {address: n for address, n in per_address.items() if n != 1}
    assert duplicates == {}
    rows = Message.objects.filter(distribution=distribution)
    fields = ("address", "status", "status_reason", "attempts")
    sent = set(rows.filter(status=Message.Status.SENT).values_list("address", flat=True))
    in_doubt = set(
        rows.filter(
            status=Message.Status.FAILED,
            status_reason__contains="it may have been delivered; not sent again",
        ).values_list("address", flat=True)
    )
    # Every row is Sent or in doubt; what became of any other is shown.
    others = rows.exclude(address__in=sent | in_doubt)
    assert not others.exists(), list(others.values_list(*fields))
    # A row the server never received is never Sent (it is in doubt, or was sent again).
    missing = set(addresses) - set(per_address)
    assert not missing & sent, list(rows.filter(address__in=missing & sent).values_list(*fields))
    assert sent <= set(per_address)
    # In doubt: at most the message in flight on each connection the kill cut.
    assert len(in_doubt) <= kills * concurrency, list(
        rows.filter(address__in=in_doubt).values_list(*fields)
    )
    assert len(sent) + len(in_doubt) == 4000
    sent_ids = rows.filter(status=Message.Status.SENT).values_list("provider_id", flat=True)
    assert len(set(sent_ids)) == len(sent)
