"""Writes for opt-outs, opt-ins and inbound replies. Every opt-out and opt-in is an audit event.

What callers can rely on:
- one active ``OptOut`` per (brand, channel, address), whatever the concurrency;
- recording an opt-out waits for the windows a sender has already checked and blocks the next
  ones until it is committed (``optouts.guard``): no message is handed over after it;
- a DIRECTORY opt-out sets ``Opted out: Yes`` on the people at that address, in the directory
  and in every project; an opt-in sets ``No``; a PROVIDER opt-out leaves the directory alone;
- an inbound reply is stored once per provider message id: a replayed webhook changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from brands.models import Brand
from brands.roles import Role, role_allows
from core.bulk import insert_returning_pk
from optouts.events import opted_out_raised
from optouts.guard import optout_write_lock
from optouts.keywords import Keyword, match_reply, normalize_reply
from optouts.links import link_expired
from optouts.models import (
    Channel,
    Consent,
    InboundMessage,
    OptOut,
    OptOutEvent,
    Scope,
    Source,
)
from optouts.protocols import SentMessage
from optouts.selectors import directory_person_for
from participants.models import Participant, Person
from participants.phones import PhoneError, phone_to_e164

logger = logging.getLogger(__name__)

OPTED_OUT_FIELD = "Opted out"
# docs/optouts.md, "The 2-day window": a STOP within 2 days of our message marks the
# directory; a later one is recorded at the provider level only.
DIRECTORY_WINDOW = timedelta(days=2)
# START never opts anyone back in (only a brand admin does, docs/optouts.md "Opt-in"): the
# reply says so.
DEFAULT_HELP_TEXT = (
    "{brand}: survey invitations by text message. Reply STOP to opt out. To get them again "
    "after opting out, contact {brand}. Msg & data rates may apply."
)
GENERIC_HELP_TEXT = "Survey invitations by text message. Reply STOP to opt out."
MAX_BODY_LENGTH = 5000  # Twilio bodies are at most 1,600 characters; keep a margin, no more
# Twilio's Advanced Opt-Out names the keyword class it acted on.
PROVIDER_OPT_OUT_TYPES = {"STOP": Keyword.STOP, "START": Keyword.START, "HELP": Keyword.HELP}


def optout_record(
    *,
    brand_id: int,
    channel: str,
    address: str,
    source: str,
    scope: str = Scope.DIRECTORY,
    person: Person | None = None,
    actor=None,
    api_key=None,
    message: SentMessage = None,
    inbound: InboundMessage | None = None,
    reason: str = "",
    inbound_text: str = "",
) -> OptOut:
    """Opt ``address`` out of ``channel`` for the brand (idempotent: one active row).

    A DIRECTORY opt-out upgrades an active PROVIDER one; the reverse never downgrades.
    """
    with transaction.atomic():
        optout_write_lock(brand_id=brand_id, channel=channel, address=address)
        optout = OptOut.objects.filter(
            brand_id=brand_id, channel=channel, address=address, active=True
        ).first()
        created = False
        if optout is None:
            try:
                with transaction.atomic():
                    optout = OptOut.objects.create(
                        brand_id=brand_id,
                        channel=channel,
                        address=address,
                        person=person,
                        source=source,
                        scope=scope,
                    )
                    created = True
            except IntegrityError:  # a concurrent opt-out of the same address won
                optout = OptOut.objects.get(
                    brand_id=brand_id, channel=channel, address=address, active=True
                )
        elif scope == Scope.DIRECTORY and optout.scope != Scope.DIRECTORY:
            optout.scope = Scope.DIRECTORY
            optout.save(update_fields=["scope"])
        if optout.person_id is None and person is not None:
            optout.person = person
            optout.save(update_fields=["person"])
        OptOutEvent.objects.create(
            brand_id=brand_id,
            channel=channel,
            address=address,
            person=person,
            optout=optout,
            action=OptOutEvent.Action.OPT_OUT,
            source=source,
            scope=scope,
            actor=actor if getattr(actor, "pk", None) else None,
            api_key=api_key,
            message=message,
            inbound=inbound,
            reason=reason[:500] if created else (reason or "already opted out")[:500],
            inbound_text=inbound_text[:1600],
        )
        if scope == Scope.DIRECTORY:
            _flag_people(brand_id=brand_id, channel=channel, address=address, value="Yes")
        if channel == Channel.SMS:
            consents_withdraw(
                brand_id=brand_id,
                address=address,
                inbound=inbound,
                reason="Opted out",
                source=source,
                person=person,
                actor=actor,
                api_key=api_key,
            )
        if created:
            opted_out_raised(optout=optout, reason=reason)
    return optout


def optout_record_provider(*, message: SentMessage) -> OptOut:
    """The carrier says the recipient unsubscribed (Twilio 21610): never send again.

    Marked in the directory too: the carrier refusal proves the recipient opted out, and the
    admins must see why the person is no longer reached.
    """
    return optout_record(
        brand_id=message.distribution.project.brand_id,
        channel=message.distribution.channel,
        address=message.address,
        source=Source.PROVIDER,
        person=message.person,
        message=message,
        reason="Provider refused: recipient unsubscribed (21610)",
    )


def optout_record_bounce(
    *, message: SentMessage, reason: str = "", inbound_text: str = ""
) -> OptOut:
    """A hard bounce of an email: the address does not take mail, so it is suppressed for the
    brand like an opt-out (source ``bounce``) and never emailed again until an admin opts it in.
    """
    return optout_record(
        brand_id=message.distribution.project.brand_id,
        channel=Channel.EMAIL,
        address=message.address,
        source=Source.BOUNCE,
        scope=Scope.DIRECTORY,
        person=message.person,
        message=message,
        reason=(reason or "Hard bounce")[:500],
        inbound_text=inbound_text[:1600],
    )


def optout_record_link(*, message: SentMessage, now: datetime | None = None) -> tuple[OptOut, bool]:
    """The recipient confirmed on the opt-out link of ``message``. Returns (opt-out, changed).

    Refuses an expired link (``ValidationError``); opening it again after it worked changes
    nothing.
    """
    if link_expired(message=message, now=now):
        raise ValidationError("This opt-out link has expired.")
    brand_id = message.distribution.project.brand_id
    channel = message.distribution.channel
    with transaction.atomic():
        optout_write_lock(brand_id=brand_id, channel=channel, address=message.address)
        current = OptOut.objects.filter(
            brand_id=brand_id, channel=channel, address=message.address, active=True
        ).first()
        if current is not None and current.scope == Scope.DIRECTORY:
            return current, False
        optout = optout_record(
            brand_id=brand_id,
            channel=channel,
            address=message.address,
            source=Source.LINK,
            scope=Scope.DIRECTORY,
            person=message.person,
            message=message,
            reason="Confirmed on the opt-out link",
        )
    return optout, True


def optout_create_by_admin(
    *, brand: Brand | None, channel: str, address: str, reason: str, actor=None, api_key=None
) -> OptOut:
    """An admin records an opt-out the recipient asked for another way (a call, an email)."""

    reason = (reason or "").strip()
    if channel not in Channel.values:
        raise ValidationError({"channel": f"Unknown channel '{channel}'."})
    if not reason:
        raise ValidationError({"reason": "Say how the person asked to be opted out."})
    address = (address or "").strip()
    if channel == Channel.SMS:
        try:
            address = phone_to_e164(address, default_country=brand.default_country)
        except PhoneError as exc:
            raise ValidationError({"address": str(exc)}) from exc
    if not address:
        raise ValidationError({"address": "Give the phone number or email address."})
    field = "phone" if channel == Channel.SMS else "email__iexact"
    person = Person.objects.filter(brand=brand, **{field: address}).order_by("pk").first()
    if person is not None and channel == Channel.EMAIL:
        address = person.email  # as the directory spells it: sends compare it exactly
    return optout_record(
        brand_id=brand.pk,
        channel=channel,
        address=address,
        source=Source.ADMIN,
        scope=Scope.DIRECTORY,
        person=person,
        actor=actor,
        api_key=api_key,
        reason=reason,
    )


def optout_opt_in(
    *, optout: OptOut, reason: str, role: str | None, actor=None, api_key=None
) -> OptOut:
    """Lift an opt-out: brand admins only, with a reason. Sets ``Opted out: No``.

    A carrier-level block (the recipient texted STOP) stays until the recipient texts START;
    until then the provider refuses and the row is Blocked again.
    """
    if not role_allows(role, Role.BRAND_ADMIN):
        raise PermissionDenied("Only a brand admin can opt a person back in.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why this person is opted back in."})
    with transaction.atomic():
        locked = OptOut.objects.select_for_update().get(pk=optout.pk)
        if not locked.active:
            raise ValidationError({"optout": "This person is already opted back in."})
        now = timezone.now()
        locked.active = False
        locked.opted_in_at = now
        locked.save(update_fields=["active", "opted_in_at"])
        OptOutEvent.objects.create(
            brand_id=locked.brand_id,
            channel=locked.channel,
            address=locked.address,
            person=locked.person,
            optout=locked,
            action=OptOutEvent.Action.OPT_IN,
            source=Source.ADMIN,
            scope=locked.scope,
            actor=actor if getattr(actor, "pk", None) else None,
            api_key=api_key,
            reason=reason[:500],
        )
        _flag_people(
            brand_id=locked.brand_id, channel=locked.channel, address=locked.address, value="No"
        )
    optout.refresh_from_db()
    return optout


def _flag_people(*, brand_id: int, channel: str, address: str, value: str) -> None:
    """Set ``Opted out: Yes/No`` in the directory and project metadata of people at ``address``."""

    field = "phone" if channel == Channel.SMS else "email__iexact"
    people = list(Person.objects.filter(brand_id=brand_id, **{field: address}))
    if not people:
        return
    now = timezone.now()
    for person in people:
        person.metadata = _with_flag(person.metadata, value)
        person.updated_at = now
    Person.objects.bulk_update(people, ["metadata", "updated_at"])
    participants = list(Participant.objects.filter(person__in=people))
    for participant in participants:
        participant.metadata = _with_flag(participant.metadata, value)
    Participant.objects.bulk_update(participants, ["metadata"])


def _with_flag(metadata: dict | None, value: str) -> dict:
    """``metadata`` with one ``Opted out`` key (other spellings of it replaced)."""
    wanted = " ".join(OPTED_OUT_FIELD.split()).casefold()
    kept = {
        key: item
        for key, item in (metadata or {}).items()
        if " ".join(str(key).split()).casefold() != wanted
    }
    return {**kept, OPTED_OUT_FIELD: value}


# --- inbound replies -----------------------------------------------------------------------
@dataclass(frozen=True)
class InboundResult:
    inbound: InboundMessage
    reply: str  # the text to answer with ("" for none)
    replayed: bool = False


def inbound_help_text(*, brand: Brand | None, custom: str = "") -> str:
    """The brand's answer to HELP/INFO: ``custom`` (its provider settings), else a sensible
    default."""
    if brand is None:
        return GENERIC_HELP_TEXT
    return (custom or "").strip() or DEFAULT_HELP_TEXT.format(brand=brand.name)


def clean_inbound_text(text: str | None) -> str:
    """Text as we store it: no NUL (PostgreSQL refuses it), lone surrogates replaced, bounded."""
    text = (text or "").replace("\x00", "")
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    return text[:MAX_BODY_LENGTH]


def inbound_kind(*, body: str, opt_out_type: str = "") -> Keyword:
    """What a reply is (STOP, START, HELP or OTHER): its words, unless the provider's own
    opt-out handling names the class it acted on."""
    return PROVIDER_OPT_OUT_TYPES.get(
        (opt_out_type or "").strip().upper(), match_reply(clean_inbound_text(body)).kind
    )


def inbound_needs_known(kind: Keyword) -> bool:
    """Does acting on a reply of this kind depend on the brand's last message to the number
    and its person (STOP's 2-day window, START's re-subscription)? HELP and any other text
    do not: the webhook stores them without reading either (``inbound_reply_queue``)."""
    return kind in (Keyword.STOP, Keyword.START)


def _inbound_row(
    *,
    brand: Brand | None,
    from_number: str,
    to_number: str,
    body: str,
    provider: str,
    provider_sid: str,
    account_sid: str,
    messaging_service_sid: str,
    opt_out_type: str,
    received_at: datetime | None,
) -> tuple[InboundMessage, Keyword]:
    """The row of a reply as stored (not saved), with its kind."""
    body = clean_inbound_text(body)
    match = match_reply(body)
    kind = PROVIDER_OPT_OUT_TYPES.get((opt_out_type or "").strip().upper(), match.kind)
    inbound = InboundMessage(
        brand=brand,
        provider=provider,
        provider_sid=(provider_sid or "").strip()[:64],
        account_sid=clean_inbound_text(account_sid)[:64],
        messaging_service_sid=clean_inbound_text(messaging_service_sid)[:64],
        from_number=clean_inbound_text(from_number).strip()[:64],
        to_number=clean_inbound_text(to_number)[:64],
        body=body,
        received_at=received_at or timezone.now(),
        kind=kind.value,
        keyword=(match.keyword or "")[:40] if match.kind == kind else "",
        language=(match.language or "") if match.kind == kind else "",
        approximate=match.approximate and match.kind == kind,
        action=InboundMessage.Action.STORED,
    )
    return inbound, kind


def _replayed(inbound: InboundMessage) -> InboundResult:
    """The same webhook, delivered twice (or at once): the other request stored it. A
    replay is found by the unique (provider, provider_sid): no read before the insert."""
    found = InboundMessage.objects.filter(
        provider=inbound.provider, provider_sid=inbound.provider_sid
    ).first()
    if found is None:
        raise IntegrityError("inbound message refused, and not by its provider id")
    return InboundResult(found, "", replayed=True)


def inbound_reply_queue(
    *,
    brand: Brand,
    from_number: str,
    to_number: str = "",
    body: str = "",
    provider: str = "twilio",
    provider_sid: str = "",
    account_sid: str = "",
    messaging_service_sid: str = "",
    opt_out_type: str = "",
    received_at: datetime | None = None,
    help_text: str = "",
) -> InboundResult:
    """Store a reply of ``brand`` that is not STOP or START (``inbound_needs_known`` is
    false) in one INSERT, its conversation step *pending*; HELP is answered at once with the
    brand's help text. The brand's last message to the number and its person are filled in
    by the worker that applies it (``conversations.replies``). A replay changes nothing."""
    inbound, kind = _inbound_row(
        brand=brand,
        from_number=from_number,
        to_number=to_number,
        body=body,
        provider=provider,
        provider_sid=provider_sid,
        account_sid=account_sid,
        messaging_service_sid=messaging_service_sid,
        opt_out_type=opt_out_type,
        received_at=received_at,
    )
    if inbound_needs_known(kind):
        raise ValueError("STOP and START are acted on by inbound_reply_handle")
    inbound.action, reply = _decide_without_row(
        brand, kind=kind, known=True, opt_out_type=opt_out_type, help_text=help_text
    )
    inbound.reply = reply[:480]
    inbound.apply_state = InboundMessage.Apply.PENDING
    if insert_returning_pk(inbound, ignore_conflicts=True) is None:
        return _replayed(inbound)
    return InboundResult(inbound, inbound.reply)


def inbound_reply_handle(
    *,
    brand: Brand | None,
    from_number: str,
    to_number: str = "",
    body: str = "",
    provider: str = "twilio",
    provider_sid: str = "",
    account_sid: str = "",
    messaging_service_sid: str = "",
    opt_out_type: str = "",
    received_at: datetime | None = None,
    last_message=None,
    help_text: str = "",
    apply_pending: bool = False,
) -> InboundResult:
    """Store a reply and act on it. ``last_message``: the brand's last message handed over
    to ``from_number`` (None: never), ``help_text``: the brand's own answer to HELP; the
    caller (``distributions.inbound``) reads both where they are kept. ``apply_pending``:
    the row waits for its conversation step (``InboundMessage.apply_state``).

    - STOP words (any language) from a number the brand messaged: within ``DIRECTORY_WINDOW``
      of our last message to it, a DIRECTORY opt-out (``Opted out: Yes``); later, or when the
      number is only in the directory, a PROVIDER opt-out (the provider blocks it anyway).
    - START words: a provider-level re-subscribe note in the audit trail, never an opt-in
      (only a brand admin opts a person back in).
    - HELP words: answered with the brand's help text (unless the provider already did).
    - Anything else, and any reply from a number the brand does not know: stored, not acted on.
    """
    inbound, kind = _inbound_row(
        brand=brand,
        from_number=from_number,
        to_number=to_number,
        body=body,
        provider=provider,
        provider_sid=provider_sid,
        account_sid=account_sid,
        messaging_service_sid=messaging_service_sid,
        opt_out_type=opt_out_type,
        received_at=received_at,
    )
    from_number = inbound.from_number
    last = last_message if brand is not None else None
    person = None
    if brand is not None and from_number:
        person = (last.person if last else None) or directory_person_for(
            brand_id=brand.pk, channel=Channel.SMS, address=from_number
        )
    known = last is not None or person is not None
    inbound.message, inbound.person = last, person
    if apply_pending:
        inbound.apply_state = InboundMessage.Apply.PENDING

    try:
        with transaction.atomic():
            decided = _decide_without_row(
                brand, kind=kind, known=known, opt_out_type=opt_out_type, help_text=help_text
            )
            if decided is not None:  # the row is written once, with its action and reply
                inbound.action, reply = decided
                inbound.reply = reply[:480]
                inbound.save(force_insert=True)
            else:  # an opt-out (or its audit event) points to the stored row
                inbound.save(force_insert=True)
                reply = _act_on_inbound(inbound, kind=kind)
                inbound.reply = reply[:480]
                inbound.save(update_fields=["action", "optout", "reply"])
    except IntegrityError:
        return _replayed(inbound)
    return InboundResult(inbound, inbound.reply)


def _decide_without_row(
    brand: Brand | None, *, kind: Keyword, known: bool, opt_out_type: str, help_text: str
) -> tuple[str, str] | None:
    """(action, reply) of a reply that records nothing but itself: HELP, any other text, a
    number the brand does not know. None: STOP or START of a known number, whose records
    point to the stored row (``_act_on_inbound``)."""
    Action = InboundMessage.Action
    if kind == Keyword.HELP:
        if (opt_out_type or "").strip().upper() == "HELP":
            return Action.HELP_BY_PROVIDER, ""  # Advanced Opt-Out sent its HELP text
        return Action.HELP_SENT, inbound_help_text(brand=brand, custom=help_text)
    if kind == Keyword.OTHER:
        return Action.STORED, ""
    if brand is None or not known:
        return Action.UNKNOWN_NUMBER, ""
    return None


def _act_on_inbound(inbound: InboundMessage, *, kind: Keyword) -> str:
    """Record what a STOP or START of a known number does (the stored row is pointed to);
    sets ``inbound.action`` and ``inbound.optout``. Returns the reply."""
    Action = InboundMessage.Action
    brand = inbound.brand
    last = inbound.message
    if kind == Keyword.STOP:
        within = last is not None and inbound.received_at - last.sent_at <= DIRECTORY_WINDOW
        scope = Scope.DIRECTORY if within else Scope.PROVIDER
        if within:
            reason = "Replied STOP within 2 days of our message"
        elif last is not None:
            reason = "Replied STOP more than 2 days after our message: provider level only"
        else:
            reason = "Replied STOP without a message from us: provider level only"
        inbound.optout = optout_record(
            brand_id=brand.pk,
            channel=Channel.SMS,
            address=inbound.from_number,
            source=Source.REPLY,
            scope=scope,
            person=inbound.person,
            message=last,
            inbound=inbound,
            reason=reason,
            inbound_text=inbound.body,
        )
        inbound.action = Action.OPTED_OUT if within else Action.OPTED_OUT_PROVIDER
        return ""  # Twilio's Advanced Opt-Out sends the confirmation itself
    # START: the provider lifts its block; Relay keeps its own opt-out until an admin opts in.
    active = OptOut.objects.filter(
        brand=brand, channel=Channel.SMS, address=inbound.from_number, active=True
    ).first()
    if active is None:
        inbound.action = Action.STORED  # nothing to re-subscribe (a "YES" may be an answer)
        return ""
    OptOutEvent.objects.create(
        brand=brand,
        channel=Channel.SMS,
        address=inbound.from_number,
        person=inbound.person,
        optout=active,
        action=OptOutEvent.Action.RESUBSCRIBE,
        source=Source.REPLY,
        scope=Scope.PROVIDER,
        message=last,
        inbound=inbound,
        reason="Re-subscribed at the provider; still opted out in Relay until a brand admin "
        "opts the person in",
        inbound_text=inbound.body[:1600],
    )
    inbound.optout = active
    inbound.action = Action.RESUBSCRIBED_PROVIDER
    return ""


# --- consent (docs/two-way.md, "Consent first") --------------------------------------------
def consent_words_match(body: str, *, extra_words: str = "") -> bool:
    """Does ``body`` say yes: a START/YES word in any language (``optouts.keywords``), or
    one of the project's own words, compared like the STOP words."""
    if match_reply(body).kind == Keyword.START:
        return True
    wanted = {normalize_reply(word) for word in (extra_words or "").split(",") if word.strip()}
    return bool(wanted) and normalize_reply(body) in wanted


