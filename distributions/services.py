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
from datetime import datetime, time

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, OuterRef, Window
from django.db.models.functions import Collate, Lower, RowNumber
from django.utils import timezone

from core.queueing import task_queue
from distributions import policies
from distributions.audiences import recipients_queryset
from distributions.charging import credits_estimate
from distributions.conditions import conditions_clean, conditions_q
from distributions.email_services import weekly_limit_error
from distributions.events import recipient_statuses_raised
from distributions.fairqueue import lane_close
from distributions.finishing import (
    distribution_counts,
    distribution_end,
    distribution_finish_if_done,
    open_messages_close,
)
from distributions.library import library_message_fill
from distributions.models import Distribution, LibraryMessage, Message, MessageEvent
from distributions.providers.base import StatusUpdate
from distributions.providers.registry import provider_classes
from distributions.selectors import missed_while_paused
from distributions.sending import distribution_enqueue, release_credits, reserve_credits
from distributions.spec import (
    EMAIL_FIELDS,
    INACTIVE_PROJECT_MESSAGE,
    DistributionSpec,
    schedule_errors,
    spec_clean,
    spec_errors,
)
from optouts.selectors import optout_active_exists
from optouts.services import optout_record_provider
from participants.models import Participant
from participants.selectors import metadata_spellings
from projects.models import Project, Response

logger = logging.getLogger(__name__)

Status = Distribution.Status
MStatus = Message.Status


class InsufficientCredits(Exception):
    """The brand's available credits do not cover the send's estimated cost (``estimate``:
    ``distributions.charging.credits_estimate``'s answer)."""

    def __init__(self, estimate: dict):
        self.estimate = estimate
        super().__init__(
            f"This send needs about {estimate['credits'].normalize():,f} credits and "
            f"{estimate['available'].normalize():,f} are available: messages the balance "
            "cannot cover would not be sent, and the distribution would end Interrupted. Add "
            'credits, narrow the recipients, or send "accept_partial": true to send what the '
            "balance covers."
        )


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
    audience: str = "",
    accept_partial: bool = True,
    window_start: time | None = None,
    window_end: time | None = None,
    window_days: list | None = None,
    ignore_frequency_rules: bool = False,
    link_expiry_days: int | None = None,
    mode: str = Distribution.Mode.LINK,
    library_message: LibraryMessage | None = None,
) -> Distribution:
    """Schedule a distribution (``send_at`` None or past: now). Queued after commit when due.

    ``library_message``: a message of the brand's library whose text (and subject) is copied
    where ``message`` (``subject``) is empty; later edits of it change nothing here.

    ``accept_partial=False`` (the API's default): an SMS distribution whose estimated cost
    (``charging.credits_estimate``, as the schedule page shows it) exceeds the brand's
    available credits raises ``InsufficientCredits`` instead of being scheduled to end
    Interrupted. Self-service brands pay their provider and are never refused.

    An email (``channel="email"``) has a ``subject``, an HTML ``message`` (scripts stripped), an
    optional ``text_body`` (else generated), a From name and address (defaults: the brand's
    email settings, else the platform's) and a Reply-To. ``trigger="completion"`` (thank-you
    emails only) sends to each recipient when they complete the survey, from now until the
    distribution is cancelled. ``audience="started"`` (reminders only) targets the participants
    who started the survey and did not finish it, instead of every non-respondent.
    """
    message, subject = library_message_fill(
        library_message=library_message, channel=channel, message=message, subject=subject
    )
    spec = DistributionSpec(
        channel=channel,
        kind=kind,
        message=message,
        sender=sender,
        parent=parent,
        conditions=conditions,
        trigger=trigger,
        audience=audience,
        subject=subject,
        text_body=text_body,
        from_name=from_name,
        from_address=from_address,
        reply_to=reply_to,
        window_start=window_start,
        window_end=window_end,
        window_days=window_days or [],
        link_expiry_days=link_expiry_days,
        mode=mode,
    )
    return distribution_create_from_spec(
        project=project,
        spec=spec,
        send_at=send_at,
        name=name,
        actor=actor,
        accept_partial=accept_partial,
        ignore_frequency_rules=ignore_frequency_rules,
        library_message=library_message,
    )


