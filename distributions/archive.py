"""Delete a Scheduled distribution; archive a finished one, or restore it. Both are in the audit
trail (``distributions.audit``), which outlives a deleted distribution.

Archiving only hides: the distribution, its recipient rows and history, its ledger entries
and usage stay as they were (its page and history CSV still answer, the licence usage report
still counts it); lists leave it out unless asked for archived ones.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distributions.audit import Action, distribution_audit_record
from distributions.models import Distribution

Status = Distribution.Status


def _locked(distribution: Distribution) -> Distribution:
    """The distribution, row-locked until the caller's transaction ends."""
    return (
        Distribution.objects.select_for_update().select_related("project").get(pk=distribution.pk)
    )


def distribution_delete(*, distribution: Distribution, actor=None) -> int:
    """Delete a Scheduled distribution (nothing of it was sent). Refused once it started, and
    for an invite that Scheduled reminders follow (they would silently turn into reminders of
    the whole project): delete or cancel them first. Returns the deleted id."""
    with transaction.atomic():
        locked = _locked(distribution)
        if locked.status != Status.SCHEDULED:
            raise ValidationError(
                {
                    "status": f"Only a Scheduled distribution can be deleted; this one is "
                    f"{locked.get_status_display()} (archive it instead once it is finished)."
                }
            )
        followers = list(
            Distribution.objects.filter(parent=locked, status=Status.SCHEDULED).values_list(
                "pk", flat=True
            )
        )
        if followers:
            raise ValidationError(
                {
                    "reminders": "Scheduled reminders follow this invite (distributions "
                    f"{', '.join(map(str, followers))}): delete or cancel them first."
                }
            )
        distribution_audit_record(
            distribution=locked,
            action=Action.DELETED,
            actor=actor,
            detail=f"Deleted while scheduled for {locked.send_at:%Y-%m-%d %H:%M} UTC.",
        )
        pk = locked.pk
        locked.delete()
    return pk


def distribution_archive(*, distribution: Distribution, actor=None) -> Distribution:
    """Hide a finished distribution from lists (Sent, Failed, Interrupted or Cancelled)."""
    with transaction.atomic():
        locked = _locked(distribution)
        if not locked.is_finished:
            raise ValidationError(
                {
                    "status": f"Only a finished distribution can be archived; this one is "
                    f"{locked.get_status_display()}."
                }
            )
        if locked.archived_at is None:
            locked.archived_at = timezone.now()
            locked.save(update_fields=["archived_at", "updated_at"])
            distribution_audit_record(distribution=locked, action=Action.ARCHIVED, actor=actor)
    return locked


def distribution_unarchive(*, distribution: Distribution, actor=None) -> Distribution:
    """Show an archived distribution in lists again."""
    with transaction.atomic():
        locked = _locked(distribution)
        if locked.archived_at is not None:
            locked.archived_at = None
            locked.save(update_fields=["archived_at", "updated_at"])
            distribution_audit_record(distribution=locked, action=Action.UNARCHIVED, actor=actor)
    return locked