def consent_record(*, project, address: str, inbound: InboundMessage | None = None) -> Consent:
    """The number agreed to the project's invites (idempotent: one active consent), with
    its audit event."""
    brand_id = project.brand_id
    with transaction.atomic():
        current = Consent.objects.filter(project=project, address=address, active=True).first()
        if current is not None:
            return current
        try:
            with transaction.atomic():
                consent = Consent.objects.create(
                    brand_id=brand_id, project=project, address=address, inbound=inbound
                )
        except IntegrityError:  # the same YES, twice at once
            return Consent.objects.get(project=project, address=address, active=True)
        OptOutEvent.objects.create(
            brand_id=brand_id,
            channel=Channel.SMS,
            address=address,
            person=inbound.person if inbound is not None else None,
            consent=consent,
            action=OptOutEvent.Action.CONSENT,
            source=Source.REPLY,
            scope=Scope.DIRECTORY,
            inbound=inbound,
            reason=f"Replied yes to the consent request of project {project.name}"[:500],
            inbound_text=(inbound.body if inbound is not None else "")[:1600],
        )
    return consent


def consents_withdraw(
    *,
    brand_id: int,
    address: str,
    inbound: InboundMessage | None = None,
    reason: str = "",
    source: str | None = None,
    person: Person | None = None,
    actor=None,
    api_key=None,
) -> int:
    """Withdraw every active consent of the number in the brand (an opt-out does: ``source``
    is the opt-out's), each with its audit event. Returns how many."""
    consents = list(
        Consent.objects.filter(brand_id=brand_id, address=address, active=True).select_related(
            "project"
        )
    )
    if not consents:
        return 0
    now = timezone.now()
    Consent.objects.filter(pk__in=[c.pk for c in consents]).update(active=False, withdrawn_at=now)
    OptOutEvent.objects.bulk_create(
        [
            _withdrawal_event(
                consent,
                source=source or (Source.REPLY if inbound is not None else Source.ADMIN),
                reason=f"{reason or 'Withdrawn'}: project {consent.project.name}",
                inbound=inbound,
                person=person,
                actor=actor,
                api_key=api_key,
            )
            for consent in consents
        ]
    )
    return len(consents)


