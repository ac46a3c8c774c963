"""The signed opt-out link of one message: short, unguessable, valid 10 days after sending.

A token is the message id in base 62, left-padded with zeros to ``ID_WIDTH`` digits, followed by
a 10-character HMAC of it (``SECRET_KEY``): 16 characters whatever the message id (up to 62^6 - 1,
56.8 billion messages), so that the live counter and the estimate, which count the link before
the message exists, count exactly what is sent; and 62^10 guesses per message id. Tokens made
before the padding (11 to 15 characters) still read: leading zeros do not change the id.
It carries no brand: the message it names decides the brand, so a token only ever opts out
the recipient of that message in the brand that sent it.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from optouts.protocols import SentMessage

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SIGNATURE_LENGTH = 10  # 62^10 ≈ 8e17 guesses per message id
ID_WIDTH = 6  # base-62 digits of the message id: 62^6 ≈ 5.7e10 ids before a token grows
TOKEN_LENGTH = ID_WIDTH + SIGNATURE_LENGTH
LINK_VALID_DAYS = 10  # docs/optouts.md, "The opt-out link": valid 10 days after sending
LINK_VALIDITY = timedelta(days=LINK_VALID_DAYS)


def _b62(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 62)
        digits = ALPHABET[rest] + digits
        if number == 0:
            return digits


def _unb62(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + ALPHABET.index(char)
    return value


def _signature(message_id: int) -> str:
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"relay-opt-out:{message_id}".encode(), hashlib.sha256
    ).digest()
    return _b62(int.from_bytes(digest[:8], "big")).rjust(SIGNATURE_LENGTH, "0")[:SIGNATURE_LENGTH]


def opt_out_token(message_id: int) -> str:
    return f"{_b62(message_id).rjust(ID_WIDTH, '0')}{_signature(message_id)}"


def opt_out_token_read(token: str) -> int | None:
    """The message id a token was made for, or None if it is malformed or tampered with."""
    token = (token or "").strip()
    if len(token) <= SIGNATURE_LENGTH or len(token) > SIGNATURE_LENGTH + 12:
        return None
    if any(char not in ALPHABET for char in token):
        return None
    message_id = _unb62(token[:-SIGNATURE_LENGTH])
    if not hmac.compare_digest(token[-SIGNATURE_LENGTH:], _signature(message_id)):
        return None
    return message_id


def opt_out_url(message_id: int) -> str:
    return f"{settings.PUBLIC_BASE_URL}/o/{opt_out_token(message_id)}"


def link_sent_at(message: SentMessage) -> datetime:
    """When the link's message was sent: the provider's acceptance, else the hand-over attempt
    (an unknown outcome may still have reached the phone)."""
    return message.sent_at or message.leased_at or message.status_changed_at


def link_expires_at(message: SentMessage) -> datetime:
    return link_sent_at(message) + LINK_VALIDITY


def link_expired(*, message: SentMessage, now: datetime | None = None) -> bool:
    """True once more than 10 days have passed since the message was sent."""
    return (now or timezone.now()) > link_expires_at(message)


def is_alphanumeric_sender(sender: str) -> bool:
    """A sender ID with letters (``ACME``) rather than a phone number or a messaging service
    (``MG…``): it cannot receive replies, so its recipients opt out by the link only."""
    return bool(sender) and any(ch.isalpha() for ch in sender) and not sender.startswith("MG")
