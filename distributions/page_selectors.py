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

from brands.models import Brand
from distributions.audiences import recipients_queryset
from distributions.conditions import conditions_clean
from distributions.email_content import render_email, sanitize_html
from distributions.email_services import WEEK, emails_sent_since, weekly_limit_for
from distributions.models import Distribution, EmailDomain, Message, OutboxMessage
from distributions.selectors import history_queryset
from distributions.services import distribution_preview_count
from distributions.stalls import distribution_stalls
from distributions.two_way import sms_template
from participants.models import Participant, Person
from participants.rendering import recipient_values, render
from participants.selectors import project_metadata_keys
from projects.models import Project

MStatus = Message.Status
METADATA_FIELDS_LIMIT = 200  # distinct names shown in the form; a project rarely has 20
OUTBOX_THREAD_MESSAGES = 20  # latest messages shown per recipient number on the outbox page
# Placeholders (not secrets, never valid) exactly as long as real link tokens, so that previews
# and the live counter count what is sent (tests/test_optout_links.py holds the lengths).
SAMPLE_TOKEN = "Ab3dE6gH9k"  # noqa: S105 - core.tokens.TOKEN_LENGTH characters
SAMPLE_OPT_OUT_TOKEN = "00001xY2zA3bC4dE"  # noqa: S105 - optouts.links.TOKEN_LENGTH characters


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


def with_stalls(distributions) -> list[Distribution]:
    """The distributions of a page, each stalled one marked (``d.stall``, else None): at most
    two queries for the whole page, whatever its size (``distributions.stalls``)."""
    items = list(distributions)
    stalls = distribution_stalls(distributions=items)
    for distribution in items:
        distribution.stall = stalls.get(distribution.pk)
    return items


def project_distributions(*, project: Project, channel: str) -> QuerySet:
    """A project's distributions on one channel (its Text messages or Emails tab), without
    test messages and archived ones (the brand's list shows those on request)."""
    return with_counts(
        Distribution.objects.filter(project=project, channel=channel, archived_at__isnull=True)
        .exclude(origin_kind=Distribution.Origin.TEST)
        .select_related("parent", "created_by")
        .order_by("-send_at", "-pk")
    )


def project_invites(*, project: Project, channel: str = Distribution.Channel.SMS) -> QuerySet:
    """The invites a reminder may follow: same project, same channel, not cancelled."""
    return Distribution.objects.filter(
        project=project, channel=channel, kind=Distribution.Kind.INVITE
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
    with_email: int = 0


def audience_preview(
    *,
    project: Project,
    conditions: list | None,
    kind: str,
    parent: Distribution | None,
    channel: str = Distribution.Channel.SMS,
    audience: str = "",
) -> AudiencePreview:
    """How many participants a distribution with these settings would select now, and how
    many of them have an address on ``channel`` (a phone number, or an email address).

    Invites count through ``distribution_preview_count``; reminders also leave out
    respondents (and, after an invite, who it did not reach), like the send will.
    """
    cleaned = conditions_clean(conditions)
    draft = Distribution(
        project=project,
        kind=kind,
        parent=parent,
        conditions=cleaned,
        channel=channel,
        audience=audience,
    )
    queryset = recipients_queryset(draft)
    if kind == Distribution.Kind.REMINDER:
        total = queryset.count()
    else:
        total = distribution_preview_count(project=project, conditions=cleaned)
    if channel == Distribution.Channel.EMAIL:
        with_email = (
            queryset.exclude(Q(person__email="") | Q(person__email__isnull=True)).count()
            if total
            else 0
        )
        return AudiencePreview(participants=total, with_phone=0, with_email=with_email)
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
        body=render(sms_template(distribution), values, metadata),
        actual=False,
    )


@dataclass(frozen=True)
class SampleEmail:
    recipient: str
    address: str
    subject: str
    html: str  # sanitised (no scripts), piped values HTML-escaped: for a sandboxed iframe
    text: str
    actual: bool  # True: the text part is the one that was sent


def sample_email(*, distribution: Distribution) -> SampleEmail:
    """One recipient's email, rendered as the engine renders it (``render_email`` on the
    sanitised body, sample links). ``distribution`` may be unsaved: the schedule form's draft.
    Once sent, the recipient is the first one emailed and the text part the one sent."""
    sent = None
    if distribution.pk:
        sent = (
            Message.objects.filter(distribution=distribution)
            .exclude(body="")
            .select_related("person", "participant")
            .order_by("pk")
            .first()
        )
    if sent is not None:
        person, participant = sent.person, sent.participant
    else:
        participant = (
            recipients_queryset(distribution).select_related("person").order_by("pk").first()
        )
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
    rendered = render_email(
        subject=distribution.subject or "",
        html_body=sanitize_html(distribution.message or ""),
        text_body=distribution.text_body or "",
        values=values,
        metadata=metadata,
    )
    return SampleEmail(
        recipient=(person.full_name or str(person)) if person else "A participant",
        address=sent.address if sent else (person.email if person else ""),
        subject=rendered.subject,
        html=rendered.html,
        text=sent.body if sent else rendered.text,
        actual=sent is not None,
    )


@dataclass(frozen=True)
class EmailAllowance:
    limit: int
    used: int  # emails handed to the mailer in the last 7 days

    @property
    def left(self) -> int:
        return max(0, self.limit - self.used)


def email_allowance(*, brand: Brand) -> EmailAllowance:
    """The brand's weekly email limit (the platform operator's) and what the last 7 days used."""
    from django.utils import timezone

    return EmailAllowance(
        limit=weekly_limit_for(brand),
        used=emails_sent_since(brand_id=brand.pk, since=timezone.now() - WEEK),
    )


def verified_email_domains(*, brand: Brand) -> QuerySet:

    return EmailDomain.objects.for_brand(brand).filter(verified_at__isnull=False).order_by("domain")


def history_page_queryset(*, distribution: Distribution, status: str | None) -> QuerySet:

    queryset = history_queryset(distribution=distribution).select_related("person")
    if status:
        queryset = queryset.filter(status=status)
    return queryset


# --- outbox ---------------------------------------------------------------------------------
def outbox_numbers(*, brand: Brand, number: str = "") -> QuerySet:
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


def outbox_threads(*, brand: Brand, numbers: list[dict]) -> list[OutboxThread]:
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
