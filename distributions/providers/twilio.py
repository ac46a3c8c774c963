"""Twilio, through the official SDK, for both integration models (docs/credits.md).

- *Sub-account*: the platform's Twilio account (``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``)
  creates one sub-account per brand (``twilio_subaccount_provision``); the brand's
  ``ProviderAccount`` keeps that sub-account's SID and token (encrypted).
- *Self-service*: the brand's own Account SID, auth token and Messaging Service SID or sender.

The API host is ``settings.TWILIO_API_BASE_URL`` (the tests point the real SDK at a
Twilio-compatible server on 127.0.0.1). Sends run on the SDK's async client (aiohttp, pooled
connections) with a whole window in flight; reconciliation and credential checks use the
pooled sync client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime
from importlib import import_module
from urllib.parse import parse_qs, urlencode, urlparse, urlsplit, urlunsplit
from xml.sax.saxutils import escape

from django.conf import settings
from django.http import HttpResponse

from aiohttp import BasicAuth, ClientTimeout
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator, add_port, compare, remove_port
from twilio.rest import Client

from distributions.models import Message, ProviderAccount
from distributions.providers.base import (
    InboundSms,
    Outcome,
    OutgoingSms,
    ProviderError,
    SendResult,
    SentQuery,
    SmsProvider,
    StatusUpdate,
)
from distributions.providers.loop import handover_loop
from distributions.providers.loop import run as run_on_loop
from distributions.selectors import inbound_accounts

logger = logging.getLogger(__name__)


def request_timeout() -> float:
    """Seconds a request to Twilio may take (``RELAY_PROVIDER_TIMEOUT_SECONDS``): a window
    is in flight at most this long, which the send lease must exceed."""
    return float(settings.RELAY_PROVIDER_TIMEOUT_SECONDS)


# Messages per page when reconciliation lists what an account sent in a time range.
LIST_PAGE_SIZE = 1000
# Twilio error codes: refused for this recipient only (the rest of the run goes on) ...
RECIPIENT_ERRORS = {
    "21211": "Invalid 'To' phone number",
    "21214": "'To' phone number cannot be reached",
    "21408": "Permission to send an SMS has not been enabled for the region",
    "21610": "Attempt to send to unsubscribed recipient",
    "21612": "The 'To' phone number is not currently reachable",
    "21614": "'To' number is not a valid mobile number",
    "21635": "'To' number cannot be a landline",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered",
}
BLOCKED_ERRORS = {"21610"}
# ... or refused for the whole account or sender (nothing else will go through).
ACCOUNT_ERRORS = {"20003", "20005", "20404", "21212", "21606", "21659", "21703", "30002"}


def signature_valid(validator: RequestValidator, url: str, params: dict, signature: str) -> bool:
    """What ``validator.validate`` answers, one HMAC at a time: the SDK computes both the
    signature of the URL without its port and with it, then accepts either; the first that
    matches is enough, the URL as configured first (the one Twilio signs, almost always). A
    body-hash request (JSON) is the SDK's to check."""
    parsed = urlparse(url)
    if "bodySHA256" in parse_qs(parsed.query):
        return validator.validate(url, params, signature)
    forms = sorted((remove_port(parsed), add_port(parsed)), key=lambda form: form != url)
    return any(compare(validator.compute_signature(form, params), signature) for form in forms)


