"""Inbound SMS replies: the provider layer has found the brand (``callbacks``); the brand's
last message to the number and its HELP text are read here, where they are kept, and
``optouts.services.inbound_reply_handle`` stores the reply and acts on it (STOP, HELP...)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from django.db import transaction

from brands.models import Brand
from core.hooks import Hook
from distributions.providers.base import InboundSms
from distributions.selectors import RecentMessages, brand_provider_account, last_message_to
from optouts.services import InboundResult, clean_inbound_text, inbound_reply_handle

# Fired after a reply of a known brand is stored and acted on (STOP and HELP first, so they
# always win), in the request's transaction: two-way conversations (``conversations``, above)
# answer it. Receivers get brand, result (``InboundResult``) and last_message.
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
    and act on it. ``recent``: the sender's last messages, if the caller read them."""
    address = clean_inbound_text(inbound.from_number).strip()[:64]
    last = help_text = None
    if brand is not None:
        last = (
            last_message_to(brand_id=brand.pk, address=address, recent=recent) if address else None
        )
        account = brand_provider_account(brand)
        help_text = account.help_text if account is not None else None
    with transaction.atomic():
        result = inbound_reply_handle(
            brand=brand,
            **dataclasses.asdict(inbound),
            provider=provider,
            received_at=received_at,
            last_message=last,
            help_text=help_text or "",
        )
        if brand is not None and not result.replayed:
            inbound_received.fire(brand=brand, result=result, last_message=last)
    return result
