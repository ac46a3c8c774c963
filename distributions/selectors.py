"""Reads for distributions: lists, metrics, history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import monotonic

from django.db import connection
from django.db.models import Count, F, Max, Min, OuterRef, Q, Sum
from django.utils import timezone

from brands.models import Brand
from credits.selectors import credits_consumed
from distributions.models import Distribution, Message, ProviderAccount
from distributions.spec import INACTIVE_PROJECT_MESSAGE
from optouts.models import Channel
from projects.models import Project
from surveys.respondents import is_respondent_subquery

MStatus = Message.Status
HISTORY_HEADER = [
    "PersonID",
    "First name",
    "Last name",
    "Phone number",
    "User name",
    "Respondent",
    "Status",
    "Timestamp",
]
# Email distributions: the recipient's address in an Email column, the directory's phone kept.
EMAIL_HISTORY_HEADER = [*HISTORY_HEADER[:4], "Email", *HISTORY_HEADER[4:]]
HISTORY_BATCH = 2000  # rows fetched per round trip; a server-side cursor on PostgreSQL


def history_header(distribution: Distribution) -> list[str]:
    return EMAIL_HISTORY_HEADER if distribution.channel == "email" else HISTORY_HEADER


LIST_ORDERINGS = {
    "send_at": ("send_at", "pk"),
    "-send_at": ("-send_at", "-pk"),
    "created_at": ("created_at", "pk"),
    "-created_at": ("-created_at", "-pk"),
    "name": ("name", "pk"),
    "-name": ("-name", "-pk"),
    "status": ("status", "-send_at", "-pk"),
    "-status": ("-status", "-send_at", "-pk"),
}
DEFAULT_ORDERING = "-send_at"


@dataclass(frozen=True)
class DistributionFilters:
    """What the distribution list (page and API) filters by; every field optional.

    ``search``: in the name and the message text (and an email's subject), ignoring case;
    ``created_by``: a user id; ``date_from``/``date_to``: the send date, inclusive, in the
    brand's time zone; ``archived``: False (default) hides archived distributions, True shows
    only them, None shows both."""

    search: str = ""
    project: int | None = None
    channel: str = ""
    kind: str = ""
    status: str = ""
    created_by: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    archived: bool | None = False
    ordering: str = DEFAULT_ORDERING

    @property
    def active(self) -> bool:
        """Any filter narrower than the default list."""
        return self != DistributionFilters(ordering=self.ordering)


def distribution_list(*, brand: Brand, filters: DistributionFilters | None = None):
    """The brand's distributions (never test messages), filtered and ordered."""
    filters = filters or DistributionFilters()
    queryset = (
        Distribution.objects.for_brand(brand)
        .exclude(origin_kind=Distribution.Origin.TEST)
        .select_related("project", "parent", "created_by")
    )
    if filters.search:
        words = filters.search.strip()
        queryset = queryset.filter(
            Q(name__icontains=words) | Q(message__icontains=words) | Q(subject__icontains=words)
        )
    exact = {
        "project_id": filters.project,
        "channel": filters.channel,
        "kind": filters.kind,
        "status": filters.status,
        "created_by_id": filters.created_by,
    }
    queryset = queryset.filter(**{key: value for key, value in exact.items() if value})
    zone = brand.zone
    if filters.date_from:
        start = datetime.combine(filters.date_from, time.min, tzinfo=zone)
        queryset = queryset.filter(send_at__gte=start)
    if filters.date_to:
        end = datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=zone)
        queryset = queryset.filter(send_at__lt=end)
    if filters.archived is not None:
        queryset = queryset.filter(archived_at__isnull=not filters.archived)
    ordering = LIST_ORDERINGS.get(filters.ordering, LIST_ORDERINGS[DEFAULT_ORDERING])
    return queryset.order_by(*ordering)