def distribution_create_from_spec(
    *,
    project: Project,
    spec: DistributionSpec,
    send_at: datetime | None = None,
    name: str = "",
    actor=None,
    accept_partial: bool = True,
    ignore_frequency_rules: bool = False,
    origin: Distribution | None = None,
    origin_kind: str = "",
    library_message=None,
) -> Distribution:
    """Schedule the distribution ``spec`` describes, after every rule of ``spec_errors`` (the
    one path of create, recurring runs, copies, tries again and resends). Queued after commit
    when due. ``accept_partial``: as ``distribution_create``'s. ``ignore_frequency_rules`` (brand
    admins only: the caller checks the role) is recorded with who and when.
    ``origin``/``origin_kind``: the distribution it was made from and how
    (``distributions.copies``); ``library_message``: the library message its text was copied
    from."""
    now = timezone.now()
    send_at = send_at or now
    spec = spec_clean(spec, brand=project.brand)
    errors = schedule_errors(project=project, send_at=max(send_at, now))
    errors.update(spec_errors(spec, project=project))
    if errors:
        raise ValidationError(errors)
    if spec.channel == Distribution.Channel.SMS and not accept_partial:
        estimate = credits_estimate(
            project=project,
            message=spec.message,
            mode=spec.mode,
            conditions=spec.conditions,
            kind=spec.kind,
            parent=spec.parent,
            audience=spec.audience,
        )
        if estimate is not None and not estimate["covered"]:
            raise InsufficientCredits(estimate)
    distribution = Distribution.objects.create(
        project=project,
        kind=spec.kind,
        parent=spec.parent,
        name=(name or "").strip()[:200],
        send_at=send_at,
        trigger=spec.trigger,
        audience=spec.audience,
        created_by=actor if getattr(actor, "pk", None) else None,
        origin=origin,
        origin_kind=origin_kind,
        library_message=library_message,
        **spec.stored_fields(),
        **_frequency_waiver(ignore_frequency_rules, actor=actor, now=now),
    )
    if send_at <= now:
        _queue_start(distribution.pk)
    return distribution


def _frequency_waiver(ignore: bool, *, actor, now: datetime) -> dict:
    """The fields that record a brand admin's "ignore frequency rules" (its audit trail)."""
    if not ignore:
        return {}
    logger.info("Frequency rules ignored by %s", getattr(actor, "pk", None))
    return {
        "ignore_frequency_rules": True,
        "frequency_rules_ignored_by": actor if getattr(actor, "pk", None) else None,
        "frequency_rules_ignored_at": now,
    }


def _queue_start(distribution_id: int) -> None:
    task_queue("distributions.tasks.distribution_start_task", distribution_id)