class RelayTwilioClient(Client):
    """The SDK client with its API host taken from a setting instead of api.twilio.com."""

    def __init__(self, *args, api_base_url: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        base = urlsplit(api_base_url or "https://api.twilio.com")
        self._base_scheme, self._base_netloc = base.scheme, base.netloc
        self._hostnames: dict[str, str] = {}

    def get_hostname(self, uri: str) -> str:
        # Every message of an account has the same URI: parsing it once per message was a
        # twentieth of a worker's time.
        known = self._hostnames.get(uri)
        if known is not None:
            return known
        final = super().get_hostname(uri)
        parts = urlsplit(final)
        if parts.netloc.endswith("twilio.com") and self._base_netloc != "api.twilio.com":
            parts = parts._replace(scheme=self._base_scheme, netloc=self._base_netloc)
        final = urlunsplit(parts)
        if len(self._hostnames) >= 256:
            self._hostnames.clear()
        self._hostnames[uri] = final
        return final


class TimedAsyncTwilioHttpClient(AsyncTwilioHttpClient):
    """The SDK's async HTTP client (aiohttp, pooled), leaner per request and with a timeout.

    - twilio 9's async client stores its ``timeout`` but never applies it: without this, a
      hung request would hang the worker.
    - The form body is encoded here, once, as bytes (``urlencode(doseq=True)``, what
      aiohttp's ``FormData`` produces from the same dict) and the ``Authorization`` header is
      computed once per credentials: aiohttp's form machinery and a ``BasicAuth`` per request
      were a fifth of a sending worker's time.
    - The answer is read as bytes and decoded as UTF-8 (Twilio answers JSON): aiohttp's
      ``text()`` may guess a charset.

    Must be built inside a running event loop (the aiohttp session binds to it).
    """

    def __init__(self, *, timeout: float, **kwargs):
        super().__init__(pool_connections=True, timeout=timeout, **kwargs)
        self._client_timeout = ClientTimeout(total=timeout)
        self._authorizations: dict[tuple[str, str], str] = {}

    async def request(
        self,
        method,
        url,
        params=None,
        data=None,
        headers=None,
        auth=None,
        timeout=None,
        allow_redirects=False,
    ):
        if timeout is not None and timeout <= 0:
            raise ValueError(timeout)
        headers = dict(headers or {})
        if auth is not None:
            authorization = self._authorizations.get(auth)
            if authorization is None:
                authorization = BasicAuth(login=auth[0], password=auth[1]).encode()
                self._authorizations[auth] = authorization
            headers["Authorization"] = authorization
        body = None
        if data:
            body = urlencode(data, doseq=True).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        async with self.session.request(
            method.upper(),
            url,
            params=params,
            data=body,
            headers=headers,
            timeout=self._client_timeout if timeout is None else ClientTimeout(total=timeout),
            allow_redirects=allow_redirects,
        ) as answer:
            content = await answer.read()
            status, answer_headers = answer.status, answer.headers
        return Response(
            status, content.decode(answer.charset or "utf-8", "replace"), answer_headers
        )


def twilio_client(account_sid: str, auth_token: str, *, async_: bool = False) -> RelayTwilioClient:
    http_client = (
        TimedAsyncTwilioHttpClient(timeout=request_timeout())
        if async_
        else TwilioHttpClient(pool_connections=True, timeout=request_timeout())
    )
    return RelayTwilioClient(
        account_sid, auth_token, http_client=http_client, api_base_url=settings.TWILIO_API_BASE_URL
    )


# Sends reuse the process's hand-over loop (``providers.loop``) and one pooled HTTP client (an
# aiohttp session bound to that loop) per API host, across send batches and across accounts:
# a client per task opened one new connection per message in flight (a TCP handshake at both
# ends for every 5 messages), and a session per account made a batch of many brands'
# one-message windows (200 long codes) open a session and a connection per brand. Credentials
# travel per request (the SDK passes them to the HTTP client), so one session serves every
# account. aiohttp drops a pooled connection idle longer than its keep-alive timeout (15 s) or
# closed by the server, before reusing it.
POOLED_ACCOUNTS = 1024  # SDK clients kept per process (cheap objects over the shared session)
_pool_lock = threading.Lock()
_pool: dict = {"loop": None, "http": {}, "clients": {}}


def _pooled_async_client(
    sid: str, token: str
) -> tuple[asyncio.AbstractEventLoop, RelayTwilioClient]:
    """The hand-over loop and an async client for these credentials over the process's
    shared HTTP session for the API host."""
    loop = handover_loop()
    base = settings.TWILIO_API_BASE_URL
    with _pool_lock:
        if _pool["loop"] is not loop:  # a new process (fork) or a new loop: nothing reusable
            _pool.update(loop=loop, http={}, clients={})
        http = _pool["http"].get(base)
        if http is None:
            http = _pool["http"][base] = run_on_loop(_make_http_client())
        clients = _pool["clients"]
        key = (sid, token, base)
        client = clients.pop(key, None)
        if client is None:
            client = RelayTwilioClient(sid, token, http_client=http, api_base_url=base)
        clients[key] = client  # most recently used last
        while len(clients) > POOLED_ACCOUNTS:
            clients.pop(next(iter(clients)))
    return loop, client


async def _make_http_client() -> TimedAsyncTwilioHttpClient:
    return TimedAsyncTwilioHttpClient(timeout=request_timeout())  # binds to this loop


def close_pooled_clients() -> None:
    """Close the process's pooled HTTP sessions (the hand-over loop keeps running)."""
    with _pool_lock:
        loop, sessions = _pool["loop"], _pool["http"]
        _pool.update(loop=None, http={}, clients={})
    if loop is None or loop.is_closed():
        return
    for http in sessions.values():
        run_on_loop(http.close())


def classify_error(exc: TwilioRestException, message_id: int) -> SendResult:
    code = str(exc.code or "")
    text = (exc.msg or "")[:200]
    if exc.status == 429 or code == "20429":
        return SendResult(
            message_id,
            Outcome.RETRY,
            error_code=code or "429",
            error_message=text,
            retry_after=1.0,
            throttled=True,
        )
    if code in ACCOUNT_ERRORS or exc.status in (401, 403):
        return SendResult(
            message_id, Outcome.FATAL, error_code=code or str(exc.status), error_message=text
        )
    if code in RECIPIENT_ERRORS or 400 <= exc.status < 500:
        return SendResult(
            message_id,
            Outcome.REJECTED,
            error_code=code or str(exc.status),
            error_message=text or RECIPIENT_ERRORS.get(code, ""),
            blocked=code in BLOCKED_ERRORS,
        )
    # 5xx: Twilio answered that it failed; the message was not created. Try again.
    return SendResult(
        message_id, Outcome.RETRY, error_code=code or str(exc.status), error_message=text
    )


class TwilioProvider(SmsProvider):
    code = "twilio"
    label = "Twilio"
    wants_status_callback = True
    # 21610: the recipient replied STOP to this sender; 30004/30007: blocked or filtered by the
    # carrier (https://www.twilio.com/docs/api/errors).
    BLOCKING_ERRORS = frozenset({"21610", "30007", "30004"})
    OPT_OUT_ERRORS = frozenset({"21610"})

    def __init__(self, account):
        super().__init__(account)
        self._async_client: RelayTwilioClient | None = None
        self._sync_client: RelayTwilioClient | None = None

    @property
    def credentials(self) -> tuple[str, str]:
        sid = self.account.account_sid or settings.TWILIO_ACCOUNT_SID
        token = self.account.auth_token or settings.TWILIO_AUTH_TOKEN
        if not sid or not token:
            raise ProviderError("Twilio is chosen but no Account SID and auth token are set.")
        return sid, token

    def _sync(self) -> RelayTwilioClient:
        if self._sync_client is None:
            self._sync_client = twilio_client(*self.credentials)
        return self._sync_client

    def send_window(self, messages: list[OutgoingSms]) -> list[SendResult]:
        try:
            sid, token = self.credentials
        except ProviderError as exc:
            return [
                SendResult(m.message_id, Outcome.FATAL, error_code="config", error_message=str(exc))
                for m in messages
            ]
        _, self._async_client = _pooled_async_client(sid, token)
        return run_on_loop(self._send_all(messages))

    @classmethod
    def warm(cls) -> None:
        # The SDK loads its API modules on first use (``client.messages``: seconds on a busy
        # machine); a window's requests would leave that long after its hand-over was
        # recorded and reach the provider bunched with the next window.
        import_module("twilio.rest.api.v2010.account.message")

    def send_window_coroutine(self, messages: list[OutgoingSms]):
        """The hand-over loop and a coroutine handing ``messages`` over on it, so that the
        engine runs the windows of several accounts at once while it prepares the next batch;
        None without credentials (``send_window`` answers those)."""
        try:
            sid, token = self.credentials
        except ProviderError:
            return None
        loop, self._async_client = _pooled_async_client(sid, token)
        return loop, self._send_all(messages)

    async def _send_all(self, messages: list[OutgoingSms]) -> list[SendResult]:
        return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

    async def _send_one(self, message: OutgoingSms) -> SendResult:
        kwargs = {"to": message.to, "body": message.body}
        sender = message.sender or self.account.messaging_service_sid
        if sender.startswith("MG"):
            kwargs["messaging_service_sid"] = sender
        elif sender:
            kwargs["from_"] = sender
        if message.status_callback:
            kwargs["status_callback"] = message.status_callback
        try:
            created = await self._async_client.messages.create_async(**kwargs)
        except TwilioRestException as exc:
            return classify_error(exc, message.message_id)
        except TimeoutError as exc:
            # The request left; Twilio may have created the message. Never resend blindly.
            return SendResult(
                message.message_id,
                Outcome.UNKNOWN,
                error_code="timeout",
                error_message=str(exc)[:200],
            )
        except (OSError, TwilioException) as exc:
            return self._transport_error(message.message_id, exc)
        except Exception as exc:  # noqa: BLE001 - aiohttp's client errors, unknown by design
            return self._transport_error(message.message_id, exc)
        return SendResult(message.message_id, Outcome.ACCEPTED, provider_id=created.sid)

    @staticmethod
    def _transport_error(message_id: int, exc: BaseException) -> SendResult:
        name = type(exc).__name__
        # A refused connection never reached Twilio: safe to retry. Anything after the request
        # may have been sent (a reset, a disconnect) is unknown.
        if "ConnectionRefused" in name or "ClientConnectorError" in name:
            return SendResult(
                message_id,
                Outcome.RETRY,
                error_code="connect",
                error_message=str(exc)[:200],
                retry_after=2.0,
            )
        return SendResult(
            message_id,
            Outcome.UNKNOWN,
            error_code="transport",
            error_message=f"{name}: {exc}"[:200],
        )

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
        try:
            candidates = self._sync().messages.list(to=to, date_sent_after=since, limit=200)
        except TwilioException as exc:  # list() raises a plain TwilioException on errors
            raise ProviderError(f"Twilio refused the message list: {exc}") from exc
        except OSError as exc:
            raise ProviderError(f"Twilio could not be reached: {exc}") from exc
        for candidate in candidates:
            created = candidate.date_created or candidate.date_sent
            if candidate.body == body and (
                created is None or created >= since.replace(microsecond=0)
            ):
                return candidate.sid
        return None

    def find_sent_many(self, *, queries: list[SentQuery], sender: str) -> dict[int, str]:
        """List what the account sent since the earliest query's lease, a page of
        ``LIST_PAGE_SIZE`` at a time (from the sender when it is a number or a name), and
        match by recipient and body: one listing for a dead worker's rows, not a lookup
        each."""
        if not queries:
            return {}
        since = min(query.since for query in queries)
        wanted: dict[tuple[str, str], list[SentQuery]] = {}
        for query in sorted(queries, key=lambda q: q.message_id):
            wanted.setdefault((query.to, query.body), []).append(query)
        filters = {"date_sent_after": since, "page_size": LIST_PAGE_SIZE}
        if sender and not sender.startswith("MG"):
            filters["from_"] = sender
        found: dict[int, str] = {}
        try:
            # Oldest first among equals: the first accepted copy answers the first query.
            candidates = list(self._sync().messages.stream(**filters))
        except TwilioException as exc:
            raise ProviderError(f"Twilio refused the message list: {exc}") from exc
        except OSError as exc:
            raise ProviderError(f"Twilio could not be reached: {exc}") from exc
        for candidate in reversed(candidates):
            waiting = wanted.get((candidate.to, candidate.body))
            if not waiting:
                continue
            created = candidate.date_created or candidate.date_sent
            query = waiting[0]
            if created is None or created >= query.since.replace(microsecond=0):
                waiting.pop(0)
                found[query.message_id] = candidate.sid
        return found

    def check_credentials(self) -> None:
        sid, _ = self.credentials
        try:
            self._sync().api.v2010.accounts(sid).fetch()
        except TwilioRestException as exc:
            raise ProviderError(
                f"Twilio refused these credentials ({exc.code}: {exc.msg})."
            ) from exc
        except (OSError, TwilioException) as exc:
            raise ProviderError(f"Twilio could not be reached: {exc}") from exc

    def close(self) -> None:
        """The async client stays pooled for the process's next sends (see ``_pool``)."""
        self._async_client = None
        if self._sync_client is not None:
            self._sync_client.http_client.session.close()
        self._sync_client = None

    # --- callbacks ---------------------------------------------------------------------------
    @classmethod
    def callback_secret(cls, account) -> str:
        """Twilio signs with the auth token of the account that sent (the brand's own or its
        sub-account), else the platform's."""
        if account is not None and account.auth_token:
            return account.auth_token
        return settings.TWILIO_AUTH_TOKEN

    @classmethod
    def request_authentic(cls, request, form, *, secret: str) -> bool:
        """Twilio's signature of the URL it was given (built from PUBLIC_BASE_URL) and the
        form (https://www.twilio.com/docs/usage/webhooks/webhooks-security)."""
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not secret:
            return False
        url = settings.PUBLIC_BASE_URL + request.get_full_path()
        return signature_valid(RequestValidator(secret), url, form.dict(), signature)

    @classmethod
    def read_status_callback(cls, form, *, message_id: int) -> StatusUpdate:
        return cls.status_update(
            provider_status=form.get("MessageStatus") or form.get("SmsStatus", ""),
            provider_id=form.get("MessageSid", ""),
            error_code=form.get("ErrorCode", ""),
            message_id=message_id,
        )

    @classmethod
    def read_inbound(cls, form) -> InboundSms:
        def field(name: str) -> str:
            return (form.get(name) or "").strip()

        return InboundSms(
            from_number=field("From"),
            to_number=field("To"),
            body=form.get("Body", ""),
            provider_sid=field("MessageSid") or field("SmsSid"),
            account_sid=field("AccountSid"),
            messaging_service_sid=field("MessagingServiceSid"),
            opt_out_type=field("OptOutType"),
        )

    @classmethod
    def inbound_response(cls, reply: str) -> HttpResponse:
        """TwiML: empty, or the reply as one message."""
        body = f"<Message>{escape(reply)}</Message>" if reply else ""
        return HttpResponse(
            f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>',
            content_type="text/xml; charset=utf-8",
        )

    @classmethod
    def inbound_brand_candidates(cls, inbound: InboundSms) -> list[int]:
        recent_brand_ids = []
        if inbound.from_number:
            recent_brand_ids = list(
                Message.objects.filter(address=inbound.from_number, sent_at__isnull=False)
                .order_by("-sent_at", "-pk")
                .values_list("distribution__project__brand_id", flat=True)[:50]
            )
        return cls.inbound_brand_candidates_among(inbound, recent_brand_ids=recent_brand_ids)

    @classmethod
    def inbound_brand_candidates_among(
        cls,
        inbound: InboundSms,
        *,
        recent_brand_ids: list[int],
        accounts: dict[int, ProviderAccount] | None = None,
    ) -> list[int]:
        """1. brands whose Twilio account sends from ``To`` (default sender) or through the
        messaging service that received it (several: the one that last messaged ``From``
        first); 2. whose account is the Twilio account that received it; 3. the brand that
        last messaged ``From``. One query: the accounts of 1 and 2 together."""
        recent: dict[int, int] = {}
        for brand_id in recent_brand_ids:
            recent.setdefault(brand_id, len(recent))

        def by_recency(brand_ids) -> list[int]:
            return sorted(set(brand_ids), key=lambda b: (recent.get(b, len(recent)), b))

        to_number, service_sid = inbound.to_number, inbound.messaging_service_sid
        account_sid = inbound.account_sid
        rows = inbound_accounts(
            to_number=to_number, service_sid=service_sid, account_sid=account_sid
        )
        if accounts is not None:
            accounts.update((row.brand_id, row) for row in rows)
        candidates = by_recency(
            row.brand_id
            for row in rows
            if (to_number and row.default_sender == to_number)
            or (service_sid and row.messaging_service_sid == service_sid)
        )
        if account_sid:
            candidates += by_recency(row.brand_id for row in rows if row.account_sid == account_sid)
        candidates += sorted(recent, key=recent.get)
        return list(dict.fromkeys(candidates))


def twilio_subaccount_provision(*, brand) -> tuple[str, str]:
    """Create the brand's sub-account under the platform account: (sid, token)."""
    if not settings.TWILIO_ACCOUNT_SID or not settings.TWILIO_AUTH_TOKEN:
        raise ProviderError("The platform's TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set.")
    client = twilio_client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN)
    try:
        account = client.api.v2010.accounts.create(friendly_name=f"Relay: {brand.name}"[:64])
    except TwilioRestException as exc:
        raise ProviderError(
            f"Twilio refused to create a sub-account ({exc.code}: {exc.msg})."
        ) from exc
    return account.sid, account.auth_token