def distribution_metrics(*, distribution: Distribution) -> dict:
    """Participants included, messages sent, failed, delivered, opened, skipped, credits."""
    rows = (
        Message.objects.filter(distribution=distribution)
        .values("status")
        .annotate(n=Count("pk"), segments=Sum("segments"))
        .order_by()
    )
    by_status = {row["status"]: row["n"] for row in rows}
    total = sum(by_status.values())

    def count(*statuses):
        return sum(by_status.get(status, 0) for status in statuses)

    sent = count(*Message.HANDED_OVER)
    closed = total - count(*Message.OPEN_STATUSES)
    waiting = waiting_rows(distribution=distribution) if by_status.get(MStatus.PENDING) else {}

    email = {}
    if distribution.channel == Distribution.Channel.EMAIL:
        # The email metrics of docs/email.md: sent, failed, opened (the link), finished (responded),
        # bounced. ``failed`` here excludes bounces, which have their own count.
        email = {
            "email": {
                "sent": sent,
                "failed": count(MStatus.FAILED, MStatus.BLOCKED),
                "opened": count(MStatus.OPENED),
                "finished": history_queryset(distribution=distribution)
                .filter(respondent=True, status__in=Message.HANDED_OVER)
                .count(),
                "bounced": count(MStatus.BOUNCED),
            }
        }
    return {
        "participants": total,
        "sent": sent,
        "delivered": count(MStatus.DELIVERED, MStatus.OPENED),
        "opened": count(MStatus.OPENED),
        "failed": count(MStatus.FAILED, MStatus.BLOCKED, MStatus.BOUNCED),
        "blocked": count(MStatus.BLOCKED),
        "duplicated": count(MStatus.DUPLICATED),
        "skipped": count(MStatus.SKIPPED),
        "skipped_optout": count(MStatus.SKIPPED_OPTOUT),
        "skipped_frequency": count(MStatus.SKIPPED_FREQUENCY),
        "pending": count(*Message.OPEN_STATUSES),
        # Pending rows deferred to a later time (the provider asked to wait; later, a send
        # policy), and when the next and the last of them come due.
        "waiting": waiting.get("n", 0),
        "waiting_next": waiting.get("first"),
        "waiting_last": waiting.get("last"),
        "progress": round(100 * closed / total)
        if total
        else (100 if distribution.is_finished else 0),
        "credits": credits_consumed(distribution=distribution),
        "bounced": count(MStatus.BOUNCED),
        "by_status": by_status,
        **email,
    }


def waiting_rows(*, distribution: Distribution, now=None) -> dict:
    """How many Pending rows wait for a later time, and when the first and last come due
    (one index range of the distribution's Pending rows)."""
    now = now or timezone.now()
    return Message.objects.filter(
        distribution=distribution, status=MStatus.PENDING, due_at__gt=now
    ).aggregate(n=Count("pk"), first=Min("due_at"), last=Max("due_at"))


def related_distributions(*, distribution: Distribution):
    """The invite of a reminder and its other reminders, or an invite's reminders; and the
    distribution it was copied, tried again or resent from, and those made from it (test
    messages apart: ``test_messages``)."""
    root_id = distribution.parent_id or distribution.pk
    related = Q(pk=root_id) | Q(parent_id=root_id) | Q(origin_id=distribution.pk)
    if distribution.origin_id:
        related |= Q(pk=distribution.origin_id)
    return (
        Distribution.objects.filter(related)
        .exclude(pk=distribution.pk)
        .exclude(origin_kind=Distribution.Origin.TEST)
        .order_by("send_at", "pk")
    )


def test_messages(*, distribution: Distribution):
    """The test messages sent of ``distribution``, newest first, with their one row each."""
    return (
        Distribution.objects.filter(origin=distribution, origin_kind=Distribution.Origin.TEST)
        .select_related("created_by")
        .prefetch_related("messages")
        .order_by("-created_at", "-pk")
    )


def history_queryset(*, distribution: Distribution):
    """Recipient rows with ``respondent``: the participant completed the project's survey
    (``surveys.respondents``, as the reminder audience)."""
    respondent = is_respondent_subquery(
        project_ref=distribution.project_id, participant_ref=OuterRef("participant_id")
    )
    return (
        Message.objects.filter(distribution=distribution)
        .annotate(respondent=respondent)
        .order_by("pk")
    )


