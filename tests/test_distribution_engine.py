"""The distribution engine through the outbox provider: schedule, claim, materialise, send."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

import pytest

from distributions.models import Distribution, Message, MessageEvent, OutboxMessage
from distributions.services import (
    distribution_cancel,
    distribution_claim,
    distribution_create,
    distribution_materialise,
    distribution_start,
    distribution_update,
    distributions_bulk_update,
    message_status_ingest,
)
from optouts.links import opt_out_token_read
from projects.models import Project, SurveyLink
from projects.services import project_change_stage
from tests.factories.distributions import (
    DistributionFactory,
    OptOutFactory,
    ProviderAccountFactory,
)
from tests.factories.participants import ParticipantFactory, PersonFactory

pytestmark = pytest.mark.django_db
S = Message.Status


def add(project, first, phone, **extra):
    person = PersonFactory(brand=project.brand, first_name=first, phone=phone, **extra)
    return ParticipantFactory(project=project, person=person)


@pytest.fixture
def crowd(tenancy):
    project = tenancy.project_a
    tenancy.participant_a.delete()
    return {
        "ada": add(project, "Ada", "+14155550101"),
        "alan": add(project, "Alan", "+447911123456"),
        "twin": add(project, "Twin", "+14155550101"),  # same phone as Ada
        "nophone": add(project, "Nemo", ""),
        "optout": add(project, "Olive", "+14155550109"),
    }


def send_now(project, django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        return distribution_create(
            project=project, message=kwargs.pop("message", "Hi ${first_name} ${link}"), **kwargs
        )


def test_send_now_materialises_sends_and_delivers(
    tenancy, crowd, eager_tasks, django_capture_on_commit_callbacks
):
    OptOutFactory(brand=tenancy.brand_a, address="+14155550109")
    OptOutFactory(brand=tenancy.brand_b, address="+447911123456")  # another brand: no effect
    distribution = send_now(tenancy.project_a, django_capture_on_commit_callbacks)
    distribution.refresh_from_db()
    rows = {m.participant_id: m for m in distribution.messages.all()}
    assert rows[crowd["ada"].pk].status == S.DELIVERED
    assert rows[crowd["alan"].pk].status == S.DELIVERED
    assert rows[crowd["twin"].pk].status == S.DUPLICATED
    assert rows[crowd["nophone"].pk].status == S.SKIPPED
    assert rows[crowd["optout"].pk].status == S.SKIPPED_OPTOUT
    assert distribution.status == Distribution.Status.SENT
    assert "skipped" in distribution.status_reason

    ada = rows[crowd["ada"].pk]
    link = SurveyLink.objects.get(message=ada)
    assert ada.body == f"Hi Ada {link.url}" and ada.segments == 1
    assert len(link.token) == 10 and link.participant_id == crowd["ada"].pk
    assert OutboxMessage.objects.filter(brand=tenancy.brand_a).count() == 2
    statuses = list(ada.events.values_list("status", flat=True))
    assert statuses[0] == S.SENT and S.DELIVERED in statuses
    assert list(rows[crowd["twin"].pk].events.values_list("status", flat=True)) == [S.DUPLICATED]


def test_materialisation_marks_opted_out_numbers_of_this_brand_only(tenancy, crowd):
    OptOutFactory(brand=tenancy.brand_a, address="+14155550109")
    OptOutFactory(brand=tenancy.brand_b, address="+447911123456")
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    distribution_materialise(distribution=distribution)
    statuses = dict(distribution.messages.values_list("participant_id", "status"))
    assert statuses[crowd["optout"].pk] == S.SKIPPED_OPTOUT
    assert statuses[crowd["alan"].pk] == S.PENDING
    assert statuses[crowd["ada"].pk] == S.PENDING
    assert statuses[crowd["twin"].pk] == S.DUPLICATED


def test_materialisation_is_idempotent(tenancy, crowd):
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    first = distribution_materialise(distribution=distribution)
    again = distribution_materialise(distribution=distribution)
    assert first == again and first["total"] == 5
    assert MessageEvent.objects.filter(message__distribution=distribution).count() == 2


def test_claim_happens_once(tenancy):
    distribution = DistributionFactory(project=tenancy.project_a)
    assert distribution_claim(distribution_id=distribution.pk) is True
    assert distribution_claim(distribution_id=distribution.pk) is False


def test_future_distribution_is_not_claimed_early(tenancy):
    distribution = DistributionFactory(
        project=tenancy.project_a, send_at=timezone.now() + timedelta(hours=1)
    )
    assert distribution_claim(distribution_id=distribution.pk) is False


def test_scheduling_refuses_an_inactive_project(tenancy):
    project_change_stage(project=tenancy.project_a, stage=Project.Stage.PAUSED)
    with pytest.raises(ValidationError) as excinfo:
        distribution_create(project=tenancy.project_a, message="Hi")
    assert "must be activated to send text messages" in excinfo.value.message_dict["project"][0]
    assert not Distribution.objects.exists()


def test_due_distribution_of_a_paused_project_fails_with_empty_history(tenancy, crowd):
    distribution = distribution_create(
        project=tenancy.project_a, message="Hi", send_at=timezone.now() + timedelta(minutes=5)
    )
    project_change_stage(project=tenancy.project_a, stage=Project.Stage.PAUSED)
    Distribution.objects.filter(pk=distribution.pk).update(send_at=timezone.now())
    distribution_start(distribution_id=distribution.pk)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.FAILED
    assert "must be activated" in distribution.status_reason
    assert not distribution.messages.exists()


def test_alphanumeric_sender_needs_an_opt_out_link(tenancy):
    with pytest.raises(ValidationError) as excinfo:
        distribution_create(project=tenancy.project_a, message="Hi ${link}", sender="ACME")
    assert "${opt_out_link}" in excinfo.value.message_dict["message"][0]
    ok = distribution_create(
        project=tenancy.project_a,
        message="Hi ${link} stop: ${opt_out_link}",
        sender="ACME",
        send_at=timezone.now() + timedelta(days=1),
    )
    assert ok.sender == "ACME"


def test_opt_out_link_is_signed_per_message(
    tenancy, crowd, eager_tasks, django_capture_on_commit_callbacks
):
    distribution = send_now(
        tenancy.project_a, django_capture_on_commit_callbacks, message="Bye ${opt_out_link}"
    )
    message = distribution.messages.get(participant=crowd["ada"])
    token = message.body.rsplit("/", 1)[1]
    assert opt_out_token_read(token) == message.pk
    assert opt_out_token_read(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert opt_out_token_read("") is None and opt_out_token_read("!!!") is None


def test_opt_out_arriving_after_materialisation_wins(tenancy, crowd, eager_tasks):
    from distributions.sending import send_chunk

    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    distribution_materialise(distribution=distribution)
    OptOutFactory(brand=tenancy.brand_a, address="+447911123456")  # Alan opts out now
    ids = list(distribution.messages.values_list("pk", flat=True))
    send_chunk(distribution_id=distribution.pk, first_id=min(ids), last_id=max(ids))
    alan = distribution.messages.get(participant=crowd["alan"])
    assert alan.status == S.SKIPPED_OPTOUT and alan.provider_id == ""
    assert not OutboxMessage.objects.filter(to="+447911123456").exists()


def test_status_only_moves_forward(tenancy):
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    message = Message.objects.create(
        distribution=distribution,
        address="+14155550101",
        status=S.SENT,
        provider_id="SM1",
        status_changed_at=timezone.now(),
    )
    assert (
        message_status_ingest(provider="twilio", provider_id="SM1", provider_status="delivered")
        is True
    )
    assert (
        message_status_ingest(provider="twilio", provider_id="SM1", provider_status="sent") is False
    )
    assert (
        message_status_ingest(provider="twilio", provider_id="SM1", provider_status="delivered")
        is False
    )
    assert (
        message_status_ingest(provider="twilio", provider_id="SM1", provider_status="undelivered")
        is False
    )
    assert (
        message_status_ingest(provider="twilio", provider_id="nope", provider_status="delivered")
        is False
    )
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert list(message.events.values_list("status", flat=True)) == [S.DELIVERED]


def test_carrier_failures_map_to_failed_or_blocked(tenancy):
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    person = PersonFactory(brand=tenancy.brand_a, phone="+14155550177")
    participant = ParticipantFactory(project=tenancy.project_a, person=person)
    filtered = Message.objects.create(
        distribution=distribution,
        address="+14155550102",
        status=S.SENT,
        provider_id="SMa",
        status_changed_at=timezone.now(),
    )
    unsubscribed = Message.objects.create(
        distribution=distribution,
        participant=participant,
        person=person,
        address=person.phone,
        status=S.SENT,
        provider_id="SMb",
        status_changed_at=timezone.now(),
    )
    message_status_ingest(
        provider="twilio", provider_id="SMa", provider_status="undelivered", error_code="30003"
    )
    message_status_ingest(
        provider="twilio", provider_id="SMb", provider_status="failed", error_code="21610"
    )
    filtered.refresh_from_db()
    unsubscribed.refresh_from_db()
    assert filtered.status == S.FAILED and filtered.error_code == "30003"
    assert unsubscribed.status == S.BLOCKED
    person.refresh_from_db()
    assert person.metadata["Opted out"] == "Yes"
    assert person.optouts.get().source == "provider"


def test_edit_and_cancel_scheduled(tenancy):
    later = timezone.now() + timedelta(days=1)
    distribution = distribution_create(project=tenancy.project_a, message="Hi", send_at=later)
    distribution_update(distribution=distribution, message="Hello ${first_name}")
    with pytest.raises(ValidationError) as excinfo:
        distribution_update(distribution=distribution, channel="email")
    assert "channel" in excinfo.value.message_dict
    distribution_cancel(distribution=distribution)
    assert distribution.status == Distribution.Status.CANCELLED
    with pytest.raises(ValidationError, match="Only scheduled distributions can be edited"):
        distribution_update(distribution=distribution, message="again")


def test_bulk_edit_is_all_or_nothing(tenancy):
    later = timezone.now() + timedelta(days=1)
    one = distribution_create(project=tenancy.project_a, message="One", send_at=later)
    two = distribution_create(project=tenancy.project_a, message="Two", send_at=later)
    new_time = later + timedelta(hours=2)
    distributions_bulk_update(distributions=[one, two], send_at=new_time)
    assert {d.send_at for d in Distribution.objects.all()} == {new_time}
    distribution_cancel(distribution=two)
    with pytest.raises(ValidationError):
        distributions_bulk_update(distributions=[one, two], message="Changed")
    one.refresh_from_db()
    assert one.message == "One"


def test_cancel_in_progress_interrupts_and_keeps_what_was_sent(tenancy, crowd):
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    distribution_materialise(distribution=distribution)
    distribution.messages.filter(participant=crowd["ada"]).update(status=S.SENT)
    distribution_cancel(distribution=distribution)
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.INTERRUPTED
    assert distribution.messages.get(participant=crowd["ada"]).status == S.SENT
    assert distribution.messages.get(participant=crowd["alan"]).status == S.SKIPPED


def test_reminder_targets_the_invites_recipients_only(
    tenancy, crowd, eager_tasks, django_capture_on_commit_callbacks
):
    invite = send_now(
        tenancy.project_a,
        django_capture_on_commit_callbacks,
        conditions=[{"criterion": "first_name", "operator": "is", "value": "Ada"}],
    )
    reminder = send_now(
        tenancy.project_a,
        django_capture_on_commit_callbacks,
        kind="reminder",
        parent=invite,
        message="Reminder ${link}",
    )
    assert list(reminder.messages.values_list("participant_id", flat=True)) == [crowd["ada"].pk]


def test_deleting_a_participant_keeps_its_history(tenancy, crowd):
    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    distribution_materialise(distribution=distribution)
    message = distribution.messages.get(participant=crowd["ada"])
    crowd["ada"].person.delete()
    message.refresh_from_db()
    assert (message.participant_id, message.person_id) == (None, None)
    assert message.address == "+14155550101"


def test_a_window_whose_rows_were_taken_back_is_not_sent(tenancy, crowd, eager_tasks, settings):
    """Recovery took back a row whose lease looked stale: the slow task must not send it."""
    from distributions.providers.outbox import OutboxProvider
    from distributions.sending import _reclaim, reconcile_range

    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    distribution_materialise(distribution=distribution)
    long_ago = timezone.now() - timedelta(seconds=settings.RELAY_SEND_LEASE_SECONDS + 5)
    rows = list(distribution.messages.filter(status=S.PENDING).order_by("pk"))
    Message.objects.filter(pk__in=[r.pk for r in rows]).update(
        status=S.SENDING, lease="slow", leased_at=long_ago
    )
    provider = OutboxProvider(ProviderAccountFactory.build(brand=tenancy.brand_a))
    # The slow task refreshes its first row just before recovery looks; recovery takes the rest.
    assert [r.pk for r in _reclaim(rows[:1], "slow")] == [rows[0].pk]
    assert reconcile_range(distribution=distribution, provider=provider) == len(rows) - 1
    assert _reclaim(rows, "slow") == rows[:1]
    assert Message.objects.get(pk=rows[0].pk).status == S.SENDING
    assert all(Message.objects.get(pk=r.pk).status == S.PENDING for r in rows[1:])


def test_person_page_lists_their_messages(
    tenancy, crowd, eager_tasks, django_capture_on_commit_callbacks, page_client_for
):
    send_now(tenancy.project_a, django_capture_on_commit_callbacks, message="Hello ${first_name}")
    client = page_client_for(tenancy.viewer_a)
    page = client.get(f"/people/{crowd['ada'].person.pk}/").content.decode()
    assert 'id="person-messages"' in page and "Hello Ada" in page and "Delivered" in page
    other = client.get(f"/people/{crowd['nophone'].person.pk}/").content.decode()
    assert "Skipped" in other and "Hello Ada" not in other


def test_a_slow_sender_is_paced_at_its_rate_never_above_it(
    tenancy, eager_tasks, django_capture_on_commit_callbacks
):
    """A sender allowed 2 messages a second: its full bucket (one second of the rate) goes at
    once, then a message whenever a token is whole; over any interval of t seconds it sends at
    most 2 t + 2 messages (the token bucket's bound), and no worker sleeps meanwhile."""
    from distributions.sending import SEND_WINDOW, window_size
    from tests.factories.distributions import ProviderAccountFactory

    project = tenancy.project_a
    tenancy.participant_a.delete()
    for i in range(6):
        add(project, f"P{i}", f"+1415555{2000 + i:04d}")
    account = ProviderAccountFactory(
        brand=tenancy.brand_a, provider="outbox", messages_per_second=2
    )
    assert window_size(account) == 2
    assert window_size(ProviderAccountFactory.build(messages_per_second=10_000)) == SEND_WINDOW
    distribution = send_now(project, django_capture_on_commit_callbacks, message="Hi")
    distribution.refresh_from_db()
    assert distribution.status == Distribution.Status.SENT
    sent = sorted(distribution.messages.values_list("sent_at", flat=True))
    assert len(sent) == 6
    # A window's rows are recorded with one timestamp: the first is the full bucket.
    moments = sorted(set(sent))
    assert [sent.count(moment) for moment in moments] == [2, 1, 1, 1, 1]
    # Recorded after the provider answered: a few milliseconds of jitter are allowed.
    for i, first in enumerate(sent):
        for j in range(i + 1, len(sent)):
            seconds = (sent[j] - first).total_seconds()
            assert j - i + 1 <= 2 * (seconds + 0.05) + 2, (i, j, seconds)


def test_send_distribution_command_sends_in_the_foreground(tenancy, crowd):
    from io import StringIO

    from django.core.management import CommandError, call_command

    distribution = DistributionFactory(project=tenancy.project_a, status="in_progress")
    distribution_materialise(distribution=distribution)
    out = StringIO()
    call_command("send_distribution", str(distribution.pk), stdout=out)
    distribution.refresh_from_db()
    # Ada, Alan and Olive; Ada's twin is Duplicated, Nemo has no phone.
    assert "Sent 3," in out.getvalue() and distribution.status == Distribution.Status.SENT
    assert OutboxMessage.objects.filter(brand=tenancy.brand_a).count() == 3
    with pytest.raises(CommandError, match="only one In progress"):
        call_command("send_distribution", str(distribution.pk))
    with pytest.raises(CommandError, match="no such distribution"):
        call_command("send_distribution", "999999")
