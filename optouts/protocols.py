"""What optouts reads of a recipient row of ``distributions`` (a layer above): the shape, not
the model, so that this app never imports it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from participants.models import Person
from projects.models import Project


class SentDistribution(Protocol):
    channel: str
    sender: str
    project: Project


class SentMessage(Protocol):
    """A ``distributions.models.Message``: one recipient row, sent or about to be."""

    pk: int
    address: str
    person: Person | None
    sent_at: datetime | None
    leased_at: datetime | None
    status_changed_at: datetime | None
    distribution: SentDistribution
