"""The provider interface, shared by SMS and email providers (docs/architecture.md).

A provider class owns everything that is specific to one provider, like a RapidPro channel
type: sending a window of messages (``send_window``) and classifying what went wrong (one
``SendResult`` each), finding a message it may already have accepted (``find_sent``;
reconciliation asks ``find_handed_over``, which also names messages whose acceptance cannot be
known), checking credentials, and its callbacks: the request-signature check, reading
a status callback into a ``StatusUpdate`` (with its error codes: which failure means Blocked,
which means the recipient opted out at the carrier), reading an inbound message and answering
it, and finding the brands an inbound message may belong to. The engine
(``distributions.sending``) owns leasing, throttling, retries and bookkeeping; the callback
views (``distributions.callbacks``) only ask the provider class named in the URL.

A new provider is one module with one class and its line in ``settings.RELAY_SMS_PROVIDERS``
(``registry``); ``tests/providers.py`` proves it.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from django.http import HttpRequest, HttpResponse, QueryDict

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
class HandedOver:
    """What a provider knows of queried messages (reconciliation): ``sent``, those it accepted;
    ``in_doubt``, those handed over whose acceptance it cannot tell (the worker died between
    handing one over and reading the answer): never sent again, never taken as Sent. Both
    {message id: provider id}."""

    sent: dict[int, str]
    in_doubt: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusUpdate:
    """A provider's report on one message, read and classified by its provider class:
    ``status`` is ours (a ``Message.Status`` value; None: a status we do not track), and
    ``recipient_opted_out`` says the carrier refused it because the recipient unsubscribed."""

    provider_status: str
    provider_id: str = ""
    error_code: str = ""
    message_id: int | None = None
    status: str | None = None
    recipient_opted_out: bool = False


@dataclass(frozen=True)
class InboundSms:
    """A message a recipient sent to one of our numbers, as its provider posted it."""

    from_number: str
    to_number: str
    body: str
    provider_sid: str = ""
    account_sid: str = ""
    messaging_service_sid: str = ""
    opt_out_type: str = ""  # the provider's own opt-out handling (Twilio: STOP, START, HELP)


class Provider(ABC):
    """What every provider class implements, whatever its channel."""

    code: ClassVar[str]
    label: ClassVar[str]
    channels: ClassVar[tuple[str, ...]]
    wants_status_callback: ClassVar[bool] = False  # give each message our callback URL
    # Provider statuses -> ours; a failure with a BLOCKING error is Blocked, and with an
    # OPT_OUT error also an opt-out of the recipient (the carrier says they unsubscribed).
    STATUS_MAP: ClassVar[dict[str, str]] = {}
    BLOCKING_ERRORS: ClassVar[frozenset[str]] = frozenset()
    OPT_OUT_ERRORS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, account):
        self.account = account

    @abstractmethod
    def send_window(self, messages: list) -> list[SendResult]:
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

    def send_window_coroutine(self, messages: list[OutgoingSms]):
        """(event loop, coroutine) handing ``messages`` over, for providers that can send
        several accounts' windows at once on one loop; None: the engine calls
        ``send_window``."""
        return None

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

    def find_handed_over(self, *, queries: list[SentQuery], sender: str) -> HandedOver:
        """Reconciliation's question: which queried messages the provider accepted, and which
        were handed over without a known answer. By default ``find_sent_many``'s answer and
        nothing in doubt (a provider that can list what it accepted knows)."""
        return HandedOver(sent=self.find_sent_many(queries=queries, sender=sender))

    @abstractmethod
    def check_credentials(self) -> None:
        """Raise ProviderError if the account cannot send."""

    def close(self) -> None:  # noqa: B027 - optional hook: release pooled connections
        """Release pooled connections (optional)."""

    @classmethod  # noqa: B027 - optional hook
    def warm(cls) -> None:
        """Load what the first hand-over of a process would otherwise load (an SDK's lazy
        modules): a pump calls it before its first pick (``registry.providers_warm``), so that
        no window waits for it between its sender's recorded hand-over and its requests."""

    # --- error classification ---------------------------------------------------------------
    @classmethod
    def status_update(
        cls,
        *,
        provider_status: str,
        provider_id: str = "",
        error_code: str = "",
        message_id: int | None = None,
    ) -> StatusUpdate:
        """A status report of this provider, classified."""
        status = cls.STATUS_MAP.get((provider_status or "").lower())
        error_code = (error_code or "").strip()
        blocked = status == "failed" and error_code in cls.BLOCKING_ERRORS
        return StatusUpdate(
            provider_status=provider_status,
            provider_id=provider_id,
            error_code=error_code,
            message_id=message_id,
            status="blocked" if blocked else status,
            recipient_opted_out=blocked and error_code in cls.OPT_OUT_ERRORS,
        )

    # --- callbacks (a provider that calls back overrides these) ------------------------------
    @classmethod
    def callback_secret(cls, account: ProviderAccount | None) -> str:
        """The secret this provider signs the callbacks of ``account`` with (None: the
        platform's own account)."""
        return ""

    @classmethod
    def request_authentic(cls, request: HttpRequest, form: QueryDict, *, secret: str) -> bool:
        """Whether ``request`` (its fields: ``form``) carries a valid signature."""
        return False

    @classmethod
    def read_status_callback(cls, form: QueryDict, *, message_id: int) -> StatusUpdate | None:
        """A status callback for our message ``message_id``, read (None: not one)."""
        return None

    @classmethod
    def read_inbound(cls, form: QueryDict) -> InboundSms | None:
        """An inbound message callback, read (None: this provider posts none)."""
        return None

    @classmethod
    def inbound_response(cls, reply: str) -> HttpResponse:
        """The answer to an inbound callback, ``reply`` texted back (empty: none)."""
        return HttpResponse(status=204)

    @classmethod
    def inbound_brand_candidates(cls, inbound: InboundSms) -> list[int]:
        """Brands an inbound message may belong to, most likely first (the callback takes the
        first whose secret authenticates the request)."""
        return []

    @classmethod
    def inbound_brand_candidates_among(
        cls,
        inbound: InboundSms,
        *,
        recent_brand_ids: list[int],
        accounts: dict[int, ProviderAccount] | None = None,
    ) -> list[int]:
        """The same, given the brands of the sender's last messages, newest first (read once
        by the callback, which shares them with what follows). The provider accounts it reads
        on the way (with their brand) may go into ``accounts`` by brand id: the callback does
        not read them again. By default neither is used."""
        return cls.inbound_brand_candidates(inbound)


class SmsProvider(Provider):
    """An SMS provider. Delivery reports speak this common vocabulary unless a provider
    says otherwise."""

    channels: ClassVar[tuple[str, ...]] = ("sms",)
    STATUS_MAP: ClassVar[dict[str, str]] = {
        "sent": "sent",
        "delivered": "delivered",
        "undelivered": "failed",
        "failed": "failed",
        "read": "delivered",
    }


class EmailProvider(Provider):
    """An email provider (its account is an ``EmailAccount``)."""

    channels: ClassVar[tuple[str, ...]] = ("email",)
