"""Reads of opt-out state: the send paths' checks, the pages' lists, the inbound routing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.db.models import Exists, OuterRef, Q, QuerySet

from brands.models import Brand
from optouts.models import Channel, Consent, InboundMessage, OptOut, OptOutEvent
from participants.models import Person

CSV_HEADER = [
    "Address",
    "Channel",
    "Status",
    "Source",
    "Scope",
    "PersonID",
    "First name",
    "Last name",
    "Opted out at",
    "Opted in at",
]
CSV_BATCH = 2000  # rows fetched per round trip while streaming the export


# --- the send paths -------------------------------------------------------------------------
def optout_active_exists(*, brand_id: int, channel: str, address_ref: OuterRef) -> Exists:
    """A subquery expression: is the address at ``address_ref`` opted out in this brand?"""
    return Exists(
        OptOut.objects.filter(brand_id=brand_id, channel=channel, active=True, address=address_ref)
    )


def opted_out_addresses(*, brand_id: int, channel: str, addresses: Iterable[str]) -> set[str]:
    """Which of ``addresses`` are opted out right now (one query)."""
    wanted = {address for address in addresses if address}
    if not wanted:
        return set()
    return set(
        OptOut.objects.filter(
            brand_id=brand_id, channel=channel, active=True, address__in=wanted
        ).values_list("address", flat=True)
    )


def opted_out_many(*, keys: Iterable[tuple[int, str, str]]) -> set[tuple[int, str, str]]:
    """Which (brand id, channel, address) are opted out right now, for many brands (one
    query: a send batch serves many)."""
    wanted = {key for key in keys if key[2]}
    if not wanted:
        return set()
    found = OptOut.objects.filter(
        active=True,
        brand_id__in={key[0] for key in wanted},
        channel__in={key[1] for key in wanted},
        address__in={key[2] for key in wanted},
    ).values_list("brand_id", "channel", "address")
    return {key for key in found if key in wanted}


def is_opted_out(*, brand_id: int, channel: str, address: str) -> bool:
    return bool(opted_out_addresses(brand_id=brand_id, channel=channel, addresses=[address]))


def directory_person_for(*, brand_id: int, channel: str, address: str):

    field = "phone" if channel == Channel.SMS else "email__iexact"
    return Person.objects.filter(brand_id=brand_id, **{field: address}).order_by("pk").first()


# --- pages and API ----------------------------------------------------------------------------
def optout_list(
    *,
    brand: Brand,
    q: str = "",
    source: str = "",
    scope: str = "",
    channel: str = "",
    state: str = "active",
) -> QuerySet:
    """The brand's opt-outs; ``state`` is ``active`` (default), ``opted_in`` or ``all``."""
    queryset = OptOut.objects.for_brand(brand).select_related("person")
    if state == "active":
        queryset = queryset.filter(active=True)
    elif state == "opted_in":
        queryset = queryset.filter(active=False)
    if source:
        queryset = queryset.filter(source=source)
    if scope:
        queryset = queryset.filter(scope=scope)
    if channel:
        queryset = queryset.filter(channel=channel)
    term = (q or "").strip()
    if term:
        condition = Q(address__icontains=term)
        for name in ("first_name", "last_name", "person_id", "email"):
            condition |= Q(**{f"person__{name}__icontains": term})
        queryset = queryset.filter(condition)
    return queryset.order_by("-created_at", "-pk")


def optout_csv_rows(*, queryset: QuerySet, zone) -> Iterator[list]:
    """The export's rows, streamed in ``CSV_BATCH`` rows per round trip."""
    values = queryset.values_list(
        "address",
        "channel",
        "active",
        "source",
        "scope",
        "person__person_id",
        "person__first_name",
        "person__last_name",
        "created_at",
        "opted_in_at",
    )
    sources = dict(OptOut._meta.get_field("source").choices)
    scopes = dict(OptOut._meta.get_field("scope").choices)
    channels = dict(Channel.choices)

    def stamp(value) -> str:
        return value.astimezone(zone).isoformat(timespec="seconds") if value else ""

    for row in values.iterator(chunk_size=CSV_BATCH):
        address, channel, active, source, scope, pid, first, last, created, opted_in = row
        yield [
            address,
            channels.get(channel, channel),
            "Opted out" if active else "Opted in",
            sources.get(source, source),
            scopes.get(scope, scope),
            pid or "",
            first or "",
            last or "",
            stamp(created),
            stamp(opted_in),
        ]


def optout_events_for(*, brand: Brand, channel: str, address: str) -> QuerySet:
    """The audit trail of one address in the brand, newest first."""
    return (
        OptOutEvent.objects.for_brand(brand)
        .filter(channel=channel, address=address)
        .select_related("actor", "api_key", "message__distribution", "inbound", "person")
        .order_by("-created_at", "-pk")
    )


def person_optout_addresses(*, person: Person) -> list[tuple[str, str]]:
    """(channel, address) pairs of a person: their phone for SMS, their email for email."""
    pairs = []
    if person.phone:
        pairs.append((Channel.SMS, person.phone))
    if person.email:
        pairs.append((Channel.EMAIL, person.email))
    return pairs


def person_optout_state(*, person: Person) -> dict:
    """For the person page: their current opt-outs and their whole audit trail."""
    condition = Q(person=person)
    for channel, address in person_optout_addresses(person=person):
        lookup = "address__iexact" if channel == Channel.EMAIL else "address"
        condition |= Q(channel=channel, **{lookup: address})
    optouts = OptOut.objects.filter(brand_id=person.brand_id).filter(condition)
    events = (
        OptOutEvent.objects.filter(brand_id=person.brand_id)
        .filter(condition)
        .select_related("actor", "api_key", "message__distribution", "inbound")
        .order_by("-created_at", "-pk")
    )
    return {
        "active": list(optouts.filter(active=True).order_by("channel")),
        "events": list(events[:200]),
    }


def inbound_list(*, brand: Brand, q: str = "", kind: str = "", action: str = "") -> QuerySet:
    queryset = InboundMessage.objects.for_brand(brand).select_related("person", "message")
    if kind:
        queryset = queryset.filter(kind=kind)
    if action:
        queryset = queryset.filter(action=action)
    term = (q or "").strip()
    if term:
        queryset = queryset.filter(
            Q(from_number__icontains=term)
            | Q(body__icontains=term)
            | Q(person__first_name__icontains=term)
            | Q(person__last_name__icontains=term)
        )
    return queryset.order_by("-received_at", "-pk")


def consent_list(
    *, brand: Brand, project_id: int | None = None, status: str = "", address: str = ""
) -> QuerySet:
    """The brand's consents, newest first; ``status`` is ``given`` or ``withdrawn`` (any
    other: both)."""
    queryset = Consent.objects.for_brand(brand).select_related("inbound")
    if project_id is not None:
        queryset = queryset.filter(project_id=project_id)
    if status:
        queryset = queryset.filter(active=status == Consent.Status.GIVEN)
    address = (address or "").strip()
    if address:
        # An unencoded "+" in a query string arrives as a space: "+14155550101" either way.
        spellings = {address, f"+{address}"} if address.isdigit() else {address}
        queryset = queryset.filter(address__in=spellings)
    return queryset.order_by("-granted_at", "-pk")


def consent_events(*, consent: Consent) -> QuerySet:
    """The audit events of one consent (its grant, its withdrawal), oldest first."""
    return consent.events.select_related("actor", "api_key").order_by("created_at", "pk")