EDITABLE = (
    "message",
    "sender",
    "conditions",
    "send_at",
    "name",
    *EMAIL_FIELDS,
    "window_start",
    "window_end",
    "window_days",
    "link_expiry_days",
)


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
        if locked.channel != Distribution.Channel.EMAIL and set(changes) & set(EMAIL_FIELDS):
            raise ValidationError(
                dict.fromkeys(
                    sorted(set(changes) & set(EMAIL_FIELDS)), "Only emails have this field."
                )
            )
        for name, value in changes.items():
            setattr(locked, name, value.strip() if isinstance(value, str) else value)
        spec = spec_clean(DistributionSpec.of(locked), brand=locked.project.brand)
        now = timezone.now()
        errors = schedule_errors(project=locked.project, send_at=max(locked.send_at, now))
        errors.update(spec_errors(spec, project=locked.project, exclude_id=locked.pk))
        if errors:
            raise ValidationError(errors)
        for name, value in spec.stored_fields().items():
            setattr(locked, name, value)
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
            stopped = open_messages_close(
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
            distribution_end(
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
        if distribution.channel == Distribution.Channel.EMAIL:
            _enforce_weekly_limit(distribution)
        reserve_credits(distribution=distribution)
        pending = distribution_enqueue(distribution=distribution)
    if not pending:
        distribution_finish_if_done(distribution_id=distribution.pk)
    return {"started": True, "pending": pending, **counts}


def _enforce_weekly_limit(distribution: Distribution) -> None:
    """At start: if the brand's weekly email limit cannot take this run, nothing is sent."""

    pending = Message.objects.filter(distribution=distribution, status=MStatus.PENDING)
    error = weekly_limit_error(
        brand=distribution.project.brand, wanted=pending.count(), exclude_id=distribution.pk
    )
    if error:
        open_messages_close(distribution, status=MStatus.FAILED, reason=f"Not sent: {error}")


def distribution_on_completion(*, responses: list[Response]) -> int:
    """Recipients completed the survey: queue their projects' completion-triggered thank-you
    emails to them (once per distribution and participant; each recipient on its own, as
    the weekly limit counts them). The distributions are read in one query for them all.
    Returns how many were queued."""
    participants: dict[int, list[int]] = {}
    for response in responses:
        if response.participant_id:
            participants.setdefault(response.project_id, []).append(response.participant_id)
    if not participants:
        return 0

    queued = 0
    for distribution in Distribution.objects.filter(
        project_id__in=participants,
        trigger=Distribution.TRIGGER_COMPLETION,
        status=Status.IN_PROGRESS,
    ).select_related("project__brand"):
        for participant_id in participants[distribution.project_id]:
            with transaction.atomic():
                distribution_materialise(
                    distribution=distribution, participant_ids=[participant_id]
                )
                error = weekly_limit_error(brand=distribution.project.brand, wanted=1)
                if error:
                    open_messages_close(
                        distribution, status=MStatus.FAILED, reason=f"Not sent: {error}"
                    )
                queued += distribution_enqueue(distribution=distribution)
    return queued


def distribution_preview_count(*, project: Project, conditions: list | None) -> int:
    """How many participants match ``conditions`` (before scheduling)."""
    return (
        Participant.objects.filter(project=project)
        .filter(
            conditions_q(
                conditions_clean(conditions), spellings=metadata_spellings(project_id=project.pk)
            )
        )
        .count()
    )


def distribution_policy_preview(
    *,
    project: Project,
    channel: str = Distribution.Channel.SMS,
    kind: str = Distribution.Kind.INVITE,
    parent: Distribution | None = None,
    conditions: list | None = None,
    window_start: time | None = None,
    window_end: time | None = None,
    window_days: list | None = None,
    ignore_frequency_rules: bool = False,
    audience: str = "",
    mode: str = Distribution.Mode.LINK,
    **_ignored,
) -> dict:
    """Before scheduling: the recipients quiet hours and the send window would hold back if
    it went now, and when they would receive it (``policies.plan_preview``), and how many a
    contact frequency rule would skip."""
    draft = Distribution(
        project=project,
        channel=channel,
        kind=kind,
        parent=parent,
        conditions=conditions_clean(conditions or []),
        window_start=window_start,
        window_end=window_end,
        window_days=window_days or [],
        ignore_frequency_rules=ignore_frequency_rules,
        audience=audience or "",
        mode=mode or Distribution.Mode.LINK,
    )
    now = timezone.now()
    audience = recipients_queryset(draft)
    preview = policies.plan_preview(distribution=draft, queryset=audience, now=now)
    rules = policies.frequency_rules_for(draft)
    skipped = policies.frequency_skipped_count(
        distribution=draft, queryset=audience, rules=rules, now=now
    )
    return {**preview, "frequency_skipped": skipped}


def distribution_materialise(
    *, distribution: Distribution, participant_ids: list[int] | None = None
) -> dict:
    """Insert one recipient row per selected participant, in one statement.

    The first participant with a phone number gets Pending, later ones with the same number
    Duplicated; no phone: Skipped; opted out: Skipped (opt-out). Existing rows are kept.
    Emails: the same, with addresses compared without case and malformed ones Skipped.
    """

    is_email = distribution.channel == Distribution.Channel.EMAIL
    address_field = "person__email" if is_email else "person__phone"
    partition = Lower(F(address_field)) if is_email else F(address_field)
    if connection.vendor == "postgresql":
        # Equal under the database's (deterministic) collation is equal byte for byte: sorting
        # for the window under "C" finds the same duplicates, several times faster.
        partition = Collate(partition, "C")
    now = timezone.now()
    # Quiet hours and send windows: a row its recipient may not receive now is Pending with a
    # later ``due_at`` (distributions.policies); None when nobody is held back.
    plan = policies.distribution_plan(distribution=distribution, now=now)
    zones = ("tz", "phone") if plan else ()
    # Contact frequency rules: ``freq_rule`` is the rule a recipient is over (None: none).
    rules = policies.frequency_rules_for(distribution)
    freq = tuple(f"fm{index}" for index in range(len(rules)))
    audience = recipients_queryset(distribution, participant_ids)
    if rules:
        audience = policies.frequency_annotate(audience, distribution=distribution, rules=rules)
    selected = (
        audience.order_by()
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
            **({"tz": F("person__time_zone"), "phone": F("person__phone")} if plan else {}),
        )
        .values("pid", "person_ref", "address", "opted_out", "rn", *zones, *freq)
    )
    inner_sql, inner_params = selected.query.sql_with_params()
    if rules:  # the selection with ``freq_rule``: the first rule each row is over
        inner_sql, inner_params = policies.frequency_sql(
            distribution=distribution, rules=rules, now=now
        ).wrap(inner_sql, inner_params)
    held = policies.plan_sql(plan, brand_id=distribution.project.brand_id) if plan else None
    rule_reason = "CASE sel.freq_rule " + " ".join("WHEN %s THEN %s" for _ in rules) + " END"
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
            {", due_at" if held else ""}
        )
        SELECT %s, sel.pid, sel.person_ref, sel.address,
            CASE WHEN sel.address = '' OR sel.address IS NULL THEN %s
                 WHEN {invalid} THEN %s
                 WHEN sel.opted_out THEN %s
                 WHEN sel.rn > 1 THEN %s
                 {"WHEN sel.freq_rule IS NOT NULL THEN %s" if rules else ""}
                 ELSE %s END,
            CASE WHEN sel.address = '' OR sel.address IS NULL THEN %s
                 WHEN {invalid} THEN %s
                 WHEN sel.opted_out THEN %s
                 WHEN sel.rn > 1 THEN %s
                 {f"WHEN sel.freq_rule IS NOT NULL THEN {rule_reason}" if rules else ""}
                 ELSE {held.label if held else "''"} END,
            %s, '', 0, '', '', 0, ''
            {", " + held.due if held else ""}
        FROM ({inner_sql}) sel {held.joins if held else ""}
        WHERE 1 = 1
        ON CONFLICT DO NOTHING
    """  # noqa: S608

    no_address = "No phone number" if distribution.channel == "sms" else "No email address"
    reasons = policies.frequency_reasons(rules)
    invalid_reason = "Invalid email address" if is_email else "Invalid phone number"
    params = [
        distribution.pk,
        MStatus.SKIPPED,
        MStatus.SKIPPED,
        MStatus.SKIPPED_OPTOUT,
        MStatus.DUPLICATED,
        *([MStatus.SKIPPED_FREQUENCY] if rules else []),
        MStatus.PENDING,
        no_address,
        invalid_reason,
        "Opted out",
        "Same address as another recipient",
        *(value for pair in reasons for value in pair),
        *(held.label_params if held else ()),
        now,
        *(held.due_params if held else ()),
        *inner_params,
        *(held.join_params if held else ()),
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
        if rules:
            policies.frequency_lock(brand_id=distribution.project.brand_id)
        if connection.vendor == "postgresql" and rules:
            # Frequency rules may skip most of the rows: their events in the same statement,
            # from the rows it inserts, not a second read of them (SQLite has no INSERT in a
            # WITH). Without rules few rows are not sendable and the second statement reads
            # only those (by index): RETURNING every row cost a plain materialisation of
            # 1,000,000 rows 3-4.5 s (13.9-15.2 s without it; docs/benchmarks.md).
            events_sql, events_params = _materialised_events_sql(distribution, now)
            sql = f"WITH ins AS ({sql} RETURNING id, status, status_reason) {events_sql}"
            params = [*params, *events_params]
            cursor.execute(sql, params)
        else:
            cursor.execute(sql, params)
            _record_materialised_events(distribution, now)
    return distribution_counts(distribution_id=distribution.pk)


def _earlier_rows_without_event(distribution: Distribution, now: datetime) -> tuple[str, list]:
    """The distribution's not-sendable rows from before this materialisation (kept as they
    were) that have no event: ``SELECT`` id, status, at, source, detail.

    Only these are checked for an event: that anti-join reads the table the materialisation
    grows, and right after a bulk insert, on statistics that still said empty, it was planned
    as a scan of the events per row (quadratic: 7 s for 20,000 rows; docs/benchmarks.md)."""
    table = MessageEvent._meta.db_table
    marks = ", ".join(["%s"] * len(Message.NOT_SENDABLE))
    sql = f"""SELECT m.id, m.status, %s, %s, m.status_reason FROM {Message._meta.db_table} m
        WHERE m.distribution_id = %s AND m.status IN ({marks}) AND m.status_changed_at <> %s
          AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.message_id = m.id)"""  # noqa: S608
    params = [now, MessageEvent.Source.MATERIALISE, distribution.pk, *Message.NOT_SENDABLE, now]
    return sql, params


def _materialised_events_sql(distribution: Distribution, now: datetime) -> tuple[str, list]:
    """PostgreSQL: ``INSERT`` the events ``SELECT`` from ``ins`` (the rows the statement
    inserts: id, status, status_reason), one per row not sendable, and those of the
    distribution's earlier rows without one (the statement's snapshot does not see the rows
    it inserts: for a new distribution, that part finds nothing)."""
    marks = ", ".join(["%s"] * len(Message.NOT_SENDABLE))
    earlier, earlier_params = _earlier_rows_without_event(distribution, now)
    sql = f"""INSERT INTO {MessageEvent._meta.db_table} (message_id, status, at, source, detail)
        SELECT ins.id, ins.status, %s, %s, ins.status_reason FROM ins
        WHERE ins.status IN ({marks})
        UNION ALL {earlier}"""  # noqa: S608
    params = [now, MessageEvent.Source.MATERIALISE, *Message.NOT_SENDABLE, *earlier_params]
    return sql, params


def _record_materialised_events(distribution: Distribution, now: datetime) -> None:
    """SQLite: one event per row that was not sendable at materialisation (set-based). A
    row a send policy holds back has no event of its own: it is Pending like every other,
    and its ``status_reason`` (shown in the recipient history) gives its planned local time.

    The rows this materialisation inserted (their status changed at ``now``) have no event
    yet: they are taken without looking for one; the distribution's earlier rows are
    checked (``_earlier_rows_without_event``)."""
    table = MessageEvent._meta.db_table
    marks = ", ".join(["%s"] * len(Message.NOT_SENDABLE))
    earlier, earlier_params = _earlier_rows_without_event(distribution, now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (message_id, status, at, source, detail)
            SELECT m.id, m.status, %s, %s, m.status_reason FROM {Message._meta.db_table} m
            WHERE m.distribution_id = %s AND m.status IN ({marks})
              AND m.status_changed_at = %s
            UNION ALL {earlier}
            """,  # noqa: S608
            [
                now,
                MessageEvent.Source.MATERIALISE,
                distribution.pk,
                *Message.NOT_SENDABLE,
                now,
                *earlier_params,
            ],
        )


