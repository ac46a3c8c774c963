"""The message library: a brand's saved SMS and email messages (invite, reminder, thank-you,
opt-out confirmation, consent request), picked when scheduling.

A distribution made from a library message gets a copy of its text (``library_message_fill``)
at create: editing or deleting the library message later never changes what was scheduled or
sent. The segment counter of each SMS message is ``credits.segments.segment_info``, the same
count the send charges.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from brands.models import Brand
from credits.segments import normalize_line_breaks, segment_info
from distributions.models import Distribution, LibraryMessage

MAX_SMS_LENGTH = 1600  # as spec.MAX_MESSAGE_LENGTH: one SMS body
LIBRARY_FIELDS = ("name", "channel", "type", "message", "subject")


def library_list(*, brand: Brand, channel: str | None = None, type: str | None = None) -> QuerySet:
    queryset = LibraryMessage.objects.for_brand(brand)
    if channel:
        queryset = queryset.filter(channel=channel)
    if type:
        queryset = queryset.filter(type=type)
    return queryset


def library_segments(library_message: LibraryMessage) -> dict | None:
    """The segment counter of an SMS library message (None for email): segments, encoding,
    characters."""
    if library_message.channel != Distribution.Channel.SMS:
        return None
    info = segment_info(library_message.message)
    return {"segments": info.segments, "encoding": info.encoding, "units": info.units}


def _errors(values: dict) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = "Give the message a name."
    if values["channel"] not in Distribution.Channel.values:
        errors["channel"] = f"Unknown channel '{values['channel']}'."
    if values["type"] not in LibraryMessage.Type.values:
        errors["type"] = f"Unknown type '{values['type']}'."
    if not values["message"]:
        errors["message"] = "The message is empty."
    elif values["channel"] == Distribution.Channel.SMS and len(values["message"]) > MAX_SMS_LENGTH:
        errors["message"] = f"The message is longer than {MAX_SMS_LENGTH} characters."
    if values["channel"] == Distribution.Channel.SMS and values["subject"]:
        errors["subject"] = "Only emails have a subject."
    return errors


def _cleaned(values: dict) -> dict:
    cleaned = {name: (values.get(name) or "") for name in LIBRARY_FIELDS}
    cleaned["name"] = cleaned["name"].strip()[:200]
    cleaned["subject"] = cleaned["subject"].strip()
    cleaned["message"] = normalize_line_breaks(cleaned["message"]).strip()
    cleaned["channel"] = cleaned["channel"] or Distribution.Channel.SMS
    cleaned["type"] = cleaned["type"] or LibraryMessage.Type.INVITE
    return cleaned


def library_message_create(*, brand: Brand, actor=None, **values) -> LibraryMessage:
    cleaned = _cleaned(values)
    errors = _errors(cleaned)
    if errors:
        raise ValidationError(errors)
    return LibraryMessage.objects.create(
        brand=brand, created_by=actor if getattr(actor, "pk", None) else None, **cleaned
    )


def library_message_update(
    *, library_message: LibraryMessage, actor=None, **changes
) -> LibraryMessage:
    """Edit a library message; distributions made from it keep the text they copied."""
    unknown = set(changes) - set(LIBRARY_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed."))
    values = {name: getattr(library_message, name) for name in LIBRARY_FIELDS} | changes
    cleaned = _cleaned(values)
    errors = _errors(cleaned)
    if errors:
        raise ValidationError(errors)
    for name, value in cleaned.items():
        setattr(library_message, name, value)
    library_message.save()
    return library_message


def library_message_delete(*, library_message: LibraryMessage, actor=None) -> None:
    library_message.delete()


def library_message_fill(
    *, library_message: LibraryMessage | None, channel: str, message: str, subject: str
) -> tuple[str, str]:
    """The message and subject a distribution gets: the library message's copy where the
    caller gave none. A library message of the other channel is refused naming the field."""
    if library_message is None:
        return message, subject
    if library_message.channel != channel:
        raise ValidationError(
            {
                "library_message": "This library message is for "
                f"{library_message.get_channel_display()}, not "
                f"{Distribution.Channel(channel).label}."
            }
        )
    return message or library_message.message, subject or library_message.subject
