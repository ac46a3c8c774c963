"""Reads the distribution pages need and the API does not: list counts, the metadata fields a
project's participants carry, the audience preview, a sample message, outbox threads.

Everything here is read-only and takes already brand-scoped objects (a project or a
distribution fetched through ``get_scoped``, or a brand).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, F, Max, Q, QuerySet, Window
from django.db.models.functions import RowNumber

from distributions.conditions import conditions_clean
from distributions.models import Distribution, Message, OutboxMessage
from distributions.rendering import recipient_values, render
from distributions.services import distribution_preview_count, recipients_queryset
from participants.models import Participant, Person
from participants.selectors import project_metadata_keys
from projects.models import Project

MStatus = Message.Status
METADATA_FIELDS_LIMIT = 200  # distinct names shown in the form; a project rarely has 20
OUTBOX_THREAD_MESSAGES = 20  # latest messages shown per recipient number on the outbox page
# Placeholders (not secrets) as long as real link tokens, so that previews count right.
SAMPLE_TOKEN = "Ab3dE6gH9k"  # noqa: S105 - rendering.TOKEN_LENGTH characters
SAMPLE_OPT_OUT_TOKEN = "1xY2zA3bC4dE5f"  # noqa: S105 - b62(message id) + 10-char signature


def sample_link() -> str:
    return f"{settings.PUBLIC_BASE_URL}/s/{SAMPLE_TOKEN}"


def sample_opt_out_link() -> str:
    return f"{settings.PUBLIC_BASE_URL}/o/{SAMPLE_OPT_OUT_TOKEN}"


def with_counts(queryset: QuerySet) -> QuerySet:
    """Annotate recipients (rows materialised) and sent (handed to the provider)."""
    return queryset.annotate(
        recipients=Count("messages"),
        sent_count=Count("messages", filter=Q(messages__status__in=Message.HANDED_OVER)),
    )


def project_sms_distributions(*, project: Project) -> QuerySet:
    return with_counts(
        Distribution.objects.filter(project=project, channel=Distribution.Channel.SMS)
        .select_related("parent", "created_by")
        .order_by("-send_at", "-pk")
    )


def project_invites(*, project: Project) -> QuerySet:
    return Distribution.objects.filter(
        project=project, channel=Distribution.Channel.SMS, kind=Distribution.Kind.INVITE
    ).exclude(status=Distribution.Status.CANCELLED)


def project_metadata_fields(*, project: Project) -> list[str]:
    """Metadata field names of the project's participants (project and directory values),
    de-duplicated without regard to case (piped fields ignore case), sorted."""
    return _dedupe(project_metadata_keys(project_id=project.pk, limit=METADATA_FIELDS_LIMIT))


def _dedupe(names) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        if name and str(name).strip():
            seen.setdefault(str(name).casefold(), str(name))
    return sorted(seen.values(), key=str.casefold)


def project_roles(*, project: Project) -> list[str]:
    roles = (
        Participant.objects.filter(project=project)
        .exclude(role="")
        .values_list("role", flat=True)
        .distinct()
        .order_by("role")[:METADATA_FIELDS_LIMIT]
    )
    return list(roles)


@dataclass(frozen=True)
class AudiencePreview:
    participants: int
    with_phone: int


def audience_preview(
    *, project: Project, conditions: list | None, kind: str, parent: Distribution | None
) -> AudiencePreview:
    """How many participants a distribution with these settings would select now.

    Invites count through ``distribution_preview_count``; reminders also leave out
    respondents (and, after an invite, who it did not reach), like the send will.
    """
    cleaned = conditions_clean(conditions)
    if kind == Distribution.Kind.REMINDER:
        draft = Distribution(
            project=project, kind=kind, parent=parent, conditions=cleaned, channel="sms"
        )
        queryset = recipients_queryset(draft)
        total = queryset.count()
    else:
        total = distribution_preview_count(project=project, conditions=cleaned)
        draft = Distribution(project=project, kind=kind, conditions=cleaned, channel="sms")
        queryset = recipients_queryset(draft)
    with_phone = queryset.exclude(person__phone="").count() if total else 0
    return AudiencePreview(participants=total, with_phone=with_phone)


@dataclass(frozen=True)
class SampleMessage:
    recipient: str
    address: str
    body: str
    actual: bool  # True: the body that was sent; False: rendered now for a preview


def sample_message(*, distribution: Distribution) -> SampleMessage | None:
    """One recipient's message: the body actually sent if there is one, else the message
    rendered for the first participant the distribution selects (sample links)."""
    sent = (
        Message.objects.filter(distribution=distribution)
        .exclude(body="")
        .select_related("person")
        .order_by("pk")
        .first()
    )
    if sent is not None:
        person = sent.person
        return SampleMessage(
            recipient=(person.full_name or str(person)) if person else "",
            address=sent.address,
            body=sent.body,
            actual=True,
        )
    participant = recipients_queryset(distribution).select_related("person").order_by("pk").first()
    if participant is None:
        participant = (
            Participant.objects.filter(project_id=distribution.project_id)
            .select_related("person")
            .order_by("pk")
            .first()
        )
    person = participant.person if participant else None
    values, metadata = recipient_values(
        person=person,
        participant=participant,
        link=sample_link(),
        opt_out_link=sample_opt_out_link(),
    )
    return SampleMessage(
        recipient=(person.full_name or str(person)) if person else "A participant",
        address=person.phone if person else "",
        body=render(distribution.message, values, metadata),
        actual=False,
    )


def history_page_queryset(*, distribution: Distribution, status: str | None) -> QuerySet:
    from distributions.selectors import history_queryset

    queryset = history_queryset(distribution=distribution).select_related("person")
    if status:
        queryset = queryset.filter(status=status)
    return queryset


# --- outbox ---------------------------------------------------------------------------------
def outbox_numbers(*, brand, number: str = "") -> QuerySet:
    """Recipient numbers of the brand's outbox, the most recently messaged first."""
    queryset = OutboxMessage.objects.for_brand(brand)
    if number:
        queryset = queryset.filter(to__icontains=number)
    return (
        queryset.values("to")
        .annotate(last_at=Max("created_at"), total=Count("pk"))
        .order_by("-last_at", "to")
    )


@dataclass
class OutboxThread:
    number: str
    total: int
    last_at: object
    person: Person | None
    messages: list[OutboxMessage]


def outbox_threads(*, brand, numbers: list[dict]) -> list[OutboxThread]:
    """The latest messages of each number (oldest first, as a phone shows a conversation),
    and who the number belongs to in the brand's directory."""
    wanted = [row["to"] for row in numbers]
    if not wanted:
        return []
    latest = (
        OutboxMessage.objects.for_brand(brand)
        .filter(to__in=wanted)
        .annotate(
            rn=Window(
                RowNumber(),
                partition_by=[F("to")],
                order_by=[F("created_at").desc(), F("pk").desc()],
            )
        )
        .filter(rn__lte=OUTBOX_THREAD_MESSAGES)
    )
    by_number: dict[str, list[OutboxMessage]] = {number: [] for number in wanted}
    for message in latest:
        by_number[message.to].append(message)
    people = {}
    for person in Person.objects.for_brand(brand).filter(phone__in=wanted).order_by("pk"):
        people.setdefault(person.phone, person)
    return [
        OutboxThread(
            number=row["to"],
            total=row["total"],
            last_at=row["last_at"],
            person=people.get(row["to"]),
            messages=sorted(by_number[row["to"]], key=lambda m: (m.created_at, m.pk)),
        )
        for row in numbers
    ]
