"""The signed opt-out link of one message: short, unguessable, valid 10 days after sending."""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SIGNATURE_LENGTH = 10  # 62^10 ≈ 8e17 guesses per message id
LINK_VALID_DAYS = 10


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
    return f"{_b62(message_id)}{_signature(message_id)}"


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
