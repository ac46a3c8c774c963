"""Per-recipient Return-Path addresses (VERP): ``bounces+<token>@RELAY_BOUNCE_DOMAIN``.

The token is the message id in base 62 and an HMAC of it (``SECRET_KEY``), so a bounce names
the row it is about, and a forged bounce cannot name someone else's row.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from django.conf import settings

from optouts.links import _b62, _unb62

LOCAL_PART = "bounces"
SIGNATURE_LENGTH = 8
VERP = re.compile(r"^" + LOCAL_PART + r"\+([0-9A-Za-z]{9,20})@", re.IGNORECASE)


def _signature(message_id: int) -> str:
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"relay-verp:{message_id}".encode(), hashlib.sha256
    ).digest()
    return _b62(int.from_bytes(digest[:8], "big")).rjust(SIGNATURE_LENGTH, "0")[:SIGNATURE_LENGTH]


def verp_address(message_id: int) -> str:
    return f"{LOCAL_PART}+{_b62(message_id)}{_signature(message_id)}@{settings.RELAY_BOUNCE_DOMAIN}"


def verp_message_id(address: str) -> int | None:
    """The message id of a VERP address, or None if it is not one of ours or is forged."""
    match = VERP.match((address or "").strip().strip("<>"))
    if not match:
        return None
    token = match.group(1)
    # The local part is case-sensitive (base 62), but some servers lower-case it: refuse those.
    message_id = _unb62(token[:-SIGNATURE_LENGTH])
    if not hmac.compare_digest(token[-SIGNATURE_LENGTH:], _signature(message_id)):
        return None
    return message_id
