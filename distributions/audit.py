"""The distributions' audit trail: one ``DistributionAudit`` row per copy, try again, resend,
test message, delete, archive and restore (who, when, what). Rows outlive the distribution."""

from __future__ import annotations

from django.db.models import QuerySet

from brands.models import Brand
from distributions.models import Distribution, DistributionAudit

Action = DistributionAudit.Action


def distribution_audit_record(
    *, distribution: Distribution, action: str, actor=None, detail: str = ""
) -> DistributionAudit:
    """Record ``action`` on ``distribution`` by ``actor`` (None: an API key or the system)."""
    return DistributionAudit.objects.create(
        brand_id=distribution.project.brand_id,
        distribution=distribution,
        distribution_ref=distribution.pk,
        distribution_name=str(distribution)[:200],
        action=action,
        actor=actor if getattr(actor, "pk", None) else None,
        detail=detail[:300],
    )


def distribution_audit_list(*, brand: Brand, distribution_id: int | None = None) -> QuerySet:
    """The brand's audit trail, newest first; of one distribution (deleted or not) if given."""
    queryset = DistributionAudit.objects.for_brand(brand).select_related("actor")
    if distribution_id is not None:
        queryset = queryset.filter(distribution_ref=distribution_id)
    return queryset
