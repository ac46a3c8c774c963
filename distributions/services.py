"""Writes for distributions: schedule, edit, cancel, claim, materialise, finish, ingest status.

What callers can rely on:
- a distribution is started at most once (``distribution_claim`` is a conditional UPDATE);
- recipient rows are materialised by one INSERT … SELECT, unique per (distribution,
  participant), so a repeated start adds nothing;
- a message status only moves forward (``Message.STATUS_RANK``), whatever order callbacks
  arrive in, and every change is a ``MessageEvent``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Q, Window
from django.db.models.functions import Collate, Lower, RowNumber
from django.utils import timezone

from credits.hooks_read import credits_estimate
from credits.segments import normalize_line_breaks
from distributions.conditions import conditions_clean, conditions_q
from distributions.fairqueue import lane_close
from distributions.models import Distribution, Message, MessageEvent
from distributions.rendering import piped_fields
from participants.models import Participant
from participants.selectors import project_metadata_keys
from projects.models import Project
from webhooks.events import distribution_finished_raised, recipient_statuses_raised

logger = logging.getLogger(__name__)

Status = Distribution.Status
MStatus = Message.Status

INACTIVE_PROJECT_MESSAGE = (
    "Your project must be activated to send text messages: this project is {stage}."
)
MAX_MESSAGE_LENGTH = 1600  # Twilio's limit for one message body
MAX_EMAIL_LENGTH = 200_000  # an HTML body; large enough for any template, small per row
EMAIL_FIELDS = ("subject", "text_body", "from_name", "from_address", "reply_to")


class InsufficientCredits(Exception):
    """The brand's available credits do not cover the send's estimated cost (``estimate``:
    ``credits.hooks_read.credits_estimate``'s answer)."""

    def __init__(self, estimate: dict):
        self.estimate = estimate
        super().__init__(
            f"This send needs about {estimate['credits'].normalize():,f} credits and "
            f"{estimate['available'].normalize():,f} are available: messages the balance "
            "cannot cover would not be sent, and the distribution would end Interrupted. Add "
            'credits, narrow the recipients, or send "accept_partial": true to send what the '
            "balance covers."
        )


def _is_alphanumeric_sender(sender: str) -> bool:
    return bool(sender) and any(ch.isalpha() for ch in sender) and not sender.startswith("MG")


def _validate(
    *,
    project: Project,
    channel: str,
    kind: str,
    message: str,
    sender: str,
    parent: Distribution | None,
    send_at: datetime,
    email: dict | None = None,
    conditions: list | None = None,
    trigger: str = "",
    exclude_id: int | None = None,
) -> None:
    errors: dict[str, str] = {}
    if project.stage != Project.Stage.ACTIVE:
        errors["project"] = INACTIVE_PROJECT_MESSAGE.format(stage=project.get_stage_display())
    elif not project.is_within_availability(send_at):
        errors["send_at"] = "The project is outside its availability window at that time."
    if channel not in Distribution.Channel.values:
        errors["channel"] = f"Unknown channel '{channel}'."
    if kind not in Distribution.Kind.values:
        errors["kind"] = f"Unknown kind '{kind}'."
    text = (message or "").strip()
    if not text:
        errors["message"] = "The message is empty."
    elif channel == Distribution.Channel.EMAIL:
        from distributions.email_services import email_content_errors, email_sending_errors

        errors.update(
            email_content_errors(kind=kind, message=text, trigger=trigger, **(email or {}))
        )
        if not errors:
            errors.update(
                email_sending_errors(
                    project=project,
                    kind=kind,
                    parent=parent,
                    conditions=conditions or [],
                    trigger=trigger,
                    from_address=(email or {}).get("from_address", ""),
                    exclude_id=exclude_id,
                )
            )
    elif len(text) > MAX_MESSAGE_LENGTH:
        errors["message"] = f"The message is longer than {MAX_MESSAGE_LENGTH} characters."
    elif (
        channel == Distribution.Channel.SMS
        and _is_alphanumeric_sender(sender)
        and "opt_out_link" not in piped_fields(text)
    ):
        errors["message"] = (
            "Messages from an alphanumeric sender cannot receive STOP replies: include "
            "${opt_out_link} so that recipients can opt out."
        )
    if parent is not None:
        if parent.project_id != project.pk:
            errors["parent"] = "The invite belongs to another project."
        elif parent.kind != Distribution.Kind.INVITE:
            errors["parent"] = "A reminder follows an invite."
        elif kind != Distribution.Kind.REMINDER:
            errors["parent"] = "Only a reminder can follow an invite."
    if errors:
        raise ValidationError(errors)


def distribution_create(
    *,
    project: Project,
    message: str,
    actor=None,
    channel: str = Distribution.Channel.SMS,
    kind: str = Distribution.Kind.INVITE,
    sender: str = "",
    conditions: list | None = None,
    send_at: datetime | None = None,
    parent: Distribution | None = None,
    name: str = "",
    subject: str = "",
    text_body: str = "",
    from_name: str = "",
    from_address: str = "",
    reply_to: str = "",
    trigger: str = "",
    accept_partial: bool = True,
) -> Distribution:
    """Schedule a distribution (``send_at`` None or past: now). Queued after commit when due.

    ``accept_partial=False`` (the API's default): an SMS distribution whose estimated cost
    (``credits.estimate``, as the schedule page shows it) exceeds the brand's available credits
    raises ``InsufficientCredits`` instead of being scheduled to end Interrupted. Self-service
    brands pay their provider and are never refused.

    An email (``channel="email"``) has a ``subject``, an HTML ``message`` (scripts stripped), an
    optional ``text_body`` (else generated), a From name and address (defaults: the brand's
    email settings, else the platform's) and a Reply-To. ``trigger="completion"`` (thank-you
    emails only) sends to each recipient when they complete the survey, from now until the
    distribution is cancelled.
    """
    now = timezone.now()
    send_at = send_at or now
    sender = (sender or "").strip()
    message = normalize_line_breaks(message or "")
    cleaned_conditions = conditions_clean(conditions)
    email: dict = {}
    if channel == Distribution.Channel.EMAIL:
        from distributions.email_services import email_fields_clean

        message, email = email_fields_clean(
            brand=project.brand,
            message=message,
            subject=subject,
            text_body=text_body,
            from_name=from_name,
            from_address=from_address,
            reply_to=reply_to,
        )
        sender = ""
    elif trigger:
        raise ValidationError({"trigger": "Only email thank-you messages can be triggered."})
    _validate(
        project=project,
        channel=channel,
        kind=kind,
        message=message,
        sender=sender,
        parent=parent,
        send_at=max(send_at, now),
        email=email,
        conditions=cleaned_conditions,
        trigger=trigger or "",
    )
    if channel == Distribution.Channel.SMS and not accept_partial:
        estimate = credits_estimate(
            project=project,
            message=message,
            conditions=cleaned_conditions,
            kind=kind,
            parent=parent,
        )
        if estimate is not None and not estimate["covered"]:
            raise InsufficientCredits(estimate)
    distribution = Distribution.objects.create(
        project=project,
        channel=channel,
        kind=kind,
        parent=parent,
        name=(name or "").strip()[:200],
        message=message.strip(),
        sender=sender,
        conditions=cleaned_conditions,
        send_at=send_at,
        trigger=trigger or "",
        created_by=actor if getattr(actor, "pk", None) else None,
        **email,
    )
    if send_at <= now:
        _queue_start(distribution.pk)
    return distribution


def _queue_start(distribution_id: int) -> None:
    from distributions.tasks import distribution_start_task

    transaction.on_commit(lambda: distribution_start_task.delay(distribution_id))


EDITABLE = ("message", "sender", "conditions", "send_at", "name", *EMAIL_FIELDS)
MESSAGE_TEXT_FIELDS = ("message", "text_body")  # their line breaks are normalised


def distribution_update(*, distribution: Distribution, actor=None, **changes) -> Distribution:
    """Edit a Scheduled distribution; refused once it has started."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed."))
    with transaction.atomic():
        locked = (
            Distribution.objects.select_for_update()
            .select_related("project")
            .get(pk=distribution.pk)
        )
        if locked.status != Status.SCHEDULED:
            raise ValidationError(
                {
                    "status": f"Only scheduled distributions can be edited; this one is "
                    f"{locked.get_status_display()}."
                }
            )
        if "conditions" in changes:
            changes["conditions"] = conditions_clean(changes["conditions"])
        if locked.channel != Distribution.Channel.EMAIL and set(changes) & set(EMAIL_FIELDS):
            raise ValidationError(
                dict.fromkeys(
                    sorted(set(changes) & set(EMAIL_FIELDS)), "Only emails have this field."
                )
            )
        for name, value in changes.items():
            if name in MESSAGE_TEXT_FIELDS and isinstance(value, str):
                value = normalize_line_breaks(value)
            setattr(locked, name, value.strip() if isinstance(value, str) else value)
        email: dict = {}
        if locked.channel == Distribution.Channel.EMAIL:
            from distributions.email_services import email_fields_clean

            locked.message, email = email_fields_clean(
                brand=locked.project.brand,
                message=locked.message,
                **{name: getattr(locked, name) for name in EMAIL_FIELDS},
            )
            for name, value in email.items():
                setattr(locked, name, value)
        now = timezone.now()
        _validate(
            project=locked.project,
            channel=locked.channel,
            kind=locked.kind,
            message=locked.message,
            sender=locked.sender,
            parent=locked.parent,
            send_at=max(locked.send_at, now),
            email=email,
            conditions=locked.conditions,
            trigger=locked.trigger,
            exclude_id=locked.pk,
        )
        locked.save()
        if locked.send_at <= now:
            _queue_start(locked.pk)
    return locked


def distributions_bulk_update(
    *, distributions: list[Distribution], actor=None, **changes
) -> list[Distribution]:
    """Edit several scheduled distributions at once: all of them, or none."""
    if not distributions:
        raise ValidationError({"distributions": "Choose at least one distribution."})
    updated = []
    with transaction.atomic():
        for distribution in sorted(distributions, key=lambda d: d.pk):
            try:
                updated.append(
                    distribution_update(distribution=distribution, actor=actor, **changes)
                )
            except ValidationError as exc:
                raise ValidationError(
                    {f"distribution {distribution.pk}": "; ".join(exc.messages)}
                ) from exc
    return updated


def distribution_cancel(*, distribution: Distribution, actor=None) -> Distribution:
    """Cancel a Scheduled distribution, or stop one In progress (what was sent stays sent)."""
    with transaction.atomic():
        locked = Distribution.objects.select_for_update().get(pk=distribution.pk)
        if locked.status == Status.SCHEDULED:
            locked.status = Status.CANCELLED
            locked.status_reason = "Cancelled before sending."
            locked.finished_at = timezone.now()
            locked.save(update_fields=["status", "status_reason", "finished_at", "updated_at"])
        elif locked.status == Status.IN_PROGRESS:
            now = timezone.now()
            stopped = _close_open_messages(
                locked, status=MStatus.SKIPPED, reason="Not sent: the distribution was cancelled."
            )
            locked.status = Status.INTERRUPTED
            locked.status_reason = f"Cancelled while sending; {stopped} messages were not sent."
            locked.finished_at = now
            locked.save(update_fields=["status", "status_reason", "finished_at", "updated_at"])
        else:
            raise ValidationError(
                {"status": f"A {locked.get_status_display()} distribution cannot be cancelled."}
            )
    if locked.status == Status.INTERRUPTED and locked.trigger:
        # A completion-triggered thank-you ends when it is stopped: what it sent stays sent.
        sent = Message.objects.filter(distribution=locked, status__in=Message.HANDED_OVER)
        Distribution.objects.filter(pk=locked.pk).update(
            status=Status.SENT if sent.exists() else Status.CANCELLED,
            status_reason="Stopped: no more thank-you emails on completion.",
        )
    if locked.status == Status.INTERRUPTED:
        from distributions.sending import release_credits

        lane_close(distribution_id=locked.pk)
        # Settle now rather than at the next balance read; in-flight holds stay until settled.
        release_credits(distribution=locked)
    distribution.refresh_from_db()
    return distribution


def distribution_claim(*, distribution_id: int, now: datetime | None = None) -> bool:
    """Move a due Scheduled distribution to In progress. True for exactly one caller."""
    now = now or timezone.now()
    claimed = Distribution.objects.filter(
        pk=distribution_id, status=Status.SCHEDULED, send_at__lte=now
    ).update(status=Status.IN_PROGRESS, started_at=now, updated_at=now)
    return claimed == 1


def distributions_due(*, now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(
        Distribution.objects.filter(status=Status.SCHEDULED, send_at__lte=now)
        .order_by("send_at", "pk")
        .values_list("pk", flat=True)[:500]
    )


def distribution_start(*, distribution_id: int) -> dict:
    """Claim, check the project, materialise recipients and put them in the fair queue.

    The claim and the materialisation commit together: until its recipient rows exist, the
    distribution is not In progress for anyone else (recovery would otherwise find it In
    progress without rows and finish it as if nobody matched).
    """
    with transaction.atomic():
        if not distribution_claim(distribution_id=distribution_id):
            return {"started": False}
        distribution = Distribution.objects.select_related("project__brand").get(pk=distribution_id)
        project = distribution.project
        if not project.is_collecting:
            _finish(
                distribution,
                Status.FAILED,
                INACTIVE_PROJECT_MESSAGE.format(stage=project.get_stage_display())
                if project.stage != Project.Stage.ACTIVE
                else "The project is outside its availability window.",
            )
            return {"started": False, "failed": "inactive project"}
        if distribution.trigger == Distribution.TRIGGER_COMPLETION:
            # Sends one recipient at a time, as they complete (``distribution_on_completion``).
            return {"started": True, "pending": 0, "trigger": distribution.trigger}
        counts = distribution_materialise(distribution=distribution)
        from distributions.sending import distribution_enqueue, reserve_credits

        if distribution.channel == Distribution.Channel.EMAIL:
            _enforce_weekly_limit(distribution)
        reserve_credits(distribution=distribution)
        pending = distribution_enqueue(distribution=distribution)
    if not pending:
        distribution_finish_if_done(distribution_id=distribution.pk)
    return {"started": True, "pending": pending, **counts}


def _enforce_weekly_limit(distribution: Distribution) -> None:
    """At start: if the brand's weekly email limit cannot take this run, nothing is sent."""
    from distributions.email_services import weekly_limit_error

    pending = Message.objects.filter(distribution=distribution, status=MStatus.PENDING)
    error = weekly_limit_error(
        brand=distribution.project.brand, wanted=pending.count(), exclude_id=distribution.pk
    )
    if error:
        _close_open_messages(distribution, status=MStatus.FAILED, reason=f"Not sent: {error}")


def distribution_on_completion(*, response) -> int:
    """A recipient completed the survey: queue the project's completion-triggered thank-you
    emails to them (once per distribution and participant). Returns how many were queued."""
    if not response.participant_id:
        return 0
    from distributions.email_services import weekly_limit_error
    from distributions.sending import distribution_enqueue

    queued = 0
    for distribution in Distribution.objects.filter(
        project_id=response.project_id,
        trigger=Distribution.TRIGGER_COMPLETION,
        status=Status.IN_PROGRESS,
    ).select_related("project__brand"):
        with transaction.atomic():
            distribution_materialise(
                distribution=distribution, participant_ids=[response.participant_id]
            )
            error = weekly_limit_error(brand=distribution.project.brand, wanted=1)
            if error:
                _close_open_messages(
                    distribution, status=MStatus.FAILED, reason=f"Not sent: {error}"
                )
            queued += distribution_enqueue(distribution=distribution)
    return queued


def recipients_queryset(distribution: Distribution, participant_ids: list[int] | None = None):
    """The participants a distribution selects: its conditions, and for reminders its audience."""
    queryset = Participant.objects.filter(project_id=distribution.project_id).filter(
        conditions_q(distribution.conditions, spellings=_field_spellings(distribution.project_id))
    )
    if participant_ids is not None:
        queryset = queryset.filter(pk__in=participant_ids)
    if distribution.kind == Distribution.Kind.REMINDER:
        from distributions.audiences import reminder_audience

        queryset = reminder_audience(distribution, queryset)
    return queryset


def distribution_preview_count(*, project: Project, conditions: list | None) -> int:
    """How many participants match ``conditions`` (before scheduling)."""
    return (
        Participant.objects.filter(project=project)
        .filter(conditions_q(conditions_clean(conditions), spellings=_field_spellings(project.pk)))
        .count()
    )


def _field_spellings(project_id: int):
    """The stored spellings of a metadata field name among the project's participants."""
    return lambda name: project_metadata_keys(project_id=project_id, named=name)


def distribution_materialise(
    *, distribution: Distribution, participant_ids: list[int] | None = None
) -> dict:
    """Insert one recipient row per selected participant, in one statement.

    The first participant with a phone number gets Pending, later ones with the same number
    Duplicated; no phone: Skipped; opted out: Skipped (opt-out). Existing rows are kept.
    Emails: the same, with addresses compared without case and malformed ones Skipped.
    """
    from optouts.selectors import optout_active_exists

    is_email = distribution.channel == Distribution.Channel.EMAIL
    address_field = "person__email" if is_email else "person__phone"
    partition = Lower(F(address_field)) if is_email else F(address_field)
    if connection.vendor == "postgresql":
        # Equal under the database's (deterministic) collation is equal byte for byte: sorting
        # for the window under "C" finds the same duplicates, several times faster.
        partition = Collate(partition, "C")
    selected = (
        recipients_queryset(distribution, participant_ids)
        .order_by()
        .annotate(
            pid=F("pk"),
            person_ref=F("person_id"),
            address=F(address_field),
            opted_out=optout_active_exists(
                brand_id=distribution.project.brand_id,
                channel=distribution.channel,
                address_ref=OuterRef(address_field),
            ),
            rn=Window(RowNumber(), partition_by=[partition], order_by=F("pk").asc()),
        )
        .values("pid", "person_ref", "address", "opted_out", "rn")
    )
    inner_sql, inner_params = selected.query.sql_with_params()
    now = timezone.now()
    table = Message._meta.db_table
    # An email address needs one @ with something on each side, and no spaces; phones were
    # normalised to E.164 on import.
    invalid = (
        "(sel.address NOT LIKE '%%_@_%%' OR sel.address LIKE '%% %%' "
        "OR sel.address LIKE '%%@%%@%%')"
        if is_email
        else "1 = 0"
    )
    # Table names come from our models; every value is a bound parameter.
    sql = f"""
        INSERT INTO {table} (
            distribution_id, participant_id, person_id, address, status, status_reason,
            status_changed_at, body, segments, provider_id, lease, attempts, error_code
        )
        SELECT %s, sel.pid, sel.person_ref, sel.address,
            CASE WHEN sel.address = '' OR sel.address IS NULL THEN %s
                 WHEN {invalid} THEN %s
                 WHEN sel.opted_out THEN %s
                 WHEN sel.rn > 1 THEN %s
                 ELSE %s END,
            CASE WHEN sel.address = '' OR sel.address IS NULL THEN %s
                 WHEN {invalid} THEN %s
                 WHEN sel.opted_out THEN %s
                 WHEN sel.rn > 1 THEN %s
                 ELSE '' END,
            %s, '', 0, '', '', 0, ''
        FROM ({inner_sql}) sel
        WHERE 1 = 1
        ON CONFLICT DO NOTHING
    """  # noqa: S608

    no_address = "No phone number" if distribution.channel == "sms" else "No email address"
    invalid_reason = "Invalid email address" if is_email else "Invalid phone number"
    params = [
        distribution.pk,
        MStatus.SKIPPED,
        MStatus.SKIPPED,
        MStatus.SKIPPED_OPTOUT,
        MStatus.DUPLICATED,
        MStatus.PENDING,
        no_address,
        invalid_reason,
        "Opted out",
        "Same address as another recipient",
        now,
        *inner_params,
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The window sorts every selected row by address: keep a million rows in memory.
            cursor.execute("SET LOCAL work_mem = '128MB'")
            # What the foreign key's check did once per row (Message.distribution has no
            # database constraint), once: the distribution exists, and cannot be deleted
            # before these rows are committed.
            cursor.execute(
                f"SELECT 1 FROM {Distribution._meta.db_table} WHERE id = %s FOR KEY SHARE",  # noqa: S608
                [distribution.pk],
            )
            if cursor.fetchone() is None:
                raise Distribution.DoesNotExist(f"Distribution {distribution.pk} was deleted.")
        cursor.execute(sql, params)
        _record_materialised_events(distribution, now)
    return distribution_counts(distribution_id=distribution.pk)


def _record_materialised_events(distribution: Distribution, now: datetime) -> None:
    """One event per row that was not sendable at materialisation (set-based)."""
    table = MessageEvent._meta.db_table
    message_table = Message._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (message_id, status, at, source, detail)
            SELECT m.id, m.status, %s, %s, m.status_reason FROM {message_table} m
            WHERE m.distribution_id = %s AND m.status IN (%s, %s, %s)
              AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.message_id = m.id)
            """,  # noqa: S608
            [now, MessageEvent.Source.MATERIALISE, distribution.pk, *Message.NOT_SENDABLE],
        )


def distribution_counts(*, distribution_id: int) -> dict:
    rows = (
        Message.objects.filter(distribution_id=distribution_id)
        .values("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    by_status = {row["status"]: row["n"] for row in rows}
    return {"by_status": by_status, "total": sum(by_status.values())}


def _close_open_messages(distribution: Distribution, *, status: str, reason: str) -> int:
    """Pending rows become ``status`` (with an event); rows being sent are left to finish."""
    now = timezone.now()
    ids = list(
        Message.objects.filter(distribution=distribution, status=MStatus.PENDING).values_list(
            "pk", flat=True
        )
    )
    if not ids:
        return 0
    changed = Message.objects.filter(pk__in=ids, status=MStatus.PENDING).update(
        status=status, status_reason=reason[:300], status_changed_at=now
    )
    MessageEvent.objects.bulk_create(
        [
            MessageEvent(message_id=pk, status=status, at=now, source="system", detail=reason[:300])
            for pk in ids
        ],
        batch_size=1000,
    )
    recipient_statuses_raised(
        distribution_id=distribution.pk, changes=[(pk, status) for pk in ids], at=now
    )
    return changed


def _finish(distribution: Distribution, status: str, reason: str) -> bool:
    now = timezone.now()
    done = Distribution.objects.filter(pk=distribution.pk, status=Status.IN_PROGRESS).update(
        status=status, status_reason=reason[:500], finished_at=now, updated_at=now
    )
    if done:
        distribution.status, distribution.status_reason, distribution.finished_at = (
            status,
            reason,
            now,
        )
        lane_close(distribution_id=distribution.pk)
        from distributions.sending import release_credits

        release_credits(distribution=distribution)
        distribution_finished_raised(distribution=distribution)
    return bool(done)


def distribution_finish_if_done(*, distribution_id: int) -> str | None:
    """When no row is open, end the distribution Sent, Failed or Interrupted. Idempotent."""
    distribution = Distribution.objects.filter(pk=distribution_id).first()
    if distribution is None or distribution.status != Status.IN_PROGRESS:
        return None
    if distribution.trigger == Distribution.TRIGGER_COMPLETION:
        return None  # sends on each completion until it is stopped
    # Called after every chunk: one index probe while rows are open, not a count of them all.
    if Message.objects.filter(
        distribution_id=distribution_id, status__in=Message.OPEN_STATUSES
    ).exists():
        return None
    counts = distribution_counts(distribution_id=distribution_id)["by_status"]
    if any(counts.get(status) for status in Message.OPEN_STATUSES):
        return None
    handed = sum(counts.get(status, 0) for status in Message.HANDED_OVER)
    failed = sum(counts.get(status, 0) for status in Message.FAILED_STATUSES)
    skipped = sum(counts.get(status, 0) for status in Message.NOT_SENDABLE)
    reason_bits = []
    if failed:
        reason_bits.append(f"{failed} failed")
    if skipped:
        reason_bits.append(f"{skipped} skipped")
    stop_reason = _interruption_reason(distribution_id)
    if handed == 0:
        status = Status.FAILED
        if stop_reason:
            reason = f"Nothing was sent: {stop_reason}"
        elif not counts:
            reason = "No participant matched the conditions."
        else:
            reason = "No message could be sent (" + ", ".join(reason_bits) + ")."
    elif stop_reason:
        status = Status.INTERRUPTED
        reason = f"Sent partially: {stop_reason}"
    else:
        status = Status.SENT
        reason = ("Sent with issues: " + ", ".join(reason_bits) + ".") if reason_bits else ""
    _finish(distribution, status, reason)
    return status


def _interruption_reason(distribution_id: int) -> str:
    """Why rows were closed without sending (credits, provider account), if they were."""
    reasons = (
        Message.objects.filter(distribution_id=distribution_id, status=MStatus.FAILED)
        .filter(Q(status_reason__startswith="Not sent:"))
        .values_list("status_reason", flat=True)[:1]
    )
    reason = next(iter(reasons), "")
    return reason.removeprefix("Not sent:").strip()


# --- status ingest: provider callbacks, simulated receipts, reconciliation ------------------

PROVIDER_STATUS_MAP = {
    "sent": MStatus.SENT,
    "delivered": MStatus.DELIVERED,
    "undelivered": MStatus.FAILED,
    "failed": MStatus.FAILED,
    "read": MStatus.DELIVERED,
}
BLOCKING_ERROR_CODES = {"21610", "30007", "30004"}


def message_status_ingest(
    *,
    provider_status: str,
    provider_id: str = "",
    message_id: int | None = None,
    error_code: str = "",
    source: str = MessageEvent.Source.CALLBACK,
) -> bool:
    """Apply a provider status to its message if it moves it forward. True if it changed.

    Out-of-order and repeated callbacks change nothing: a Delivered row never goes back.
    A callback that arrives before the worker recorded the send still counts (the row is
    found by ``message_id``).
    """
    status = PROVIDER_STATUS_MAP.get((provider_status or "").lower())
    if status is None:
        return False
    error_code = (error_code or "").strip()
    if status == MStatus.FAILED and error_code in BLOCKING_ERROR_CODES:
        status = MStatus.BLOCKED
    with transaction.atomic():
        message = _status_apply(
            status=status,
            provider_status=provider_status,
            provider_id=provider_id,
            message_id=message_id,
            error_code=error_code,
            source=source,
        )
    if message is None:
        return False
    if status == MStatus.BLOCKED and error_code == "21610":
        from optouts.services import optout_record_provider

        optout_record_provider(message=message)
    if message.status == MStatus.SENDING:
        distribution_finish_if_done(distribution_id=message.distribution_id)
    return True


def _status_apply(
    *, status, provider_status, provider_id, message_id, error_code, source
) -> Message | None:
    """Move the row forward, record its event and raise its webhook, under the row's lock;
    the row as it was before, or None when nothing changed.

    The lock orders this change after any other in flight for the row (the worker recording
    the send, another callback): the status read here is the committed one, and the webhook
    deliveries of one row are raised in the order their changes were made.
    """
    queryset = Message.objects.select_for_update()
    if message_id is not None:
        message = queryset.filter(pk=message_id).first()
        if message is not None and provider_id and message.provider_id not in ("", provider_id):
            return None  # a callback for another attempt's message id: not ours
    else:
        message = queryset.filter(provider_id=provider_id).first() if provider_id else None
    if message is None:
        return None
    if Message.STATUS_RANK[status] <= Message.STATUS_RANK[MStatus(message.status)]:
        return None
    now = timezone.now()
    updates = {"status": status, "status_changed_at": now, "error_code": error_code}
    if status in (MStatus.FAILED, MStatus.BLOCKED):
        updates["status_reason"] = (
            f"Provider reported {provider_status} ({error_code or 'no code'})"
        )
    if provider_id and not message.provider_id:
        updates["provider_id"] = provider_id
    if message.status == MStatus.SENDING:
        updates["sent_at"] = now
    changed = Message.objects.filter(pk=message.pk, status=message.status).update(**updates)
    if not changed:
        return None
    MessageEvent.objects.create(
        message_id=message.pk,
        status=status,
        at=now,
        source=source,
        detail=f"{provider_status}{' ' + error_code if error_code else ''}",
    )
    recipient_statuses_raised(
        distribution_id=message.distribution_id, changes=[(message.pk, status)], at=now
    )
    return message