# --- status ingest: provider callbacks, simulated receipts, reconciliation ------------------


def message_status_ingest(
    *,
    provider: str,
    provider_status: str,
    provider_id: str = "",
    message_id: int | None = None,
    error_code: str = "",
    source: str = MessageEvent.Source.CALLBACK,
) -> bool:
    """Apply a status that provider ``provider`` (its code) reported, classified by its
    provider class (which statuses count, which errors mean Blocked or an opt-out)."""
    update = provider_classes()[provider].status_update(
        provider_status=provider_status,
        provider_id=provider_id,
        error_code=error_code,
        message_id=message_id,
    )
    return status_update_apply(update=update, source=source)


def status_update_apply(
    *, update: StatusUpdate, source: str = MessageEvent.Source.CALLBACK
) -> bool:
    """Apply a classified provider status to its message if it moves it forward. True if it
    changed.

    Out-of-order and repeated callbacks change nothing: a Delivered row never goes back.
    A callback that arrives before the worker recorded the send still counts (the row is
    found by ``message_id``). A recipient the carrier says unsubscribed is opted out.
    """
    status = update.status
    if status is None:
        return False
    error_code = update.error_code
    provider_status, provider_id, message_id = (
        update.provider_status,
        update.provider_id,
        update.message_id,
    )
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
    if update.recipient_opted_out:
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


def distributions_resend_missed(*, project: Project, since: datetime, actor=None) -> list:
    """Schedule again, now, each distribution that failed since ``since`` because the project
    was paused (nothing of it was sent). Returns the new distributions.

    Reminders still scheduled for a resent invite follow the new invite. A missed reminder
    whose invite is resent too is not resent: it would land right after its invite.
    """

    missed = list(missed_while_paused(project=project, since=since).order_by("send_at", "pk"))
    resent: dict[int, Distribution] = {}
    for original in missed:
        if original.parent_id in resent:
            continue
        copy = distribution_create_from_spec(
            project=project,
            spec=DistributionSpec.of(original),
            name=f"{original} (resent after pause)",
            actor=actor,
        )
        resent[original.pk] = copy
        Distribution.objects.filter(parent=original, status=Distribution.Status.SCHEDULED).update(
            parent=copy
        )
    return list(resent.values())
