"""Distributions made from another one: a copy, a try again of a Failed one, a resend to the
Failed, Bounced and Blocked recipients of a Sent one, and a test message to oneself.

Each is a new ``Distribution`` whose ``origin`` is the original (shown among its related
distributions) and goes through the one spec of create (``spec.spec_clean``/``spec_errors``
via ``services.distribution_create_from_spec``): a copy is refused for the same reasons a new
distribution would be. Who a try again or a resend goes to is decided when it starts, by
``audiences.origin_audience``. Each is recorded in the audit trail (``distributions.audit``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distributions.audiences import RESEND_STATUSES
from distributions.audit import Action, distribution_audit_record
from distributions.finishing import distribution_finish_if_done
from distributions.models import Distribution, Message, MessageEvent
from distributions.sending import distribution_enqueue, reserve_credits
from distributions.services import distribution_create_from_spec
from distributions.spec import DistributionSpec, schedule_errors, spec_clean, spec_errors
from participants.models import Participant
from participants.phones import PhoneError, phone_to_e164
from projects.models import Project

Status = Distribution.Status
Origin = Distribution.Origin
NOT_COPYABLE_KINDS = (Distribution.Kind.TRANSACTIONAL,)
TEST_PREFIX = "[Test] "


def _copyable(original: Distribution, *, what: str) -> None:
    if original.kind in NOT_COPYABLE_KINDS or original.is_test:
        raise ValidationError(
            {
                "distribution": f"A {original.get_kind_display().lower()} distribution cannot be "
                f"{what}."
                if not original.is_test
                else f"A test message cannot be {what}."
            }
        )


def distribution_copy(
    *,
    original: Distribution,
    project: Project | None = None,
    send_at: datetime | None = None,
    name: str = "",
    actor=None,
) -> Distribution:
    """A new Scheduled distribution with the original's channel, kind, message (and email
    fields), sender, conditions and trigger, in ``project`` (default: the original's; another
    project must be of the same brand, which the caller's scoping ensures).

    ``send_at``: default the original's send time while it is ahead, else refused (a copy is
    scheduled, never sent at once by accident). A reminder copied to another project leaves
    its invite behind: it reminds everyone there who has not responded.
    """
    _copyable(original, what="copied")
    project = project or original.project
    now = timezone.now()
    if send_at is None:
        if original.send_at <= now:
            raise ValidationError(
                {"send_at": "The original's send time has passed: choose when the copy sends."}
            )
        send_at = original.send_at
    elif send_at <= now:
        raise ValidationError({"send_at": "A copy is scheduled: choose a time in the future."})
    return _derive(
        original=original,
        origin_kind=Origin.COPY,
        project=project,
        send_at=send_at,
        name=name or f"Copy of {original}",
        actor=actor,
        action=Action.COPIED,
        detail=lambda pk: f"Copied to distribution {pk} in project {project}.",
        parent_kept=project.pk == original.project_id,
    )


def retry_advice(distribution: Distribution) -> str:
    """What to fix before trying a Failed distribution again, read from why it failed and
    from how things stand now (the distribution page shows it)."""
    project = distribution.project
    reason = distribution.status_reason.lower()
    if project.stage != Project.Stage.ACTIVE:
        return (
            f"The project is {project.get_stage_display()}: activate it on the project page, "
            "then try again."
        )
    if "availability" in reason and not project.is_within_availability(timezone.now()):
        return "The project is outside its availability window: change its dates, then try again."
    if "credit" in reason:
        return "Add credits (Licence and credits) or narrow the recipients, then try again."
    if "weekly" in reason:
        return "The brand's weekly email limit was reached: try again when it allows more."
    if any(word in reason for word in ("provider", "credential", "account", "authenticat")):
        return (
            "Check the provider settings (Settings › SMS or Email) and test them, then try again."
        )
    return (
        "Check your configuration (the project's stage and dates, the sender, the provider "
        "settings and credits) and the recipient history below, then try again."
    )


def _required_status(original: Distribution, status: str, what: str) -> None:
    if original.status != status:
        raise ValidationError(
            {
                "status": f"Only a {Status(status).label} distribution can be {what}; this one "
                f"is {original.get_status_display()}."
            }
        )


def _derive(
    *,
    original: Distribution,
    origin_kind: str,
    project: Project | None = None,
    send_at: datetime | None,
    name: str,
    actor,
    action: str,
    detail: Callable[[int], str],
    parent_kept: bool = True,
) -> Distribution:
    """The new distribution made from ``original`` (through the one create path, with every
    rule of the spec) and its audit row, together. ``detail``: the audit detail of the new
    distribution's id."""
    project = project or original.project
    changes = {} if parent_kept else {"parent": None}
    with transaction.atomic():
        made = distribution_create_from_spec(
            project=project,
            spec=DistributionSpec.of(original, **changes),
            send_at=send_at,
            name=name,
            actor=actor,
            origin=original,
            origin_kind=origin_kind,
        )
        distribution_audit_record(
            distribution=original, action=action, actor=actor, detail=detail(made.pk)
        )
    return made


