"""Signatures of outbound deliveries: ``Relay-Signature: t=<unix time>,v1=<hex>``, where the hex
is HMAC-SHA256, keyed with the endpoint's secret, over ``<unix time>.<raw body>``. While a
rotated secret is in its grace period the header carries one ``v1`` per secret, the current
one first (``t=…,v1=<new>,v1=<previous>``); a receiver accepts the delivery if any matches.

The receiver recomputes it over the raw bytes it got and refuses stale timestamps (replays).
``docs/webhooks.md`` has the same check as a standalone snippet; the tests run that snippet.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Relay-Signature"
EVENT_ID_HEADER = "Relay-Event-Id"
EVENT_TYPE_HEADER = "Relay-Event-Type"
DELIVERY_ID_HEADER = "Relay-Delivery-Id"
ATTEMPT_HEADER = "Relay-Delivery-Attempt"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a label, not a secret
SECRET_BYTES = 32
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str | list[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header for ``body`` signed with ``secret`` (or each of a list of secrets)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    keys = [secret] if isinstance(secret, str) else secret
    return ",".join([f"t={timestamp}", *(f"v1={signature(k, timestamp, body)}" for k in keys)])


def signature_valid(
    secret: str, header: str, body: bytes, *, tolerance: int = TOLERANCE_SECONDS, now=None
) -> bool:
    """True when one of ``header``'s signatures signs ``body`` with ``secret`` and its time is
    within tolerance."""
    try:
        parts = [item.split("=", 1) for item in header.split(",")]
        timestamp = int(dict(parts)["t"])
    except (ValueError, KeyError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(name == "v1" and hmac.compare_digest(value, expected) for name, value in parts)
