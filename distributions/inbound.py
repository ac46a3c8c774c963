"""Inbound SMS replies: the provider layer has found the brand (``callbacks``); the brand's
last message to the number and its HELP text are read here, where they are kept, and
``optouts.services`` stores the reply and acts on it (STOP, HELP...).

What callers can rely on:
- a reply is stored once (a replayed ``provider_sid`` changes nothing) before the webhook
  answers; STOP and START are acted on in the request (the opt-out is committed before the
  provider hears back), HELP is answered in the request's answer;
- the reply's conversation step (``conversations``: the next question, a keyword's
  session...) is not applied in the request: the reply is stored *pending* and a worker
  applies it moments later, in received order per number (``inbound_received``).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from brands.models import Brand
from core.hooks import Hook
from distributions.providers.base import InboundSms
from distributions.selectors import RecentMessages, brand_provider_account, last_message_to
from optouts.services import (
    InboundResult,
    clean_inbound_text,
    inbound_kind,
    inbound_needs_known,
    inbound_reply_handle,
    inbound_reply_queue,
)

# Fired after a reply of a known brand is stored with its conversation step pending (STOP
# and START already acted on, so they always win), in the request's transaction: two-way
# conversations (``conversations``, above) apply it after commit, in a worker. Receivers get
# brand and result (``InboundResult``).
inbound_received = Hook("distributions.inbound_received")


def sms_reply_receive(
    *,
    brand: Brand | None,
    inbound: InboundSms,
    provider: str,
    received_at: datetime | None = None,
    recent: RecentMessages | None = None,
) -> InboundResult:
    """Store one inbound reply of ``provider`` (a replayed ``provider_sid`` changes nothing)
    and act on what cannot wait: STOP and START (with the brand's last message to the number:
    ``recent``, the sender's last messages, if the caller read them) and HELP's answer. Any
    other reply of a known brand costs one INSERT here."""
    fields = vars(inbound).copy()  # its fields (``dataclasses.asdict`` copies each deeply)
    kind = inbound_kind(body=inbound.body, opt_out_type=inbound.opt_out_type)
    account = brand_provider_account(brand) if brand is not None else None
    help_text = (account.help_text if account is not None else None) or ""
    if brand is not None and not inbound_needs_known(kind):
        # One INSERT, its own transaction: nothing else is written in the request.
        result = inbound_reply_queue(
            brand=brand, **fields, provider=provider, received_at=received_at, help_text=help_text
        )
        if not result.replayed:
            inbound_received.fire(brand=brand, result=result)
        return result
    address = clean_inbound_text(inbound.from_number).strip()[:64]
    last = None
    if brand is not None and address:
        last = last_message_to(brand_id=brand.pk, address=address, recent=recent)
    with transaction.atomic():
        result = inbound_reply_handle(
            brand=brand,
            **fields,
            provider=provider,
            received_at=received_at,
            last_message=last,
            help_text=help_text,
            apply_pending=brand is not None,
        )
        if brand is not None and not result.replayed:
            inbound_received.fire(brand=brand, result=result)
    return result
