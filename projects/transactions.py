"""Transactions: the caller's event behind a transactional personal link.

One row per (project, caller's transaction id). ``idempotency_key`` (the ``Idempotency-Key``
header, or the transaction id when there is none) is unique per project, so two concurrent
retries of one call insert one row: the loser's whole database transaction rolls back and it
answers the stored link. ``fingerprint`` (sha256 of the canonical request body) tells a retry
from a reuse of the key with other data; ``request`` keeps that body to name the difference.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from brands.scoping import BrandScopedManager


class Transaction(models.Model):
    brand_path = "project__brand"

    # No index of its own: both unique constraints start with it.
    project = models.ForeignKey(
        "projects.Project", on_delete=models.CASCADE, related_name="transactions", db_index=False
    )
    participant = models.ForeignKey(
        "participants.Participant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="transactions",
    )
    link = models.OneToOneField(
        "projects.SurveyLink",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="transaction",
    )
    external_id = models.CharField(
        "transaction id", max_length=128, help_text="The caller's own id of the event."
    )
    occurred_at = models.DateTimeField()
    data = models.JSONField(default=dict, blank=True)
    channel_label = models.CharField(max_length=40)
    idempotency_key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    request = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BrandScopedManager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="transaction_unique_id_per_project"
            ),
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="transaction_unique_key_per_project",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id
