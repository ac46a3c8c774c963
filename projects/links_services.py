"""Transactional personal links: one call upserts the person and the participant, stores the
transaction and makes the link, in one database transaction.

Idempotent by data: the ``Idempotency-Key`` (or the caller's transaction id) is unique per
project on ``Transaction``; a retry with the same body answers the stored link, the same key
with another body raises ``IdempotencyConflict`` naming what differs. Every link belongs to
the project's transactional distribution of its channel label, so it counts as an invite.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from distributions.models import Distribution
from distributions.rendering import new_token
from participants.models import Participant, Person
from participants.phones import PhoneError, phone_to_e164
from participants.services import person_create, person_update
from projects.models import Project, Response, SurveyLink
from projects.transactions import Transaction

MAX_BULK_ITEMS = 1000
MAX_DATA_FIELDS = 100
IDENTITY_FIELDS = ("person_id", "email", "phone")
NAME_FIELDS = ("first_name", "last_name", "username")
# Distribution.channel of a transactional distribution whose label is not a sending channel.
OTHER_CHANNEL = "api"
# First key of our advisory locks ("tx"): the second is a hash of one contact identity.
IDENTITY_LOCK_CLASS = 0x7478


class ProjectNotCollecting(Exception):
    """The project does not accept responses now: ``reason`` is paused, closed or not_yet."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class IdempotencyConflict(Exception):
    """The key (or transaction id) was used before with another body: ``differences`` names
    the fields that differ (``transaction.data``, ``contact.email``...)."""

    def __init__(self, differences: list[str]):
        super().__init__(", ".join(differences))
        self.differences = differences


@dataclass
class LinkResult:
    link: SurveyLink
    transaction: Transaction
    created: bool


def request_fingerprint(body: dict) -> str:
    """sha256 of the canonical JSON of the call's body (key order and spacing do not count)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _differences(stored: dict, wanted: dict) -> list[str]:
    """Top-level fields that differ, one level deeper for objects (``contact.email``)."""
    names = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            inner = [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            names.extend(inner or [key])
        else:
            names.append(key)
    return names


def closed_reason(project: Project, *, now: datetime | None = None) -> str | None:
    """Why the project takes no responses now (None when it does)."""
    now = now or timezone.now()
    if project.stage == Project.Stage.ACTIVE and project.is_within_availability(now):
        return None
    if project.stage == Project.Stage.PAUSED:
        return "paused"
    if project.stage == Project.Stage.NEW:
        return "not_started"
    if (
        project.stage == Project.Stage.ACTIVE
        and project.available_from
        and now < project.available_from
    ):
        return "not_yet"
    return "closed"


def _stored(project: Project, *, key: str, external_id: str) -> Transaction | None:
    return (
        Transaction.objects.filter(project=project)
        .filter(Q(idempotency_key=key) | Q(external_id=external_id))
        .select_related("link", "participant__person")
        .order_by("pk")
        .first()
    )


def _replay(stored: Transaction, *, fingerprint: str, body: dict) -> LinkResult:
    if stored.fingerprint != fingerprint:
        raise IdempotencyConflict(_differences(stored.request, body) or ["body"])
    return LinkResult(link=stored.link, transaction=stored, created=False)


def _contact_values(contact: dict, *, country: str) -> dict[str, Any]:
    values = {k: (contact.get(k) or "").strip() for k in (*IDENTITY_FIELDS, *NAME_FIELDS)}
    values = {k: v for k, v in values.items() if v}
    if not any(values.get(k) for k in IDENTITY_FIELDS):
        raise ValidationError({"contact": "Give a person_id, an email or a phone."})
    if "email" in values:
        values["email"] = values["email"].lower()
    if "phone" in values:
        try:
            values["phone"] = phone_to_e164(values["phone"], default_country=country)
        except PhoneError as exc:
            raise ValidationError({"contact.phone": str(exc)}) from exc
    if contact.get("metadata"):
        values["metadata"] = dict(contact["metadata"])
    return values


def _lock_identity(brand_id: int, values: dict) -> None:
    """Serialise calls about one contact identity until the transaction ends, so that two
    simultaneous calls (different transactions) for one new email make one person. PostgreSQL
    only: SQLite's IMMEDIATE transactions already admit one writer at a time. A different
    identity of the same person (PersonID in one call, email only in the other) is not
    covered: the PersonID's unique constraint and one retry cover the PersonID case."""
    if connection.vendor != "postgresql":
        return
    kind = next(k for k in IDENTITY_FIELDS if values.get(k))
    digest = zlib.crc32(f"{brand_id}:{kind}:{values[kind]}".encode())
    key = digest - (1 << 32) if digest >= (1 << 31) else digest  # a signed 32-bit int
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [IDENTITY_LOCK_CLASS, key])


