"""Receivers of the lower apps' hooks (registered in ``ConversationsConfig.ready``)."""

from __future__ import annotations

from brands.models import Brand
from conversations.replies import replies_kick
from optouts.services import InboundResult


def on_inbound_received(*, brand: Brand, result: InboundResult) -> None:
    """A reply was stored with its conversation step pending (STOP and START acted on): the
    applier takes it after commit (``conversations.replies``)."""
    replies_kick()