HISTORY_FIELDS = (
    "pk",
    "person__person_id",
    "person__first_name",
    "person__last_name",
    "address",
    "person__username",
    "person__phone",
    "person__email",
    "respondent",
    "status",
    "status_changed_at",
    "status_reason",
    "error_code",
    "segments",
    "provider_id",
)


def history_rows(*, distribution: Distribution, zone) -> Iterator[list]:
    """The history CSV's columns (docs/api.md), one row per recipient, streamed."""
    labels = dict(MStatus.choices)
    is_email = distribution.channel == Distribution.Channel.EMAIL
    values = history_queryset(distribution=distribution).values_list(*HISTORY_FIELDS)
    for row in values.iterator(chunk_size=HISTORY_BATCH):
        (
            _pk,
            person_id,
            first,
            last,
            address,
            username,
            phone,
            _email,
            respondent,
            status,
            changed,
            _reason,
            _code,
            _segments,
            _sid,
        ) = row
        yield [
            person_id or "",
            first or "",
            last or "",
            *([phone or "", address] if is_email else [address]),
            username or "",
            "Yes" if respondent else "No",
            labels.get(status, status),
            changed.astimezone(zone).isoformat(timespec="seconds") if changed else "",
        ]


def missed_while_paused(*, project: Project, since: datetime):
    """Distributions that fell due after ``since`` while the project was paused and failed
    for it, nothing of them sent (resuming can send them again)."""

    return Distribution.objects.filter(
        project=project,
        status=Distribution.Status.FAILED,
        finished_at__gte=since,
        status_reason=INACTIVE_PROJECT_MESSAGE.format(stage=Project.Stage.PAUSED.label),
        messages__isnull=True,
    )


# --- inbound replies --------------------------------------------------------------------------
RECENT_MESSAGES = 50  # the number's last messages read once per inbound reply


def brand_provider_account(brand: Brand) -> ProviderAccount | None:
    """The brand's SMS provider account (None: none): the one the inbound callback loaded
    with the brand, else read."""
    if Brand.provider_account.is_cached(brand):
        return getattr(brand, "provider_account", None)
    return ProviderAccount.objects.filter(brand=brand).first()


# The accounts an inbound webhook's numbers name, kept by each process: (To, messaging
# service, account) -> (their versions, the accounts with their brands, until when they are
# trusted without a read: ``monotonic()``). At most this many.
_INBOUND_ACCOUNTS: dict[tuple[str, str, str], tuple[tuple, list[ProviderAccount], float]] = {}
INBOUND_ACCOUNTS_KEPT = 1000
# How long kept accounts are used without checking their versions. A change saved in this
# process is seen at once (``inbound_accounts_forget`` on every save of an account or a
# brand); one saved by another process within this long (an auth token rotated, a number
# moved), and a request the kept tokens do not authenticate checks again at once
# (``inbound_accounts_expire``): an old token is accepted at most this long after its
# rotation, a new one at once.
INBOUND_ACCOUNTS_TRUSTED_SECONDS = 1.0


