"""The SMS provider interface: a code, the channels it serves, five methods.

The engine (``distributions.sending``) owns leasing, throttling, retries and bookkeeping; a
provider only turns a window of outgoing messages into one ``SendResult`` each, finds a message
it may already have accepted (reconciliation), checks credentials and reads its callbacks.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from distributions.models import ProviderAccount


class ProviderError(Exception):
    """The provider refused an account-wide operation (bad credentials, suspended account)."""


@dataclass(frozen=True)
class OutgoingSms:
    message_id: int
    to: str
    sender: str
    body: str
    status_callback: str = ""


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered email; ``return_path`` is its VERP envelope sender."""

    message_id: int
    to: str
    from_name: str
    from_address: str
    reply_to: str
    subject: str
    html: str
    text: str
    unsubscribe_url: str
    return_path: str
    lease: str = ""


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"  # the provider took it: never hand it over again
    REJECTED = "rejected"  # permanently refused for this recipient
    RETRY = "retry"  # refused for now (throttled, provider error before acceptance): try again
    UNKNOWN = "unknown"  # may or may not have been accepted (timeout): reconcile, never resend
    FATAL = "fatal"  # refused for the whole account: stop the distribution


@dataclass(frozen=True)
class SendResult:
    message_id: int
    outcome: Outcome
    provider_id: str = ""
    error_code: str = ""
    error_message: str = ""
    blocked: bool = False  # the recipient unsubscribed at the carrier (e.g. Twilio 21610)
    bounced: bool = False  # an email refused for good by the receiving server (5xx)
    suppress: bool = False  # ... because the address does not exist: never email it again
    retry_after: float | None = None
    throttled: bool = False  # RETRY because the sender is over its rate: pause the sender


@dataclass(frozen=True)
class SentQuery:
    """A row whose hand-over is unknown (its worker died): was it accepted?"""

    message_id: int
    to: str
    body: str
    lease: str
    since: datetime


@dataclass(frozen=True)
class StatusUpdate:
    """A provider callback, read: which message, which provider status, which error."""

    provider_id: str
    provider_status: str
    error_code: str = ""
    message_id: int | None = None


class SmsProvider(ABC):
    code: ClassVar[str]
    label: ClassVar[str]
    channels: ClassVar[tuple[str, ...]] = ("sms",)
    # Config fields never shown back in full (see ProviderAccount.REDACTED_FIELDS).
    redacted_config_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, account: ProviderAccount):
        self.account = account

    @abstractmethod
    def send_window(self, messages: list[OutgoingSms]) -> list[SendResult]:
        """Hand ``messages`` to the provider (concurrently if it can); one result each."""

    @abstractmethod
    def find_sent(
        self,
        *,
        to: str,
        sender: str,
        since: datetime,
        body: str,
        message_id: int | None = None,
        lease: str = "",
    ) -> str | None:
        """The provider id of a message to ``to`` with ``body`` accepted since ``since``
        (``message_id`` and ``lease``: our row and the lease it was sent under, for providers
        that journal acceptances by them)."""

    def find_sent_many(self, *, queries: list[SentQuery], sender: str) -> dict[int, str]:
        """The provider ids of the queried messages it accepted ({message id: provider id});
        one ``find_sent`` per message unless the provider can answer for all at once."""
        found = {}
        for query in queries:
            provider_id = self.find_sent(
                to=query.to,
                sender=sender,
                since=query.since,
                body=query.body,
                message_id=query.message_id,
                lease=query.lease,
            )
            if provider_id:
                found[query.message_id] = provider_id
        return found

    @abstractmethod
    def check_credentials(self) -> None:
        """Raise ProviderError if the account cannot send."""

    def close(self) -> None:  # noqa: B027 - optional hook: release pooled connections
        """Release pooled connections (optional)."""