def distribution_retry(
    *, original: Distribution, send_at: datetime | None = None, actor=None
) -> Distribution:
    """Try a Failed distribution again, after its cause was fixed: a new distribution with
    the same spec (``send_at``: default now) that leaves out whom the original reached."""
    _copyable(original, what="tried again")
    _required_status(original, Status.FAILED, "tried again")
    return _derive(
        original=original,
        origin_kind=Origin.RETRY,
        send_at=send_at,
        name=f"{original} (tried again)",
        actor=actor,
        action=Action.RETRIED,
        detail=lambda pk: f"Tried again as distribution {pk}.",
    )


def resend_recipient_count(*, original: Distribution) -> int:
    """How many recipients of ``original`` a resend would target (Failed, Bounced, Blocked)."""
    return Message.objects.filter(
        distribution=original, status__in=RESEND_STATUSES, participant__isnull=False
    ).count()


def distribution_resend(
    *, original: Distribution, send_at: datetime | None = None, actor=None
) -> Distribution:
    """Send a Sent distribution again to its Failed, Bounced and Blocked recipients only
    (``send_at``: default now). Opted-out or still unreachable ones are skipped as usual."""
    _copyable(original, what="resent")
    _required_status(original, Status.SENT, "resent to its failed recipients")
    count = resend_recipient_count(original=original)
    if not count:
        raise ValidationError(
            {"status": "No recipient of this distribution is Failed, Bounced or Blocked."}
        )
    return _derive(
        original=original,
        origin_kind=Origin.RESEND,
        send_at=send_at,
        name=f"{original} (resent to {count} failed)",
        actor=actor,
        action=Action.RESENT,
        detail=lambda pk: f"Resent to {count} failed recipients as distribution {pk}.",
    )


def test_address_clean(*, channel: str, address: str, brand) -> str:
    """The address a test goes to: an E.164 phone (read in the brand's country) or an email."""
    address = (address or "").strip()
    if not address:
        raise ValidationError({"address": "Enter where to send the test."})
    if channel == Distribution.Channel.EMAIL:
        if address.count("@") != 1 or " " in address or address.startswith("@"):
            raise ValidationError({"address": f"'{address}' is not an email address."})
        return address
    try:
        return phone_to_e164(address, default_country=brand.default_country)
    except PhoneError as exc:
        raise ValidationError({"address": str(exc)}) from exc


def distribution_test_send(
    *,
    original: Distribution,
    address: str,
    participant: Participant | None = None,
    actor=None,
) -> Distribution:
    """Send the original's message once to ``address`` (the tester's phone or email),
    rendered with ``participant``'s fields (default: the project's first participant).

    The test is its own distribution (``origin_kind="test"``, named "[Test] …"), In progress
    at once with one recipient row, sent, charged and recorded by the send engine like any
    message; lists, related distributions and the original's metrics leave it out. Its
    ``${link}`` is a personal link of the test row, tied to ``participant``.
    """
    _copyable(original, what="tested")
    project = original.project
    brand = project.brand
    address = test_address_clean(channel=original.channel, address=address, brand=brand)
    if participant is None:
        participant = Participant.objects.filter(project=project).select_related("person").first()
    if participant is None:
        raise ValidationError({"participant": "The project has no participant to render with."})
    if participant.project_id != project.pk:
        raise ValidationError({"participant": "The participant belongs to another project."})
    now = timezone.now()
    spec = spec_clean(DistributionSpec.of(original, parent=None, trigger=""), brand=brand)
    errors = schedule_errors(project=project, send_at=now)
    errors.update(spec_errors(spec, project=project))
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        test = Distribution.objects.create(
            project=project,
            kind=spec.kind,
            name=f"{TEST_PREFIX}{original}"[:200],
            send_at=now,
            status=Status.IN_PROGRESS,
            started_at=now,
            created_by=actor if getattr(actor, "pk", None) else None,
            origin=original,
            origin_kind=Origin.TEST,
            **spec.stored_fields(),
        )
        row = Message.objects.create(
            distribution=test,
            participant=participant,
            person_id=participant.person_id,
            address=address,
            status=Message.Status.PENDING,
            status_changed_at=now,
            due_at=now,
        )
        MessageEvent.objects.create(
            message=row,
            status=Message.Status.PENDING,
            at=now,
            source=MessageEvent.Source.SYSTEM,
            detail=f"Test message, rendered for {participant.person}",
        )
        reserve_credits(distribution=test)
        pending = distribution_enqueue(distribution=test)
        distribution_audit_record(
            distribution=original,
            action=Action.TEST_SENT,
            actor=actor,
            detail=f"Test to {address} as distribution {test.pk}.",
        )
    if not pending:
        distribution_finish_if_done(distribution_id=test.pk)
    test.refresh_from_db()
    return test
