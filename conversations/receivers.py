"""Receivers of the lower apps' hooks (registered in ``ConversationsConfig.ready``)."""

from __future__ import annotations

from brands.models import Brand
from conversations.services import inbound_converse
from optouts.services import InboundResult


def on_inbound_received(*, brand: Brand, result: InboundResult, last_message=None) -> None:
    """A reply was stored and STOP/HELP acted on: the conversation it belongs to goes on."""
    inbound_converse(brand=brand, inbound=result.inbound, last_message=last_message)
