"""Writes for projects. Stage changes go through ``project_change_stage`` only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from brands.models import Brand
from projects.hooks import project_resumed
from projects.models import Project, ProjectStageChange

Stage = Project.Stage

# Which stage may follow which (docs/survey.md, "Stages and pausing"). Closed projects can be
# restarted, but only once the availability window that closed them is removed.
STAGE_TRANSITIONS: dict[str, frozenset[str]] = {
    Stage.NEW: frozenset({Stage.ACTIVE, Stage.CLOSED}),
    Stage.ACTIVE: frozenset({Stage.PAUSED, Stage.CLOSED}),
    Stage.PAUSED: frozenset({Stage.ACTIVE, Stage.CLOSED}),
    Stage.CLOSED: frozenset({Stage.ACTIVE}),
}


def _validate_window(available_from: datetime | None, available_until: datetime | None) -> None:
    if available_from and available_until and available_until <= available_from:
        raise ValidationError({"available_until": "Must be later than available_from."})


def project_create(
    *,
    brand: Brand,
    name: str,
    kind: str = Project.Kind.ENGAGEMENT,
    actor=None,
    available_from: datetime | None = None,
    available_until: datetime | None = None,
    default_country: str = "",
    by_invitation_only: bool = False,
    anonymous_one_answer: bool = False,
    closed_message: str = "",
    **policies: Any,
) -> Project:
    """A new project; ``policies``: its time zone and quiet hours (``POLICY_FIELDS``)."""
    unknown = set(policies) - set(POLICY_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "Unknown field."))
    _validate_window(available_from, available_until)
    project = Project(
        brand=brand,
        name=name,
        kind=kind,
        available_from=available_from,
        available_until=available_until,
        default_country=(default_country or "").upper(),
        by_invitation_only=by_invitation_only,
        anonymous_one_answer=anonymous_one_answer,
        closed_message=(closed_message or "").strip(),
        created_by=actor if getattr(actor, "pk", None) else None,
        **policies,
    )
    project.full_clean()
    project.save()
    return project


# A project's send policies (docs/policies.md): its recipients' fallback zone, quiet hours.
POLICY_FIELDS = (
    "time_zone",
    "quiet_hours_override",
    "quiet_hours_start",
    "quiet_hours_end",
    "quiet_hours_sms",
    "quiet_hours_email",
    "link_expiry_days",
)
EDITABLE_FIELDS = (
    "name",
    "kind",
    "available_from",
    "available_until",
    "default_country",
    "by_invitation_only",
    *POLICY_FIELDS,
    "anonymous_one_answer",
    "closed_message",
)


def project_update(*, project: Project, actor=None, **changes) -> Project:
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "This field cannot be changed here."))
    for name, value in changes.items():
        setattr(project, name, value.upper() if name == "default_country" and value else value)
    _validate_window(project.available_from, project.available_until)
    project.full_clean()
    project.save()
    return project


def project_change_stage(
    *,
    project: Project,
    stage: str,
    actor=None,
    reason: str = "",
    let_in_progress_finish: bool = True,
    keep_partial_responses: bool = True,
    resend_missed: bool = True,
) -> Project:
    """Move ``project`` to ``stage`` or raise ValidationError saying why it cannot.

    Locks the row so that two concurrent changes cannot both apply. Side effects, in the same
    transaction (see ``_apply_stage_effects``): pausing records the pause dialog's choices for
    respondents in the middle of the survey (``let_in_progress_finish``) and for their partial
    answers (``keep_partial_responses``); resuming sends again, now, the distributions that fell
    due and failed while the project was paused (``resend_missed``).
    """
    if stage not in Stage.values:
        raise ValidationError(
            {"stage": f"Unknown stage '{stage}'. Choose one of: {', '.join(Stage.values)}."}
        )
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        current = locked.stage
        if stage == current:
            raise ValidationError(
                {"stage": f"The project is already {locked.get_stage_display()}."}
            )
        if stage not in STAGE_TRANSITIONS[current]:
            raise ValidationError(
                {"stage": f"{Stage(current).label} projects cannot become {Stage(stage).label}."}
            )
        if (
            stage == Stage.ACTIVE
            and locked.available_until
            and locked.available_until <= timezone.now()
        ):
            raise ValidationError(
                {"stage": "The availability window has ended: extend or remove it first."}
            )
        locked.stage = stage
        _apply_stage_effects(
            locked,
            previous=current,
            actor=actor,
            let_in_progress_finish=let_in_progress_finish,
            keep_partial_responses=keep_partial_responses,
            resend_missed=resend_missed,
        )
        ProjectStageChange.objects.create(
            project=locked,
            from_stage=current,
            to_stage=stage,
            actor=actor if getattr(actor, "pk", None) else None,
            reason=reason[:200],
        )
    for name in STAGE_EFFECT_FIELDS:
        setattr(project, name, getattr(locked, name))
    return project


STAGE_EFFECT_FIELDS = (
    "stage",
    "updated_at",
    "collection_stopped_at",
    "stop_lets_in_progress_finish",
    "stop_keeps_partial_responses",
)


def _apply_stage_effects(
    locked: Project,
    *,
    previous: str,
    actor,
    let_in_progress_finish: bool,
    keep_partial_responses: bool,
    resend_missed: bool,
) -> None:
    """Save the new stage with what stopping or restarting collection implies.

    - Paused: links stop answering, except (if chosen) for respondents who opened the survey
      before this instant; their partial answers are kept or not, as chosen. Scheduled sends
      that fall due while paused end Failed with an empty history (the engine's rule,
      docs/survey.md "Stages and pausing"), and recurring series skip their runs.
    - Closed: nobody may finish any more; the partial-answer choice stands.
    - Active again: links answer; with ``resend_missed``, each distribution that failed because
      the project was paused is scheduled again, now, as a new distribution.
    """
    now = timezone.now()
    paused_since = None
    stop_started = previous == Stage.ACTIVE or locked.collection_stopped_at is None
    if locked.stage == Stage.PAUSED:
        locked.collection_stopped_at = now
        locked.stop_lets_in_progress_finish = let_in_progress_finish
        locked.stop_keeps_partial_responses = keep_partial_responses
    elif locked.stage == Stage.CLOSED:
        if stop_started:
            locked.collection_stopped_at = now
            locked.stop_keeps_partial_responses = keep_partial_responses
        locked.stop_lets_in_progress_finish = False
    elif locked.stage == Stage.ACTIVE:
        paused_since = locked.collection_stopped_at if previous == Stage.PAUSED else None
        locked.collection_stopped_at = None
        locked.stop_lets_in_progress_finish = True
        locked.stop_keeps_partial_responses = True
    locked.save(update_fields=STAGE_EFFECT_FIELDS)
    if locked.stage == Stage.ACTIVE and paused_since:
        project_resumed.fire(
            project=locked, paused_since=paused_since, resend_missed=resend_missed, actor=actor
        )


def projects_apply_availability(*, now: datetime | None = None) -> int:
    """Close every open project whose availability window has ended. Returns how many."""
    now = now or timezone.now()
    closed = 0
    due = Project.objects.filter(
        stage__in=[Stage.NEW, Stage.ACTIVE, Stage.PAUSED], available_until__lte=now
    ).only("pk", "stage")
    for project in due.iterator():
        try:
            project_change_stage(project=project, stage=Stage.CLOSED, reason="availability ended")
        except ValidationError:
            continue  # changed concurrently; the next run sees the new stage
        closed += 1
    return closed