def _person_upsert(project: Project, contact: dict) -> Person:
    """The directory person: found by PersonID, else email, else phone; given values win."""
    values = _contact_values(contact, country=project.country)
    _lock_identity(project.brand_id, values)
    people = Person.objects.filter(brand_id=project.brand_id)
    person = None
    for key in IDENTITY_FIELDS:
        if values.get(key):
            person = people.filter(**{key: values[key]}).order_by("pk").first()
            if person is not None or key == "person_id":
                break
    if person is None:
        return person_create(brand=project.brand, country=project.country, **values)
    changes = {k: v for k, v in values.items() if k != "metadata" and getattr(person, k) != v}
    if "metadata" in values:
        merged = {**person.metadata, **values["metadata"]}
        if merged != person.metadata:
            changes["metadata"] = merged
    if changes:
        person = person_update(person=person, country=project.country, **changes)
    return person


def transactional_distribution(*, project: Project, label: str) -> Distribution:
    """The project's transactional distribution of ``label``, made on first use. Never sent:
    it holds the links made through the API so that they count as invites."""
    now = timezone.now()
    channel = label if label in Distribution.Channel.values else OTHER_CHANNEL
    distribution, _ = Distribution.objects.get_or_create(
        project=project,
        kind=Distribution.Kind.TRANSACTIONAL,
        label=label,
        defaults={
            "channel": channel,
            "name": f"Transactional links ({label})",
            "message": "",
            "status": Distribution.Status.SENT,
            "send_at": now,
            "started_at": now,
        },
    )
    return distribution


def transactional_link_create(
    *,
    project: Project,
    contact: dict,
    transaction_id: str,
    occurred_at: datetime | None = None,
    data: dict | None = None,
    channel_label: str = "api",
    expires_at: datetime | None = None,
    idempotency_key: str = "",
    body: dict | None = None,
) -> LinkResult:
    """Upsert the person and participant, store the transaction, make the personal link.

    ``body`` is the call's body as received (its fingerprint tells a retry from a reuse).
    Raises ``ValidationError`` (bad input), ``ProjectNotCollecting`` (paused, closed...) or
    ``IdempotencyConflict``. A retry, even a concurrent one, answers the stored link
    (``created`` False): of two simultaneous inserts of one key the second fails on the unique
    key, rolls back its whole work and reads the first.
    """
    body = body if body is not None else {}
    key = idempotency_key or f"txn:{transaction_id}"
    fingerprint = request_fingerprint(body)
    stored = _stored(project, key=key, external_id=transaction_id)
    if stored is not None:
        return _replay(stored, fingerprint=fingerprint, body=body)
    now = timezone.now()
    reason = closed_reason(project, now=now)
    if reason:
        raise ProjectNotCollecting(reason)
    if expires_at is not None and expires_at <= now:
        raise ValidationError({"expires_at": "Must be in the future."})
    arguments = {
        "project": project,
        "contact": contact,
        "transaction_id": transaction_id,
        "occurred_at": occurred_at or now,
        "data": data,
        "channel_label": channel_label,
        "expires_at": expires_at,
        "key": key,
        "fingerprint": fingerprint,
        "body": body,
    }
    try:
        return _create(**arguments)
    except ValidationError as exc:
        # A concurrent call (or an import) inserted this new PersonID first: the second try
        # finds that person and updates it.
        if "person_id" not in getattr(exc, "error_dict", {}):
            raise
        return _create(**arguments)


def _create(
    *,
    project: Project,
    contact: dict,
    transaction_id: str,
    occurred_at: datetime,
    data: dict | None,
    channel_label: str,
    expires_at: datetime | None,
    key: str,
    fingerprint: str,
    body: dict,
) -> LinkResult:
    try:
        with transaction.atomic():
            person = _person_upsert(project, contact)
            participant, _ = Participant.objects.get_or_create(project=project, person=person)
            distribution = transactional_distribution(project=project, label=channel_label)
            link = SurveyLink.objects.create(
                token=new_token(),
                project=project,
                participant=participant,
                distribution=distribution,
                channel=Response.Channel.API,
                expires_at=expires_at,
            )
            record = Transaction.objects.create(
                project=project,
                participant=participant,
                link=link,
                external_id=transaction_id,
                occurred_at=occurred_at,
                data=data or {},
                channel_label=channel_label,
                idempotency_key=key,
                fingerprint=fingerprint,
                request=body,
            )
    except IntegrityError:
        stored = _stored(project, key=key, external_id=transaction_id)
        if stored is None:
            raise
        return _replay(stored, fingerprint=fingerprint, body=body)
    participant.person = person
    record.participant = participant
    return LinkResult(link=link, transaction=record, created=True)
