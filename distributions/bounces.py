"""Asynchronous bounces: delivery status notifications (RFC 3464) as raw MIME.

What callers can rely on:
- every report is stored (``BounceReport``), whatever it says, and acted on at most once per
  message (a Bounced row stays Bounced; the suppression is one active opt-out);
- it is tied to its message by the VERP address it was sent to (``Delivered-To``, ``To``,
  ``X-Original-To`` or ``Envelope-To``), else by the returned ``Message-ID``;
- ``Action: failed`` with a 5.x.x status is a hard bounce: the row becomes Bounced and the
  address is suppressed for the brand (an opt-out with source ``bounce``); a 4.x.x or
  ``delayed`` report is recorded only; anything that is not a DSN is stored, not acted on.
"""

from __future__ import annotations

import email
import email.policy
import re

from django.db import transaction
from django.utils import timezone

from distributions.events import recipient_statuses_raised
from distributions.models import BounceReport, Message, MessageEvent
from distributions.verp import verp_message_id
from optouts.services import optout_record_bounce

MAX_RAW = 1_000_000  # characters of a report we keep
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "X-Failed-Recipients")
MStatus = Message.Status


def _text(value) -> str:
    return " ".join(str(value or "").split())


def _field(block, name: str) -> str:
    value = _text(block.get(name, ""))
    return value.split(";", 1)[1].strip() if ";" in value else value


def _parse(raw: bytes) -> dict | None:
    """The report's recipient, action, status, diagnostic and addressing, or None."""
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # noqa: BLE001 - malformed input is stored, never raised
        return None
    verp_ids = []
    for header in RECIPIENT_HEADERS:
        for value in parsed.get_all(header) or []:
            for address in re.findall(r"[^\s<>,;\"]+@[^\s<>,;\"]+", str(value)):
                if (found := verp_message_id(address)) is not None:
                    verp_ids.append(found)
    status_block = None
    returned_ids = []
    for part in parsed.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            payload = part.get_payload()
            blocks = payload if isinstance(payload, list) else []
            for block in blocks:
                if block.get("Final-Recipient") or block.get("Original-Recipient"):
                    status_block = block
                    break
        elif kind in ("text/rfc822-headers", "message/rfc822"):
            payload = part.get_payload()
            text = (
                str(payload[0])
                if isinstance(payload, list) and payload
                else (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
            )
            returned_ids += re.findall(r"(?im)^Message-ID:\s*<([^>]+)>", text)
            for address in re.findall(r"(?im)^Return-Path:\s*<([^>]+)>", text):
                if (found := verp_message_id(address)) is not None:
                    verp_ids.append(found)
    if status_block is None:
        return None
    return {
        "recipient": _field(status_block, "Final-Recipient")
        or _field(status_block, "Original-Recipient"),
        "action": _text(status_block.get("Action")).lower(),
        "status": _text(status_block.get("Status")),
        "diagnostic": _field(status_block, "Diagnostic-Code"),
        "verp_ids": verp_ids,
        "returned_ids": returned_ids,
    }


def bounce_ingest(*, raw: bytes) -> BounceReport:
    """Store a DSN and act on it (see the module docstring)."""
    text = raw.decode("utf-8", "replace").replace("\x00", "")[:MAX_RAW]
    report = _parse(raw)
    Action = BounceReport.Action
    if report is None:
        return BounceReport.objects.create(action=Action.MALFORMED, raw=text)
    message = None
    for message_id in report["verp_ids"]:
        message = Message.objects.filter(pk=message_id).first()
        if message:
            break
    if message is None and report["returned_ids"]:
        message = Message.objects.filter(
            provider_id__in=report["returned_ids"], distribution__channel="email"
        ).first()
    fields = {
        "recipient": report["recipient"][:254],
        "status_code": report["status"][:20],
        "diagnostic": report["diagnostic"][:500],
        "raw": text,
    }
    if message is None:
        return BounceReport.objects.create(action=Action.UNMATCHED, **fields)
    message = Message.objects.select_related("distribution__project", "person").get(pk=message.pk)
    brand_id = message.distribution.project.brand_id
    hard = report["action"] == "failed" and report["status"].startswith("5")
    if not hard:
        return BounceReport.objects.create(
            action=Action.SOFT, brand_id=brand_id, message=message, **fields
        )
    reason = f"Bounced: {report['status']} {report['diagnostic']}".strip()[:300]
    now = timezone.now()
    with transaction.atomic():
        bounce = BounceReport.objects.create(
            action=Action.BOUNCED, brand_id=brand_id, message=message, **fields
        )
        changed = Message.objects.filter(
            pk=message.pk, status__in=(MStatus.SENT, MStatus.DELIVERED, MStatus.SENDING)
        ).update(
            status=MStatus.BOUNCED,
            status_reason=reason,
            error_code=report["status"][:20],
            status_changed_at=now,
        )
        if changed:
            MessageEvent.objects.create(
                message_id=message.pk,
                status=MStatus.BOUNCED,
                at=now,
                source=MessageEvent.Source.BOUNCE,
                detail=reason,
            )
            recipient_statuses_raised(
                distribution_id=message.distribution_id,
                changes=[(message.pk, MStatus.BOUNCED)],
                at=now,
            )

        optout_record_bounce(message=message, reason=reason)
    return bounce