def consent_withdraw(
    *, consent: Consent, reason: str, role: str | None, actor=None, api_key=None
) -> Consent:
    """An admin withdraws one consent (the person asked, another way than STOP): the
    project's SMS invites no longer go to the number until it replies yes to a new consent
    request. Project and brand admins, with a reason; audited like a STOP's withdrawal.
    Distributions already materialised keep their recipients (consent is checked when a
    distribution selects them; only an opt-out is checked again at hand-over)."""
    if not role_allows(role, Role.PROJECT_ADMIN):
        raise PermissionDenied("Only a project or brand admin can withdraw a consent.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say how the person withdrew their consent."})
    with transaction.atomic():
        locked = Consent.objects.select_for_update().select_related("project").get(pk=consent.pk)
        if not locked.active:
            raise ValidationError({"consent": "This consent is already withdrawn."})
        locked.active = False
        locked.withdrawn_at = timezone.now()
        locked.save(update_fields=["active", "withdrawn_at"])
        _withdrawal_event(
            locked,
            source=Source.ADMIN,
            reason=f"{reason}: project {locked.project.name}",
            person=directory_person_for(
                brand_id=locked.brand_id, channel=Channel.SMS, address=locked.address
            ),
            actor=actor,
            api_key=api_key,
        ).save()
    consent.refresh_from_db()
    return consent


def _withdrawal_event(
    consent: Consent,
    *,
    source: str,
    reason: str,
    inbound: InboundMessage | None = None,
    person: Person | None = None,
    actor=None,
    api_key=None,
) -> OptOutEvent:
    return OptOutEvent(
        brand_id=consent.brand_id,
        channel=Channel.SMS,
        address=consent.address,
        person=person if person is not None else getattr(inbound, "person", None),
        consent=consent,
        action=OptOutEvent.Action.CONSENT_WITHDRAWN,
        source=source,
        scope=Scope.DIRECTORY,
        actor=actor if getattr(actor, "pk", None) else None,
        api_key=api_key,
        inbound=inbound,
        reason=reason[:500],
        inbound_text=(inbound.body if inbound is not None else "")[:1600],
    )