def inbound_accounts(
    *, to_number: str, service_sid: str = "", account_sid: str = ""
) -> list[ProviderAccount]:
    """The provider accounts (any provider) that send from ``to_number``, through the
    messaging service ``service_sid`` or under ``account_sid``, each with its brand, by id.

    Kept by the process: used without a read for ``INBOUND_ACCOUNTS_TRUSTED_SECONDS``, then
    checked by one raw read of the matching rows' ids, versions (``updated_at``: every save
    moves it) and brand names: a new or changed account (an auth token) is read again; an
    unchanged one skips the ORM's query building and the token's decryption (most of an
    inbound webhook's time otherwise). Numbers that match no account are never kept."""
    conditions, params = [], []
    for column, value in (
        ("default_sender", to_number),
        ("messaging_service_sid", service_sid),
        ("account_sid", account_sid),
    ):
        if value:
            conditions.append(f"a.{column} = %s")
            params.append(value)
    if not conditions:
        return []
    key = (to_number, service_sid, account_sid)
    kept = _INBOUND_ACCOUNTS.get(key)
    if kept is not None and monotonic() < kept[2]:
        return list(kept[1])
    accounts = connection.ops.quote_name(ProviderAccount._meta.db_table)
    brands = connection.ops.quote_name(Brand._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.id, a.updated_at, b.name FROM {accounts} a "  # noqa: S608 - names are ours
            f"JOIN {brands} b ON b.id = a.brand_id WHERE {' OR '.join(conditions)} ORDER BY a.id",
            params,
        )
        versions = tuple(tuple(row) for row in cursor.fetchall())
    trusted_until = monotonic() + INBOUND_ACCOUNTS_TRUSTED_SECONDS
    if kept is not None and kept[0] == versions:
        _INBOUND_ACCOUNTS[key] = (versions, kept[1], trusted_until)
        return list(kept[1])
    # Read after the versions: a row saved in between is newer than its version, so the next
    # call reads it again (never the other way round).
    rows = list(
        ProviderAccount.objects.filter(pk__in=[row[0] for row in versions])
        .select_related("brand")
        .order_by("pk")
    )
    if not rows:
        _INBOUND_ACCOUNTS.pop(key, None)
        return []
    if len(_INBOUND_ACCOUNTS) >= INBOUND_ACCOUNTS_KEPT:
        _INBOUND_ACCOUNTS.clear()
    _INBOUND_ACCOUNTS[key] = (versions, rows, trusted_until)
    return list(rows)


def inbound_accounts_forget(**_signal) -> None:
    """Forget the accounts kept by ``inbound_accounts``: on every save or delete of an
    account or a brand (``DistributionsConfig.ready``), and in tests (a rolled-back test's
    rows)."""
    _INBOUND_ACCOUNTS.clear()


def inbound_accounts_expire() -> bool:
    """Check the kept accounts' versions again on their next use (a request they did not
    authenticate: a token may have been rotated in another process). True if any was
    trusted without a read until now."""
    now = monotonic()
    trusted = False
    for key, (versions, rows, until) in list(_INBOUND_ACCOUNTS.items()):
        if until > now:
            trusted = True
            _INBOUND_ACCOUNTS[key] = (versions, rows, now)
    return trusted


@dataclass(frozen=True)
class RecentMessages:
    """The last messages handed to one number (every brand's, any channel), newest first,
    each with its ``distribution`` and ``person`` loaded and its brand as ``brand_id``: read
    once per inbound reply and shared by the provider's brand candidates, the brand's last
    message (``last_message_to``) and the conversation's invite."""

    address: str
    messages: list[Message]
    complete: bool  # fewer than RECENT_MESSAGES: every message to the number is here

    @property
    def brand_ids(self) -> list[int]:
        return [message.brand_id for message in self.messages]


def recent_messages_to(*, address: str) -> RecentMessages:
    messages = list(
        Message.objects.filter(address=address, sent_at__isnull=False)
        .select_related("person", "distribution")
        .annotate(brand_id=F("distribution__project__brand_id"))
        .order_by("-sent_at", "-pk")[:RECENT_MESSAGES]
    )
    return RecentMessages(address, messages, complete=len(messages) < RECENT_MESSAGES)


def last_message_to(
    *, brand_id: int, address: str, channel: str = Channel.SMS, recent: RecentMessages | None = None
):
    """The brand's last message handed to the provider for ``address`` (None if never).
    ``recent``: the number's last messages, if read (``recent_messages_to``)."""
    if recent is not None and recent.address == address:
        for message in recent.messages:
            if message.brand_id == brand_id and message.distribution.channel == channel:
                return message
        if recent.complete:
            return None
    return (
        Message.objects.filter(
            address=address,
            sent_at__isnull=False,
            distribution__channel=channel,
            distribution__project__brand_id=brand_id,
        )
        .select_related("person", "distribution")
        .order_by("-sent_at", "-pk")
        .first()
    )
