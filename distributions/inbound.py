"""Inbound SMS replies: the provider layer has found the brand (``callbacks``); the brand's
last message to the number and its HELP text are read here, where they are kept, and
``optouts.services.inbound_reply_handle`` stores the reply and acts on it (STOP, HELP...)."""

from __future__ import annotations

from datetime import datetime

from brands.models import Brand
from distributions.models import ProviderAccount
from distributions.selectors import last_message_to
from optouts.services import InboundResult, clean_inbound_text, inbound_reply_handle


def sms_reply_receive(
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
) -> InboundResult:
    """Store one inbound reply (a replayed ``provider_sid`` changes nothing) and act on it."""
    address = clean_inbound_text(from_number).strip()[:64]
    last = help_text = None
    if brand is not None:
        last = last_message_to(brand_id=brand.pk, address=address) if address else None
        help_text = (
            ProviderAccount.objects.filter(brand=brand).values_list("help_text", flat=True).first()
        )
    return inbound_reply_handle(
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
        last_message=last,
        help_text=help_text or "",
    )
