"""Writes for projects. Stage changes go through ``project_change_stage`` only."""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from brands.models import Brand
from projects.models import Project, ProjectStageChange

Stage = Project.Stage

# Which stage may follow which. Closed projects can be restarted (the overview seed: "Restart
# your data collection"), but only once the availability window that closed them is removed.
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
) -> Project:
    _validate_window(available_from, available_until)
    project = Project(
        brand=brand,
        name=name,
        kind=kind,
        available_from=available_from,
        available_until=available_until,
        default_country=(default_country or "").upper(),
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    project.full_clean()
    project.save()
    return project


EDITABLE_FIELDS = ("name", "kind", "available_from", "available_until", "default_country")


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


def project_change_stage(*, project: Project, stage: str, actor=None, reason: str = "") -> Project:
    """Move ``project`` to ``stage`` or raise ValidationError saying why it cannot.

    Locks the row so that two concurrent changes cannot both apply.
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
        locked.save(update_fields=["stage", "updated_at"])
        ProjectStageChange.objects.create(
            project=locked,
            from_stage=current,
            to_stage=stage,
            actor=actor if getattr(actor, "pk", None) else None,
            reason=reason[:200],
        )
    project.stage = locked.stage
    project.updated_at = locked.updated_at
    return project


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
