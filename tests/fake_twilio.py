"""A Twilio-compatible fake REST API server for tests and benchmarks.

The real official ``twilio`` SDK talks to it over HTTP on 127.0.0.1; nothing leaves the machine.

In-process use (the server runs an aiohttp app on its own event loop in a background thread)::

    with FakeTwilio() as fake:
        client = twilio_client_for(fake)              # real twilio.rest.Client, pointed at fake
        msg = client.messages.create(to="+15551230001", from_="+15005550006", body="hi")
        assert fake.sent_to("+15551230001") == 1

    # async SDK client (must be built inside a running event loop, an aiohttp rule):
    async def main():
        client = twilio_client_for(fake, async_=True)
        try:
            await client.messages.create_async(to=..., from_=..., body=...)
        finally:
            await client.http_client.close()

Separate process (e.g. for benchmarks, so the fake does not share the GIL with the code under
test)::

    python tests/fake_twilio.py --port 8099        # or: python -m tests.fake_twilio --port 8099

It prints one JSON line ``{"base_url": ..., "account_sid": ..., "auth_token": ...}`` when ready
and runs until SIGINT/SIGTERM. Drive it from another process with :class:`RemoteFakeTwilio`,
which mirrors the Python API of :class:`FakeTwilio` over the JSON control API under ``/_fake/``.

What it implements (paths, form fields and JSON shapes as used by twilio-python 9.x):

* ``POST/GET /2010-04-01/Accounts.json``, ``GET/POST /2010-04-01/Accounts/{Sid}.json``
  (sub-accounts: the parent's credentials may act on its sub-accounts, as on Twilio).
* ``POST/GET /2010-04-01/Accounts/{Sid}/Messages.json`` (create; list with To, From, DateSent,
  DateSent<, DateSent>, PageSize, Page, PageToken and next_page_uri paging),
  ``GET/POST/DELETE /2010-04-01/Accounts/{Sid}/Messages/{Sid}.json``.
* HTTP Basic auth; Twilio error bodies ``{"code", "message", "more_info", "status"}``.
* Signed (``X-Twilio-Signature``) status callbacks and inbound-SMS webhooks, STOP/START
  handling (21610 after a recipient texted STOP), fault injection (429/5xx, per-number errors,
  delivery failures, latency, hangs).

Control API (JSON, no auth, loopback only):

* ``GET  /_fake/messages[?to=&account_sid=&status=&direction=inbound]`` -> {messages, count}
* ``GET  /_fake/counters`` -> {requests, accepted, rejected}: constant time, for polling while
  a benchmark runs (``stats`` walks every message)
* ``GET  /_fake/stats`` -> {requests, accepted, rejected, rejected_by_code, by_to, by_status,
  auth_failures, faults_injected, callbacks_sent, callbacks_failed, callbacks_pending, ...}
* ``GET/POST /_fake/faults`` -> see :meth:`FakeTwilio.configure` for the JSON
* ``POST /_fake/reset``; ``GET/POST /_fake/accounts`` ({account_sid?, auth_token?,
  friendly_name?, owner_account_sid?}); ``GET /_fake/callbacks``;
  ``POST /_fake/inbound`` ({from, to, body, url, account_sid?, messaging_service_sid?});
  ``GET /_fake/health``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import json
import math
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET  # noqa: N817
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

__all__ = [
    "API_VERSION",
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "DEFAULT_FROM",
    "FakeTwilio",
    "RemoteFakeTwilio",
    "count_segments",
    "point_client_at",
    "twilio_client_for",
    "twilio_signature",
]

API_VERSION = "2010-04-01"
TWILIO_API_BASE_URL = "https://api.twilio.com"
DEFAULT_ACCOUNT_SID = "AC" + "fa4e" * 8
DEFAULT_AUTH_TOKEN = "fa4e70ce" * 4
#: Twilio's documented "valid test From number"; used as the sender a Messaging Service picks.
DEFAULT_FROM = "+15005550006"

# --------------------------------------------------------------------------------------------
# Twilio error catalogue: code -> (HTTP status, message template)
# --------------------------------------------------------------------------------------------
ERRORS: dict[int, tuple[int, str]] = {
    20001: (400, "Invalid parameter {param}"),
    20003: (401, "Authentication Error - invalid username"),
    20005: (401, "Account not active"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    20503: (503, "Service Unavailable"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21212: (
        400,
        "The 'From' number {from_} is not a valid phone number, shortcode, "
        "or alphanumeric sender ID.",
    ),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by the "
        "'To' number: {to}.",
    ),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (
        400,
        "The From phone number {from_} is not a valid, SMS-capable inbound phone number or "
        "short code for your account.",
    ),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21611: (400, "This 'From' number has exceeded the maximum number of queued messages"),
    21612: (
        400,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
        "number: {from_} via SMS.",
    ),
    21614: (400, "'To' number {to} is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    21619: (400, "A text message body or media urls must be specified."),
    21701: (400, "The Messaging Service Sid {mss} is invalid."),
    # Delivery (asynchronous) errors, reported via status callbacks / message error_code.
    30001: (400, "Queue overflow"),
    30003: (400, "Unreachable destination handset"),
    30004: (400, "Message blocked"),
    30005: (400, "Unknown destination handset"),
    30006: (400, "Landline or unreachable carrier"),
    30007: (400, "Message filtered"),
    30008: (400, "Unknown error"),
    30034: (400, "Message from an unregistered number"),
}

#: Twilio's test-credential "magic" numbers (only honoured with ``magic_numbers=True``).
MAGIC_TO = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}
MAGIC_FROM = {"+15005550001": 21212, "+15005550007": 21606, "+15005550008": 21611}

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

_E164 = re.compile(r"^(?:(?:whatsapp|messenger|rcs):)?\+[1-9]\d{1,14}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHA_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_MG_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

_COUNTRY_PREFIXES = {
    "+1": "US",
    "+44": "GB",
    "+33": "FR",
    "+49": "DE",
    "+61": "AU",
    "+34": "ES",
    "+39": "IT",
    "+31": "NL",
    "+353": "IE",
    "+91": "IN",
    "+52": "MX",
    "+55": "BR",
    "+81": "JP",
    "+27": "ZA",
    "+64": "NZ",
    "+46": "SE",
    "+47": "NO",
    "+45": "DK",
    "+41": "CH",
    "+43": "AT",
    "+32": "BE",
    "+351": "PT",
    "+48": "PL",
}

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = frozenset("\f^{}\\[~]|€")
_ASCII_NON_GSM = re.compile(
    "["
    + re.escape("".join(c for c in map(chr, range(128)) if c not in _GSM7_BASIC | _GSM7_EXT))
    + "]"
)
_ASCII_GSM_EXT = re.compile("[" + re.escape("".join(c for c in _GSM7_EXT if c.isascii())) + "]")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return ""


def count_segments(body: str | None) -> int:
    """Roughly how Twilio counts SMS segments: GSM-7 160/153 septets, else UCS-2 70/67."""
    if not body:
        return 1
    if body.isascii() and not _ASCII_NON_GSM.search(body):  # fast path, plain ASCII text
        septets = len(body) + len(_ASCII_GSM_EXT.findall(body))
        return 1 if septets <= 160 else math.ceil(septets / 153)
    septets = 0
    for ch in body:
        if ch in _GSM7_BASIC:
            septets += 1
        elif ch in _GSM7_EXT:
            septets += 2
        else:
            units = len(body.encode("utf-16-le")) // 2
            return 1 if units <= 70 else math.ceil(units / 67)
    return 1 if septets <= 160 else math.ceil(septets / 153)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, Any] | None) -> str:
    """``X-Twilio-Signature`` exactly as ``RequestValidator(token).compute_signature`` computes.

    HMAC-SHA1 over the full URL followed by each POST parameter name and value, names sorted
    (values of a repeated name sorted too), base64-encoded.
    """
    s = url
    for name in sorted(set(params or {})):
        value = params[name]
        values = value if isinstance(value, list | tuple) else [value]
        for v in sorted({str(x) for x in values}):
            s += name + v
    mac = hmac.new(auth_token.encode("utf-8"), s.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii").strip()


def rfc2822(ts: float) -> str:
    """Twilio's date format, e.g. ``Thu, 24 Aug 2023 05:01:45 +0000``."""
    t = time.gmtime(ts)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def _country_of(number: str) -> str:
    digits = number.split(":", 1)[-1]
    for n in (4, 3, 2):
        if digits[:n] in _COUNTRY_PREFIXES:
            return _COUNTRY_PREFIXES[digits[:n]]
    return ""


def _parse_filter_time(value: str) -> tuple[float, bool] | None:
    """Parse a DateSent filter value -> (UTC epoch seconds, is_date_only)."""
    value = value.strip()
    try:
        if len(value) == 10:
            d = dt.date.fromisoformat(value)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp(), True
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp(), False


def _day_start(ts: float) -> float:
    return ts - (ts % 86400)


def _host_is_loopback(url: str) -> bool:
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return False
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------
class FakeTwilio:
    """A Twilio REST API fake on ``127.0.0.1``; see the module docstring.

    Parameters
    ----------
    accounts:
        ``{account_sid: auth_token}``; the first pair is the default (``.account_sid``,
        ``.auth_token``). Default: ``{DEFAULT_ACCOUNT_SID: DEFAULT_AUTH_TOKEN}``.
    host, port:
        Where to listen; ``port=0`` (default) picks a free port.
    callbacks:
        Send status callbacks to ``StatusCallback`` URLs (default True).
    callback_delay:
        Seconds between accepting a message and its first status transition/callback.
    callback_concurrency:
        How many callback POSTs may be in flight at once.
    callback_timeout:
        Per-callback HTTP timeout (seconds); failures are recorded, never raised.
    allow_external_callbacks:
        Callbacks/webhooks only go to loopback hosts unless this is True (non-loopback URLs
        are recorded as failed without any network access).
    magic_numbers:
        Honour Twilio's test-credential magic numbers (+15005550001 etc.).
    honor_stop:
        An inbound STOP (via :meth:`inbound`) blocks further sends to that number from that
        sender (21610; asynchronously "failed"/21610 for Messaging Service sends); START
        lifts it. Twilio does this by default for long codes.
    seed:
        SIDs are derived deterministically from ``seed`` and a counter.
    clock:
        Callable returning epoch seconds (default :func:`time.time`) for dates.
    """

    #: Twilio answers a create without Body/MediaUrl/ContentSid with 21619 today (older docs
    #: list 21602 "Message body is required."). Change per instance if you need 21602.
    MISSING_BODY_CODE = 21619

    def __init__(
        self,
        accounts: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        callbacks: bool = True,
        callback_delay: float = 0.0,
        callback_concurrency: int = 16,
        callback_timeout: float = 5.0,
        allow_external_callbacks: bool = False,
        magic_numbers: bool = False,
        honor_stop: bool = True,
        seed: str | int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        accounts = dict(accounts or {DEFAULT_ACCOUNT_SID: DEFAULT_AUTH_TOKEN})
        if not accounts:
            raise ValueError("at least one account is required")
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._initial_accounts = accounts
        self.account_sid, self.auth_token = next(iter(accounts.items()))
        self._initial_settings = {
            "callbacks": bool(callbacks),
            "callback_delay": float(callback_delay),
        }
        self._callback_concurrency = max(1, int(callback_concurrency))
        self._callback_timeout = float(callback_timeout)
        self.allow_external_callbacks = allow_external_callbacks
        self.magic_numbers = magic_numbers
        self.honor_stop = honor_stop
        self._seed = str(seed)
        self._clock = clock

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._sid_counter = itertools.count(1)
        self._rq_counter = itertools.count(1)
        self._date_cache: tuple[int, str] = (-1, "")

        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._cb_queue: asyncio.Queue | None = None
        self._workers: list[asyncio.Task] = []
        self._startup_error: BaseException | None = None

        self._reset_state()

    # ---------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeTwilio is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> FakeTwilio:
        if self._thread is not None:
            raise RuntimeError("FakeTwilio already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name=f"FakeTwilio:{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("FakeTwilio did not start within 15s")
        if self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError("FakeTwilio failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        if thread.is_alive():  # pragma: no cover - diagnostic only
            raise RuntimeError("FakeTwilio thread did not stop")
        self._thread = None
        self._loop = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self.port else "not started"
        return f"<FakeTwilio {where}>"

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._astart(sock))
            except BaseException as exc:  # noqa: BLE001 - handed to start()
                self._startup_error = exc
                sock.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._astop())
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    async def _astart(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        self._add_routes(app.router)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.25
        )
        await self._runner.setup()
        site = web.SockSite(self._runner, sock, backlog=1024)
        await site.start()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._callback_concurrency + 8),
            timeout=aiohttp.ClientTimeout(total=self._callback_timeout),
            trust_env=False,
        )
        self._cb_queue = asyncio.Queue()
        self._workers = [
            asyncio.create_task(self._callback_worker()) for _ in range(self._callback_concurrency)
        ]

    async def _astop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _call_in_loop(self, coro: Any, timeout: float | None = None) -> Any:
        if self._loop is None or not self.running:
            coro.close()
            raise RuntimeError("FakeTwilio is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("blocking FakeTwilio call from inside its own event loop")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    # ---------------------------------------------------------------- state
    def _reset_state(self) -> None:
        with self._lock:
            now = self._clock()
            self._accounts: dict[str, dict[str, Any]] = {}
            for sid, token in self._initial_accounts.items():
                self._accounts[sid] = self._account_record(sid, token, None, "", now)
            self._auth_cache: dict[str, str] = {}
            self._msgs: list[dict[str, Any]] = []
            self._by_sid: dict[str, dict[str, Any]] = {}
            self._sent_ts: dict[str, float] = {}
            # When each message was accepted (epoch seconds, full precision): benchmarks
            # measure hand-over times and rates at the provider with it.
            self._created_ts: dict[str, float] = {}
            self._callback_urls: dict[str, str] = {}
            self._opt_outs: set[tuple[str, str]] = set()
            self._callback_log: list[dict[str, Any]] = []
            self._inbound_log: list[dict[str, Any]] = []
            self._pending = 0
            self._generation = getattr(self, "_generation", 0) + 1
            self._counters: Counter[str] = Counter()
            self._by_to: Counter[str] = Counter()
            self._rejected_by_code: Counter[int] = Counter()
            # faults & settings
            self._fail_next: dict[str, Any] | None = None
            self._number_errors: dict[str, dict[str, Any]] = {}
            self._delivery_failures: dict[str, dict[str, Any]] = {}
            self._latency = 0.0
            self._hang: dict[str, Any] | None = None
            self._callbacks_enabled = self._initial_settings["callbacks"]
            self._callback_delay = self._initial_settings["callback_delay"]
            self._out_of_order = False
            self._duplicate_callbacks = False
            self._cond.notify_all()

    def _new_sid(self, prefix: str) -> str:
        n = next(self._sid_counter)
        digest = hashlib.sha256(f"{self._seed}:{prefix}:{n}".encode()).hexdigest()
        return prefix + digest[:32]

    def _now_str(self, now: float) -> str:
        sec = int(now)
        cached = self._date_cache
        if cached[0] == sec:
            return cached[1]
        s = rfc2822(sec)
        self._date_cache = (sec, s)
        return s

    def _account_record(
        self, sid: str, token: str, owner: str | None, friendly_name: str, now: float
    ) -> dict[str, Any]:
        d = rfc2822(now)
        base = f"/{API_VERSION}/Accounts/{sid}"
        return {
            "auth_token": token,
            "date_created": d,
            "date_updated": d,
            "friendly_name": friendly_name or f"{sid} account",
            "owner_account_sid": owner or sid,
            "sid": sid,
            "status": "active",
            "subresource_uris": {
                "messages": f"{base}/Messages.json",
                "incoming_phone_numbers": f"{base}/IncomingPhoneNumbers.json",
                "calls": f"{base}/Calls.json",
                "balance": f"{base}/Balance.json",
            },
            "type": "Full",
            "uri": f"{base}.json",
        }

    # ---------------------------------------------------------------- public Python API
    @property
    def accounts(self) -> dict[str, str]:
        """``{account_sid: auth_token}`` for every account, including sub-accounts."""
        with self._lock:
            return {sid: a["auth_token"] for sid, a in self._accounts.items()}

    def token_for(self, account_sid: str) -> str:
        with self._lock:
            return self._accounts[account_sid]["auth_token"]

    def add_account(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        friendly_name: str = "",
        owner_account_sid: str | None = None,
    ) -> tuple[str, str]:
        """Add (or replace) an account; generated sid/token if omitted. Returns (sid, token)."""
        with self._lock:
            sid = account_sid or self._new_sid("AC")
            token = auth_token or self._new_sid("")[:32]
            self._accounts[sid] = self._account_record(
                sid, token, owner_account_sid, friendly_name, self._clock()
            )
            self._auth_cache.clear()
            return sid, token

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Copies of all accepted outbound messages (API JSON shape + ``status_callback``)."""
        with self._lock:
            return [self._export(r) for r in self._msgs if r["direction"].startswith("outbound")]

    @property
    def inbound_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._export(r) for r in self._msgs if r["direction"] == "inbound"]

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["to"] == number]

    def get_message(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self._by_sid.get(sid)
            return self._export(rec) if rec else None

    def sent_to(self, number: str) -> int:
        """How many messages were accepted for ``number`` (API creates; since last reset)."""
        with self._lock:
            return self._by_to.get(number, 0)

    def counters(self) -> dict[str, int]:
        """Requests, accepted and rejected messages: cheap enough to poll during a run."""
        with self._lock:
            c = self._counters
            return {"requests": c["requests"], "accepted": c["accepted"], "rejected": c["rejected"]}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "requests": c["requests"],
                "control_requests": c["control_requests"],
                "accepted": c["accepted"],
                "rejected": c["rejected"],
                "rejected_by_code": {str(k): v for k, v in self._rejected_by_code.items()},
                "by_to": dict(self._by_to),
                "by_status": dict(
                    Counter(
                        r["status"] for r in self._msgs if r["direction"].startswith("outbound")
                    )
                ),
                "auth_failures": c["auth_failures"],
                "faults_injected": c["faults_injected"],
                "callbacks_sent": c["callbacks_sent"],
                "callbacks_failed": c["callbacks_failed"],
                "callbacks_pending": self._pending,
                "inbound": c["inbound"],
                "accounts": len(self._accounts),
            }

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        """Every status-callback attempt: url, params, signature, http_status, error, ok..."""
        with self._lock:
            return [dict(e) for e in self._callback_log]

    @property
    def callback_failures(self) -> list[dict[str, Any]]:
        return [e for e in self.callbacks if not e["ok"]]

    @property
    def inbound_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._inbound_log]

    @property
    def opt_outs(self) -> list[tuple[str, str]]:
        """(recipient, sender-or-messaging-service) pairs blocked by an inbound STOP."""
        with self._lock:
            return sorted(self._opt_outs)

    # faults
    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        code: int | None = None,
        retry_after: float | None = None,
        scope: str = "create",
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` message-create requests (``scope="all"``: any API request)
        with HTTP ``status`` and Twilio error ``code`` (default 20429 / 20500 / 20503 / 20000+
        status). ``retry_after`` adds a ``Retry-After`` header. ``n=0`` clears."""
        if scope not in ("create", "all"):
            raise ValueError("scope must be 'create' or 'all'")
        with self._lock:
            if n <= 0:
                self._fail_next = None
                return
            self._fail_next = {
                "n": int(n),
                "status": int(status),
                "code": int(code) if code is not None else 20000 + int(status),
                "retry_after": retry_after,
                "scope": scope,
                "message": message,
            }

    def set_number_error(
        self, to: str, code: int | None, status: int | None = None, message: str | None = None
    ) -> None:
        """Always reject creates to ``to`` with Twilio error ``code`` (``None`` clears)."""
        with self._lock:
            if code is None:
                self._number_errors.pop(to, None)
                return
            self._number_errors[to] = {
                "code": int(code),
                "status": int(status or ERRORS.get(int(code), (400, ""))[0]),
                "message": message,
            }

    def clear_number_error(self, to: str) -> None:
        self.set_number_error(to, None)

    def set_delivery_failure(
        self, to: str, code: int | None = 30007, status: str = "undelivered"
    ) -> None:
        """Accept creates to ``to`` but end them in ``status`` ("undelivered" or "failed") with
        ``ErrorCode`` ``code`` (30007 filtered, 30003 unreachable...). ``code=None`` clears."""
        if status not in ("undelivered", "failed"):
            raise ValueError("status must be 'undelivered' or 'failed'")
        with self._lock:
            if code is None:
                self._delivery_failures.pop(to, None)
                return
            self._delivery_failures[to] = {"code": int(code), "status": status}

    def set_latency(self, seconds: float) -> None:
        """Sleep ``seconds`` before answering every API request (not the control API)."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def set_hang(
        self, seconds: float, count: int | None = None, after_processing: bool = False
    ) -> None:
        """Sleep ``seconds`` before answering the next ``count`` API requests (all if None).

        The request is still processed after the sleep (a message IS created, as when a real
        Twilio request times out client-side but was accepted); with ``after_processing=True``
        it is processed first and only the response is delayed. ``seconds=0`` clears."""
        with self._lock:
            if seconds <= 0 or (count is not None and count <= 0):
                self._hang = None
                return
            self._hang = {
                "seconds": float(seconds),
                "count": None if count is None else int(count),
                "after_processing": bool(after_processing),
            }

    def set_callbacks(
        self,
        enabled: bool | None = None,
        delay: float | None = None,
        out_of_order: bool | None = None,
        duplicate: bool | None = None,
    ) -> None:
        """Switch status callbacks on/off, delay them, deliver them in reverse order
        (``out_of_order``), or send each one twice (``duplicate``)."""
        with self._lock:
            if enabled is not None:
                self._callbacks_enabled = bool(enabled)
            if delay is not None:
                self._callback_delay = max(0.0, float(delay))
            if out_of_order is not None:
                self._out_of_order = bool(out_of_order)
            if duplicate is not None:
                self._duplicate_callbacks = bool(duplicate)

    def faults(self) -> dict[str, Any]:
        """Current fault/settings configuration (the JSON of ``GET /_fake/faults``)."""
        with self._lock:
            return {
                "fail_next": dict(self._fail_next) if self._fail_next else None,
                "number_errors": {k: dict(v) for k, v in self._number_errors.items()},
                "delivery_failures": {k: dict(v) for k, v in self._delivery_failures.items()},
                "latency": self._latency,
                "hang": dict(self._hang) if self._hang else None,
                "callbacks": self._callbacks_enabled,
                "callback_delay": self._callback_delay,
                "out_of_order": self._out_of_order,
                "duplicate_callbacks": self._duplicate_callbacks,
            }

    def configure(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a fault spec (same JSON as ``POST /_fake/faults``); returns :meth:`faults`.

        Keys: ``fail_next`` {n, status, code, retry_after, scope}; ``number_errors``
        {to: code | {code, status, message} | null}; ``delivery_failures``
        {to: code | {code, status} | null}; ``latency``; ``hang`` {seconds, count,
        after_processing} | null; ``callbacks``; ``callback_delay``; ``out_of_order``;
        ``duplicate_callbacks``; ``clear`` (true: clear all faults first)."""
        known = {
            "fail_next",
            "number_errors",
            "delivery_failures",
            "latency",
            "hang",
            "callbacks",
            "callback_delay",
            "out_of_order",
            "duplicate_callbacks",
            "clear",
        }
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        with self._lock:
            if spec.get("clear"):
                self._fail_next = None
                self._number_errors.clear()
                self._delivery_failures.clear()
                self._latency = 0.0
                self._hang = None
            if "fail_next" in spec:
                fn = spec["fail_next"] or {"n": 0}
                self.fail_next(
                    int(fn.get("n", 1)),
                    status=int(fn.get("status", 429)),
                    code=fn.get("code"),
                    retry_after=fn.get("retry_after"),
                    scope=fn.get("scope", "create"),
                    message=fn.get("message"),
                )
            for to, rule in (spec.get("number_errors") or {}).items():
                if isinstance(rule, Mapping):
                    self.set_number_error(
                        to, rule.get("code"), rule.get("status"), rule.get("message")
                    )
                else:
                    self.set_number_error(to, rule)
            for to, rule in (spec.get("delivery_failures") or {}).items():
                if isinstance(rule, Mapping):
                    self.set_delivery_failure(
                        to, rule.get("code", 30007), rule.get("status", "undelivered")
                    )
                else:
                    self.set_delivery_failure(to, rule)
            if "latency" in spec:
                self.set_latency(spec["latency"] or 0)
            if "hang" in spec:
                hang = spec["hang"] or {"seconds": 0}
                self.set_hang(
                    float(hang.get("seconds", 0)),
                    hang.get("count"),
                    bool(hang.get("after_processing", False)),
                )
            self.set_callbacks(
                enabled=spec.get("callbacks"),
                delay=spec.get("callback_delay"),
                out_of_order=spec.get("out_of_order"),
                duplicate=spec.get("duplicate_callbacks"),
            )
        return self.faults()

    def reset(self) -> None:
        """Back to the constructed state: messages, counters, faults, logs, opt-outs and
        sub-accounts are dropped (SIDs keep counting so they are never reused)."""
        self._reset_state()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every scheduled status transition/callback has been attempted."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending == 0 or not self.running, timeout):
                raise TimeoutError(f"{self._pending} status callbacks still pending")

    def wait_for_callbacks(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` callback attempts are logged; returns the log."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len(self._callback_log) >= n or not self.running, timeout
            )
            if not ok or len(self._callback_log) < n:
                raise TimeoutError(f"only {len(self._callback_log)} of {n} callbacks arrived")
            return [dict(e) for e in self._callback_log]

    # inbound
    def inbound(
        self,
        from_: str,
        to: str,
        body: str,
        url: str,
        *,
        account_sid: str | None = None,
        messaging_service_sid: str | None = None,
        num_media: int = 0,
        extra: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> int:
        """POST a signed inbound-SMS webhook (like Twilio's) to ``url``; returns HTTP status.

        The message is stored (direction "inbound"), STOP/START words update the opt-out list
        (``honor_stop``), and ``<Message>`` replies in a TwiML response are recorded as
        "outbound-reply" messages. Transport errors raise. See :meth:`inbound_async`."""
        return self._call_in_loop(
            self._ainbound(
                from_, to, body, url, account_sid, messaging_service_sid, num_media, extra
            ),
            timeout,
        )

    async def inbound_async(
        self,
        from_: str,
        to: str,
        body: str,
        url: str,
        *,
        account_sid: str | None = None,
        messaging_service_sid: str | None = None,
        num_media: int = 0,
        extra: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Awaitable :meth:`inbound` for async tests (runs on the fake's own loop, so it is safe
        even when the webhook receiver lives on the caller's loop)."""
        if self._loop is None or not self.running:
            raise RuntimeError("FakeTwilio is not running")
        coro = self._ainbound(
            from_, to, body, url, account_sid, messaging_service_sid, num_media, extra
        )
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    # ---------------------------------------------------------------- helpers (loop thread)
    def _export(self, rec: dict[str, Any]) -> dict[str, Any]:
        out = dict(rec)
        out["subresource_uris"] = dict(rec["subresource_uris"])
        out["status_callback"] = self._callback_urls.get(rec["sid"])
        out["created_ts"] = self._created_ts.get(rec["sid"])
        return out

    def _error(
        self,
        code: int,
        status: int | None = None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        **ctx: Any,
    ) -> web.Response:
        default_status, template = ERRORS.get(code, (400, "Error {code}"))
        body = {
            "code": code,
            "message": message or template.format_map(_Missing(ctx, code=code)),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status or default_status,
        }
        if code == 20003:
            body["detail"] = "Your AccountSid or AuthToken was incorrect."
        hdrs = {"Twilio-Request-Id": f"RQ{next(self._rq_counter):032x}"}
        if status == 401 or default_status == 401:
            hdrs["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        if headers:
            hdrs.update(headers)
        return web.Response(
            body=json.dumps(body).encode(),
            status=body["status"],
            content_type="application/json",
            headers=hdrs,
        )

    def _json(self, payload: Any, status: int = 200) -> web.Response:
        return web.Response(
            body=json.dumps(payload).encode(),
            status=status,
            content_type="application/json",
            headers={"Twilio-Request-Id": f"RQ{next(self._rq_counter):032x}"},
        )

    def _authenticate(self, header: str | None) -> str | web.Response:
        """Resolve an Authorization header to an account sid (cached) or a 401 response."""
        if header:
            sid = self._auth_cache.get(header)
            if sid is not None:
                return sid
            scheme, _, encoded = header.partition(" ")
            if scheme.lower() == "basic":
                try:
                    user, _, password = base64.b64decode(encoded).decode().partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    user = password = ""
                acct = self._accounts.get(user)
                if acct and hmac.compare_digest(acct["auth_token"], password):
                    if acct["status"] != "active":
                        self._counters["auth_failures"] += 1
                        return self._error(20005)
                    self._auth_cache[header] = user
                    return user
        self._counters["auth_failures"] += 1
        return self._error(20003)

    def _can_access(self, auth_sid: str, account_sid: str) -> bool:
        if auth_sid == account_sid:
            return True
        acct = self._accounts.get(account_sid)
        return acct is not None and acct["owner_account_sid"] == auth_sid

    async def _prelude(self, request: web.Request, create: bool) -> str | web.Response:
        """Common work for every API request: counting, latency/hang, auth, injected faults."""
        if request.method == "POST":
            # Read the whole body first (aiohttp caches it): like Twilio, a slow answer comes
            # after the request was received, so a client-side timeout can't "un-send" it.
            await request.post()
        with self._lock:
            self._counters["requests"] += 1
            latency = self._latency
            hang_seconds = 0.0
            hang = self._hang
            if hang is not None and not hang["after_processing"]:
                hang_seconds = hang["seconds"]
                if hang["count"] is not None:
                    hang["count"] -= 1
                    if hang["count"] <= 0:
                        self._hang = None
        if latency:
            await asyncio.sleep(latency)
        if hang_seconds:
            await asyncio.sleep(hang_seconds)
        with self._lock:
            auth = self._authenticate(request.headers.get("Authorization"))
            if isinstance(auth, web.Response):
                return auth
            fail = self._fail_next
            if fail is not None and (create or fail["scope"] == "all"):
                fail["n"] -= 1
                if fail["n"] <= 0:
                    self._fail_next = None
                self._counters["faults_injected"] += 1
                if create:
                    self._counters["rejected"] += 1
                    self._rejected_by_code[fail["code"]] += 1
                headers = {}
                if fail["retry_after"] is not None:
                    headers["Retry-After"] = str(fail["retry_after"])
                return self._error(
                    fail["code"], fail["status"], fail["message"], headers, path=request.path
                )
            return auth

    async def _after_processing_hang(self) -> None:
        with self._lock:
            hang = self._hang
            if hang is None or not hang["after_processing"]:
                return
            seconds = hang["seconds"]
            if hang["count"] is not None:
                hang["count"] -= 1
                if hang["count"] <= 0:
                    self._hang = None
        await asyncio.sleep(seconds)

    def _not_found(self, request: web.Request) -> web.Response:
        return self._error(20404, path=request.path)

    # ---------------------------------------------------------------- routes
    def _add_routes(self, router: web.UrlDispatcher) -> None:
        v = f"/{API_VERSION}"
        router.add_post(f"{v}/Accounts/{{account_sid}}/Messages.json", self._h_create_message)
        router.add_get(f"{v}/Accounts/{{account_sid}}/Messages.json", self._h_list_messages)
        router.add_get(f"{v}/Accounts/{{account_sid}}/Messages/{{sid}}.json", self._h_fetch_msg)
        router.add_post(f"{v}/Accounts/{{account_sid}}/Messages/{{sid}}.json", self._h_update_msg)
        router.add_delete(f"{v}/Accounts/{{account_sid}}/Messages/{{sid}}.json", self._h_delete_msg)
        router.add_post(f"{v}/Accounts.json", self._h_create_account)
        router.add_get(f"{v}/Accounts.json", self._h_list_accounts)
        router.add_get(f"{v}/Accounts/{{account_sid}}.json", self._h_fetch_account)
        router.add_post(f"{v}/Accounts/{{account_sid}}.json", self._h_update_account)
        # control API
        router.add_get("/_fake/messages", self._c_messages)
        router.add_get("/_fake/stats", self._c_stats)
        router.add_get("/_fake/counters", self._c_counters)
        router.add_get("/_fake/faults", self._c_get_faults)
        router.add_post("/_fake/faults", self._c_set_faults)
        router.add_post("/_fake/reset", self._c_reset)
        router.add_get("/_fake/accounts", self._c_get_accounts)
        router.add_post("/_fake/accounts", self._c_add_account)
        router.add_get("/_fake/callbacks", self._c_callbacks)
        router.add_post("/_fake/inbound", self._c_inbound)
        router.add_get("/_fake/health", self._c_health)
        router.add_route("*", "/{tail:.*}", self._h_catch_all)

    async def _h_catch_all(self, request: web.Request) -> web.Response:
        if request.path.startswith("/_fake/"):
            return web.json_response({"error": "unknown control endpoint"}, status=404)
        auth = await self._prelude(request, create=False)
        if isinstance(auth, web.Response):
            return auth
        return self._not_found(request)

    # ---- messages
    def _validate_create(
        self, form: Mapping[str, str], media: list[str]
    ) -> tuple[int, dict[str, Any]] | None:
        to = form.get("To", "")
        from_ = form.get("From", "")
        mss = form.get("MessagingServiceSid", "")
        body = form.get("Body", "")
        ctx = {"to": to, "from_": from_, "mss": mss}
        if not to:
            return 21604, ctx
        if not _E164.match(to):
            return 21211, ctx
        if not from_ and not mss:
            return 21603, ctx
        if from_ and not (
            _E164.match(from_) or _SHORT_CODE.match(from_) or _ALPHA_SENDER.match(from_)
        ):
            return 21212, ctx
        if mss and not _MG_SID.match(mss):
            return 21701, ctx
        if not body and not media and not form.get("ContentSid"):
            return self.MISSING_BODY_CODE, ctx
        if len(body) > 1600:
            return 21617, ctx
        if self.magic_numbers:
            if from_ in MAGIC_FROM:
                return MAGIC_FROM[from_], ctx
            if to in MAGIC_TO:
                return MAGIC_TO[to], ctx
        return None

    async def _h_create_message(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["account_sid"]
        auth = await self._prelude(request, create=True)
        if isinstance(auth, web.Response):
            return auth
        form = await request.post()
        media = form.getall("MediaUrl", [])
        with self._lock:
            if not self._can_access(auth, account_sid):
                self._counters["auth_failures"] += 1
                return self._error(20003)
            invalid = self._validate_create(form, media)
            to = form.get("To", "")
            rule = self._number_errors.get(to) if invalid is None else None
            if invalid is not None or rule is not None:
                if invalid is not None:
                    code, ctx = invalid
                    response = self._error(code, **ctx)
                else:
                    code = rule["code"]
                    response = self._error(
                        code, rule["status"], rule["message"], to=to, from_=form.get("From", "")
                    )
                self._counters["rejected"] += 1
                self._rejected_by_code[code] += 1
                return response
            from_ = form.get("From") or None
            mss = form.get("MessagingServiceSid") or None
            blocked = (to, mss or from_) in self._opt_outs
            if blocked and not mss:
                self._counters["rejected"] += 1
                self._rejected_by_code[21610] += 1
                return self._error(21610)
            now = self._clock()
            d = self._now_str(now)
            sid = self._new_sid("SM")
            body = form.get("Body", "")
            uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
            rec = {
                "account_sid": account_sid,
                "api_version": API_VERSION,
                "body": body,
                "date_created": d,
                "date_sent": None,
                "date_updated": d,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": from_,
                "messaging_service_sid": mss,
                "num_media": str(len(media)),
                "num_segments": "0" if mss else str(count_segments(body)),
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "accepted" if mss else "queued",
                "subresource_uris": {
                    "media": f"{uri}/Media.json",
                    "feedback": f"{uri}/Feedback.json",
                },
                "to": to,
                "uri": f"{uri}.json",
            }
            self._msgs.append(rec)
            self._by_sid[sid] = rec
            self._created_ts[sid] = now
            self._counters["accepted"] += 1
            self._by_to[to] += 1
            payload = json.dumps(rec).encode()
            callback_url = form.get("StatusCallback") or None
            if callback_url:
                self._callback_urls[sid] = callback_url
            if blocked:
                outcome = {"status": "failed", "code": 21610}
            else:
                outcome = self._delivery_failures.get(to) or {"status": "delivered", "code": None}
            self._schedule_lifecycle(sid, callback_url, outcome)
        await self._after_processing_hang()
        return web.Response(
            body=payload,
            status=201,
            content_type="application/json",
            headers={"Twilio-Request-Id": f"RQ{next(self._rq_counter):032x}"},
        )

    async def _h_list_messages(self, request: web.Request) -> web.Response:
        account_sid = request.match_info["account_sid"]
        auth = await self._prelude(request, create=False)
        if isinstance(auth, web.Response):
            return auth
        q = request.query
        filters: list[tuple[str, float, bool]] = []
        for key in ("DateSent", "DateSent<", "DateSent>"):
            if q.get(key):
                parsed = _parse_filter_time(q[key])
                if parsed is None:
                    return self._error(20001, param=key)
                filters.append((key, *parsed))
        try:
            page_size = min(1000, max(1, int(q.get("PageSize", 50))))
            page = max(0, int(q.get("Page", 0)))
        except ValueError:
            return self._error(20001, param="PageSize/Page")
        to = q.get("To")
        from_ = q.get("From")
        with self._lock:
            if not self._can_access(auth, account_sid):
                self._counters["auth_failures"] += 1
                return self._error(20003)
            items = []
            for rec in reversed(self._msgs):  # newest first, like Twilio
                if rec["account_sid"] != account_sid:
                    continue
                if to and rec["to"] != to:
                    continue
                if from_ and rec["from"] != from_:
                    continue
                if filters and not self._date_sent_matches(rec["sid"], filters):
                    continue
                items.append(rec)
            start = page * page_size
            token = q.get("PageToken")
            if token and token.startswith("PA"):
                for i, rec in enumerate(items):
                    if rec["sid"] == token[2:]:
                        start = i + 1
                        break
            chunk = items[start : start + page_size]
            base_params = [
                (k, q[k]) for k in ("To", "From", "DateSent", "DateSent<", "DateSent>") if q.get(k)
            ]
            path = request.path

            def page_uri(n: int, page_token: str | None = None) -> str:
                params = [*base_params, ("PageSize", str(page_size)), ("Page", str(n))]
                if page_token:
                    params.append(("PageToken", page_token))
                return f"{path}?{urllib.parse.urlencode(params)}"

            has_next = start + page_size < len(items)
            payload = {
                "end": start + len(chunk) - 1 if chunk else start,
                "first_page_uri": page_uri(0),
                "messages": chunk,
                "next_page_uri": page_uri(page + 1, "PA" + chunk[-1]["sid"])
                if has_next and chunk
                else None,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": page_uri(page - 1) if page > 0 else None,
                "start": start,
                "uri": page_uri(page, token),
            }
            body = json.dumps(payload).encode()
        await self._after_processing_hang()
        return web.Response(body=body, content_type="application/json")

    def _date_sent_matches(self, sid: str, filters: list[tuple[str, float, bool]]) -> bool:
        ts = self._sent_ts.get(sid)
        if ts is None:
            return False
        for key, value, date_only in filters:
            if key == "DateSent":
                day = value if date_only else _day_start(value)
                if not day <= ts < day + 86400:
                    return False
            elif key == "DateSent<":
                limit = value + 86400 if date_only else value
                if (ts >= limit) if date_only else (ts > limit):
                    return False
            elif ts < value:  # DateSent>
                return False
        return True

    async def _message_for(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        account_sid = request.match_info["account_sid"]
        auth = await self._prelude(request, create=False)
        if isinstance(auth, web.Response):
            return auth
        with self._lock:
            if not self._can_access(auth, account_sid):
                self._counters["auth_failures"] += 1
                return self._error(20003)
            rec = self._by_sid.get(request.match_info["sid"])
            if rec is None or rec["account_sid"] != account_sid:
                return self._not_found(request)
            return auth, rec

    async def _h_fetch_msg(self, request: web.Request) -> web.Response:
        found = await self._message_for(request)
        if isinstance(found, web.Response):
            return found
        with self._lock:
            body = json.dumps(found[1]).encode()
        await self._after_processing_hang()
        return web.Response(body=body, content_type="application/json")

    async def _h_update_msg(self, request: web.Request) -> web.Response:
        found = await self._message_for(request)
        if isinstance(found, web.Response):
            return found
        form = await request.post()
        with self._lock:
            rec = found[1]
            if "Body" in form:
                if form["Body"]:
                    return self._error(20001, param="Body (only redaction to '' is allowed)")
                rec["body"] = ""
            if form.get("Status") == "canceled":
                if rec["status"] not in ("scheduled", "queued", "accepted"):
                    return self._error(20001, message="Message cannot be canceled")
                rec["status"] = "canceled"
            rec["date_updated"] = self._now_str(self._clock())
            return self._json(rec)

    async def _h_delete_msg(self, request: web.Request) -> web.Response:
        found = await self._message_for(request)
        if isinstance(found, web.Response):
            return found
        with self._lock:
            rec = found[1]
            self._by_sid.pop(rec["sid"], None)
            with contextlib.suppress(ValueError):
                self._msgs.remove(rec)
        return web.Response(status=204)

    # ---- accounts
    async def _h_create_account(self, request: web.Request) -> web.Response:
        auth = await self._prelude(request, create=False)
        if isinstance(auth, web.Response):
            return auth
        form = await request.post()
        with self._lock:
            sid, token = self.add_account(
                friendly_name=form.get("FriendlyName", ""), owner_account_sid=auth
            )
            return self._json(self._accounts[sid], status=201)

    async def _h_list_accounts(self, request: web.Request) -> web.Response:
        auth = await self._prelude(request, create=False)
        if isinstance(auth, web.Response):
            return auth
        q = request.query
        with self._lock:
            items = [
                a
                for a in self._accounts.values()
                if self._can_access(auth, a["sid"])
                and (not q.get("FriendlyName") or a["friendly_name"] == q["FriendlyName"])
                and (not q.get("Status") or a["status"] == q["Status"])
            ]
            size = min(1000, max(1, int(q.get("PageSize", 50) or 50)))
            uri = f"{request.path}?PageSize={size}&Page=0"
            return self._json(
                {
                    "accounts": items[:size],
                    "end": max(0, min(size, len(items)) - 1),
                    "first_page_uri": uri,
                    "next_page_uri": None,
                    "page": 0,
                    "page_size": size,
                    "previous_page_uri": None,
                    "start": 0,
                    "uri": uri,
                }
            )

    async def _account_for(self, request: web.Request) -> dict[str, Any] | web.Response:
        auth = await self._prelude(request, create=False)
        if isinstance(auth, web.Response):
            return auth
        sid = request.match_info["account_sid"]
        with self._lock:
            if not self._can_access(auth, sid) or sid not in self._accounts:
                return self._not_found(request)
            return self._accounts[sid]

    async def _h_fetch_account(self, request: web.Request) -> web.Response:
        acct = await self._account_for(request)
        if isinstance(acct, web.Response):
            return acct
        with self._lock:
            return self._json(acct)

    async def _h_update_account(self, request: web.Request) -> web.Response:
        acct = await self._account_for(request)
        if isinstance(acct, web.Response):
            return acct
        form = await request.post()
        with self._lock:
            if form.get("FriendlyName"):
                acct["friendly_name"] = form["FriendlyName"]
            if form.get("Status"):
                if form["Status"] not in ("active", "suspended", "closed"):
                    return self._error(20001, param="Status")
                acct["status"] = form["Status"]
                self._auth_cache.clear()
            acct["date_updated"] = rfc2822(self._clock())
            return self._json(acct)

    # ---------------------------------------------------------------- status lifecycle
    def _schedule_lifecycle(
        self, sid: str, callback_url: str | None, outcome: dict[str, Any]
    ) -> None:
        """Called with the lock held, on the loop thread."""
        send = bool(callback_url) and self._callbacks_enabled
        delay = self._callback_delay
        if not send and delay <= 0:
            for step in self._steps(sid, outcome):
                self._transition(sid, step, outcome)
            return
        self._pending += 1
        job = (self._generation, sid, callback_url if send else None, outcome)
        assert self._cb_queue is not None and self._loop is not None
        if delay > 0:
            self._loop.call_later(delay, self._cb_queue.put_nowait, job)
        else:
            self._cb_queue.put_nowait(job)

    def _steps(self, sid: str, outcome: dict[str, Any]) -> list[str]:
        rec = self._by_sid.get(sid)
        steps = ["queued"] if rec is not None and rec["messaging_service_sid"] else []
        if outcome["status"] == "failed":
            return [*steps, "failed"]
        return [*steps, "sent", outcome["status"]]

    def _transition(self, sid: str, status: str, outcome: dict[str, Any]) -> dict[str, str] | None:
        """Apply one status step (lock held); return the callback params, None if gone."""
        rec = self._by_sid.get(sid)
        if rec is None or rec["status"] == "canceled":
            return None
        now = self._clock()
        d = self._now_str(now)
        rec["status"] = status
        rec["date_updated"] = d
        if rec["messaging_service_sid"] and not rec["from"]:
            rec["from"] = DEFAULT_FROM
            rec["num_segments"] = str(count_segments(rec["body"]))
        if status == "sent":
            rec["date_sent"] = d
            self._sent_ts[sid] = now
        if status in ("undelivered", "failed"):
            rec["error_code"] = outcome["code"]
            rec["error_message"] = ERRORS.get(outcome["code"], (0, "Unknown error"))[1].format_map(
                _Missing(to=rec["to"], from_=rec["from"] or "")
            )
        if status in ("delivered", "undelivered"):
            rec["price"] = f"{-0.0079 * int(rec['num_segments'] or 1):.5f}"
        params = {
            "SmsSid": sid,
            "SmsStatus": status,
            "MessageStatus": status,
            "To": rec["to"],
            "MessageSid": sid,
            "AccountSid": rec["account_sid"],
            "From": rec["from"] or "",
            "ApiVersion": API_VERSION,
        }
        if rec["messaging_service_sid"]:
            params["MessagingServiceSid"] = rec["messaging_service_sid"]
        if status in ("undelivered", "failed") and outcome["code"] is not None:
            params["ErrorCode"] = str(outcome["code"])
        return params

    async def _callback_worker(self) -> None:
        assert self._cb_queue is not None
        while True:
            generation, sid, url, outcome = await self._cb_queue.get()
            try:
                with self._lock:
                    if generation != self._generation:
                        continue  # reset() happened; drop
                    steps = self._steps(sid, outcome)
                    out_of_order = self._out_of_order
                    copies = 2 if self._duplicate_callbacks else 1
                    account_sid = (self._by_sid.get(sid) or {}).get("account_sid", "")
                    token = self._accounts.get(account_sid, {}).get("auth_token", self.auth_token)
                if out_of_order:
                    with self._lock:
                        all_params = [self._transition(sid, s, outcome) for s in steps]
                    for params in reversed(all_params):
                        if url and params:
                            for _ in range(copies):
                                await self._post_callback(url, params, token, generation)
                else:
                    for step in steps:
                        with self._lock:
                            if generation != self._generation:
                                break
                            params = self._transition(sid, step, outcome)
                        if url and params:
                            for _ in range(copies):
                                await self._post_callback(url, params, token, generation)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded, never raised
                with self._lock:
                    self._callback_log.append(
                        {
                            "kind": "status",
                            "url": url,
                            "message_sid": sid,
                            "ok": False,
                            "error": f"internal: {exc!r}",
                            "params": {},
                            "http_status": None,
                        }
                    )
            finally:
                with self._cond:
                    if generation == self._generation:
                        self._pending -= 1
                    self._cond.notify_all()

    async def _post_signed(
        self, url: str, params: dict[str, str], token: str
    ) -> tuple[dict[str, Any], str]:
        signature = twilio_signature(token, url, params)
        entry: dict[str, Any] = {
            "url": url,
            "params": params,
            "signature": signature,
            "http_status": None,
            "error": None,
            "ok": False,
            "at": self._clock(),
        }
        text = ""
        if not (self.allow_external_callbacks or _host_is_loopback(url)):
            entry["error"] = "refused: callback host is not loopback (allow_external_callbacks)"
            return entry, text
        assert self._session is not None
        idem_key = (
            f"{params.get('MessageSid')}:{params.get('MessageStatus')}:{next(self._rq_counter)}"
        )
        idem = hashlib.sha256(idem_key.encode()).hexdigest()[:32]
        headers = {
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
            "I-Twilio-Idempotency-Token": idem,
        }
        try:
            async with self._session.post(
                url,
                data=urllib.parse.urlencode(params).encode(),
                headers=headers,
                allow_redirects=False,
            ) as resp:
                entry["http_status"] = resp.status
                text = await resp.text(errors="replace")
                entry["ok"] = 200 <= resp.status < 300
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, never raised
            entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry, text

    async def _post_callback(
        self, url: str, params: dict[str, str], token: str, generation: int
    ) -> None:
        entry, _ = await self._post_signed(url, params, token)
        entry.update(
            kind="status",
            message_sid=params["MessageSid"],
            message_status=params["MessageStatus"],
        )
        with self._cond:
            if generation != self._generation:
                return
            self._callback_log.append(entry)
            self._counters["callbacks_sent" if entry["ok"] else "callbacks_failed"] += 1
            self._cond.notify_all()

    async def _ainbound(
        self,
        from_: str,
        to: str,
        body: str,
        url: str,
        account_sid: str | None,
        messaging_service_sid: str | None,
        num_media: int,
        extra: Mapping[str, str] | None,
    ) -> int:
        with self._lock:
            account_sid = account_sid or self.account_sid
            if account_sid not in self._accounts:
                raise ValueError(f"unknown account {account_sid}")
            token = self._accounts[account_sid]["auth_token"]
            now = self._clock()
            d = self._now_str(now)
            sid = self._new_sid("SM")
            segments = count_segments(body)
            params = {
                "ToCountry": _country_of(to),
                "ToState": "",
                "SmsMessageSid": sid,
                "NumMedia": str(num_media),
                "ToCity": "",
                "FromZip": "",
                "SmsSid": sid,
                "FromState": "",
                "SmsStatus": "received",
                "FromCity": "",
                "Body": body,
                "FromCountry": _country_of(from_),
                "To": to,
                "ToZip": "",
                "NumSegments": str(segments),
                "MessageSid": sid,
                "AccountSid": account_sid,
                "From": from_,
                "ApiVersion": API_VERSION,
            }
            keyword = body.strip().upper()
            if messaging_service_sid:
                params["MessagingServiceSid"] = messaging_service_sid
                if keyword in STOP_WORDS:
                    params["OptOutType"] = "STOP"
                elif keyword in START_WORDS:
                    params["OptOutType"] = "START"
                elif keyword in HELP_WORDS:
                    params["OptOutType"] = "HELP"
            params.update(extra or {})
            uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
            rec = {
                "account_sid": account_sid,
                "api_version": API_VERSION,
                "body": body,
                "date_created": d,
                "date_sent": d,
                "date_updated": d,
                "direction": "inbound",
                "error_code": None,
                "error_message": None,
                "from": from_,
                "messaging_service_sid": messaging_service_sid,
                "num_media": str(num_media),
                "num_segments": str(segments),
                "price": "-0.00790",
                "price_unit": "USD",
                "sid": sid,
                "status": "received",
                "subresource_uris": {"media": f"{uri}/Media.json"},
                "to": to,
                "uri": f"{uri}.json",
            }
            self._msgs.append(rec)
            self._by_sid[sid] = rec
            self._sent_ts[sid] = now
            self._counters["inbound"] += 1
            if self.honor_stop:
                senders = [to] + ([messaging_service_sid] if messaging_service_sid else [])
                if keyword in STOP_WORDS:
                    self._opt_outs.update((from_, s) for s in senders)
                elif keyword in START_WORDS:
                    self._opt_outs.difference_update((from_, s) for s in senders)
        entry, text = await self._post_signed(url, params, token)
        entry.update(kind="inbound", message_sid=sid, response_body=text)
        with self._lock:
            self._inbound_log.append(entry)
            if entry["ok"]:
                self._record_twiml_replies(text, rec)
        if entry["http_status"] is None:
            raise ConnectionError(f"inbound webhook to {url} failed: {entry['error']}")
        return entry["http_status"]

    def _record_twiml_replies(self, text: str, inbound: dict[str, Any]) -> None:
        if "<Message" not in text:
            return
        try:
            root = ET.fromstring(text)  # noqa: S314 - our own test server's response
        except ET.ParseError:
            return
        for el in root.iter("Message"):
            body_el = el.find("Body")
            reply = (body_el.text if body_el is not None else el.text) or ""
            now = self._clock()
            d = self._now_str(now)
            sid = self._new_sid("SM")
            account_sid = inbound["account_sid"]
            uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
            to = el.get("to") or inbound["from"]
            rec = {
                **inbound,
                "body": reply.strip(),
                "date_created": d,
                "date_sent": d,
                "date_updated": d,
                "direction": "outbound-reply",
                "from": el.get("from") or inbound["to"],
                "num_media": "0",
                "num_segments": str(count_segments(reply.strip())),
                "sid": sid,
                "status": "delivered",
                "subresource_uris": {"media": f"{uri}/Media.json"},
                "to": to,
                "uri": f"{uri}.json",
            }
            self._msgs.append(rec)
            self._by_sid[sid] = rec
            self._sent_ts[sid] = now

    # ---------------------------------------------------------------- control API handlers
    def _control(self) -> None:
        with self._lock:
            self._counters["control_requests"] += 1

    async def _c_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "base_url": self.base_url})

    async def _c_messages(self, request: web.Request) -> web.Response:
        self._control()
        inbound = request.query.get("direction") == "inbound"
        wanted = {
            field: request.query[field]
            for field in ("to", "from", "account_sid", "status")
            if request.query.get(field)
        }
        with self._lock:  # filtered before they are copied: a benchmark asks among 100,000s
            msgs = [
                self._export(rec)
                for rec in self._msgs
                if (rec["direction"] == "inbound") == inbound
                and (inbound or rec["direction"].startswith("outbound"))
                and all(rec[field] == value for field, value in wanted.items())
            ]
        return web.json_response({"messages": msgs, "count": len(msgs)})

    async def _c_stats(self, request: web.Request) -> web.Response:
        self._control()
        return web.json_response(self.stats())

    async def _c_counters(self, request: web.Request) -> web.Response:
        self._control()
        return web.json_response(self.counters())

    async def _c_get_faults(self, request: web.Request) -> web.Response:
        self._control()
        return web.json_response(self.faults())

    async def _c_set_faults(self, request: web.Request) -> web.Response:
        self._control()
        try:
            spec = await request.json()
            return web.json_response(self.configure(spec or {}))
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def _c_reset(self, request: web.Request) -> web.Response:
        self.reset()
        self._control()
        return web.json_response({"ok": True})

    async def _c_get_accounts(self, request: web.Request) -> web.Response:
        self._control()
        return web.json_response(
            {
                "default": {"account_sid": self.account_sid, "auth_token": self.auth_token},
                "accounts": self.accounts,
            }
        )

    async def _c_add_account(self, request: web.Request) -> web.Response:
        self._control()
        try:
            spec = await request.json() if request.can_read_body else {}
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sid, token = self.add_account(
            spec.get("account_sid"),
            spec.get("auth_token"),
            spec.get("friendly_name", ""),
            spec.get("owner_account_sid"),
        )
        return web.json_response({"account_sid": sid, "auth_token": token}, status=201)

    async def _c_callbacks(self, request: web.Request) -> web.Response:
        self._control()
        return web.json_response({"callbacks": self.callbacks, "inbound": self.inbound_log})

    async def _c_inbound(self, request: web.Request) -> web.Response:
        self._control()
        try:
            spec = await request.json()
            status = await self._ainbound(
                spec["from"],
                spec["to"],
                spec.get("body", ""),
                spec["url"],
                spec.get("account_sid"),
                spec.get("messaging_service_sid"),
                int(spec.get("num_media", 0)),
                spec.get("extra"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc!r}"}, status=400)
        except ConnectionError as exc:
            return web.json_response({"error": str(exc), "status": None}, status=502)
        return web.json_response({"status": status})


# --------------------------------------------------------------------------------------------
# Remote control (another process)
# --------------------------------------------------------------------------------------------
class RemoteFakeTwilio:
    """Drive a FakeTwilio running in another process (``python tests/fake_twilio.py``) through
    its ``/_fake/`` control API. Mirrors the Python API of :class:`FakeTwilio`."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.process: subprocess.Popen | None = None
        default = self._call("GET", "/_fake/accounts")["default"]
        self.account_sid: str = default["account_sid"]
        self.auth_token: str = default["auth_token"]

    @classmethod
    def spawn(
        cls, *cli_args: str, python: str = sys.executable, startup_timeout: float = 30.0
    ) -> RemoteFakeTwilio:
        """Run ``python tests/fake_twilio.py --port 0 *cli_args`` as a child process (its own
        GIL: use this for throughput benchmarks) and return a remote control for it. End it
        with :meth:`stop` or use it as a context manager."""
        proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--port", "0", *cli_args],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            info = json.loads(lines.get(timeout=startup_timeout))
            remote = cls(info["base_url"])
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        remote.process = proc
        return remote

    def stop(self) -> None:
        """Terminate a :meth:`spawn`-ed server (no-op otherwise)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> RemoteFakeTwilio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(  # noqa: S310 - loopback control API
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise RuntimeError(f"{method} {path} -> {exc.code}: {detail}") from exc

    def wait_until_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "/_fake/health")
                return
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def accounts(self) -> dict[str, str]:
        return self._call("GET", "/_fake/accounts")["accounts"]

    def token_for(self, account_sid: str) -> str:
        return self.accounts[account_sid]

    def add_account(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        friendly_name: str = "",
        owner_account_sid: str | None = None,
    ) -> tuple[str, str]:
        out = self._call(
            "POST",
            "/_fake/accounts",
            {
                "account_sid": account_sid,
                "auth_token": auth_token,
                "friendly_name": friendly_name,
                "owner_account_sid": owner_account_sid,
            },
        )
        return out["account_sid"], out["auth_token"]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/messages")["messages"]

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"to": number})
        return self._call("GET", f"/_fake/messages?{query}")["messages"]

    def messages_where(self, **filters: str) -> list[dict[str, Any]]:
        """Accepted messages matching ``to``, ``from_``, ``account_sid`` or ``status``."""
        query = urllib.parse.urlencode({key.rstrip("_"): value for key, value in filters.items()})
        return self._call("GET", f"/_fake/messages?{query}")["messages"]

    def sent_to(self, number: str) -> int:
        return self.stats()["by_to"].get(number, 0)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/stats")

    def counters(self) -> dict[str, int]:
        return self._call("GET", "/_fake/counters")

    def faults(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/faults")

    def configure(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/_fake/faults", dict(spec))

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        code: int | None = None,
        retry_after: float | None = None,
        scope: str = "create",
        message: str | None = None,
    ) -> None:
        self.configure(
            {
                "fail_next": {
                    "n": n,
                    "status": status,
                    "code": code,
                    "retry_after": retry_after,
                    "scope": scope,
                    "message": message,
                }
            }
        )

    def set_number_error(
        self, to: str, code: int | None, status: int | None = None, message: str | None = None
    ) -> None:
        rule = None if code is None else {"code": code, "status": status, "message": message}
        self.configure({"number_errors": {to: rule}})

    def clear_number_error(self, to: str) -> None:
        self.set_number_error(to, None)

    def set_delivery_failure(
        self, to: str, code: int | None = 30007, status: str = "undelivered"
    ) -> None:
        rule = None if code is None else {"code": code, "status": status}
        self.configure({"delivery_failures": {to: rule}})

    def set_latency(self, seconds: float) -> None:
        self.configure({"latency": seconds})

    def set_hang(
        self, seconds: float, count: int | None = None, after_processing: bool = False
    ) -> None:
        self.configure(
            {"hang": {"seconds": seconds, "count": count, "after_processing": after_processing}}
        )

    def set_callbacks(
        self,
        enabled: bool | None = None,
        delay: float | None = None,
        out_of_order: bool | None = None,
        duplicate: bool | None = None,
    ) -> None:
        spec = {
            "callbacks": enabled,
            "callback_delay": delay,
            "out_of_order": out_of_order,
            "duplicate_callbacks": duplicate,
        }
        self.configure({k: v for k, v in spec.items() if v is not None})

    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/callbacks")["callbacks"]

    @property
    def inbound_log(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_fake/callbacks")["inbound"]

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.stats()["callbacks_pending"]:
            if time.monotonic() > deadline:
                raise TimeoutError("status callbacks still pending")
            time.sleep(0.02)

    def wait_for_callbacks(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            log = self.callbacks
            if len(log) >= n:
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(log)} of {n} callbacks arrived")
            time.sleep(0.02)

    def inbound(
        self,
        from_: str,
        to: str,
        body: str,
        url: str,
        *,
        account_sid: str | None = None,
        messaging_service_sid: str | None = None,
        num_media: int = 0,
        extra: Mapping[str, str] | None = None,
    ) -> int:
        out = self._call(
            "POST",
            "/_fake/inbound",
            {
                "from": from_,
                "to": to,
                "body": body,
                "url": url,
                "account_sid": account_sid,
                "messaging_service_sid": messaging_service_sid,
                "num_media": num_media,
                "extra": dict(extra or {}),
            },
        )
        return out["status"]


# --------------------------------------------------------------------------------------------
# Pointing the official SDK at a base URL
# --------------------------------------------------------------------------------------------
def point_client_at(client: Any, base_url: str) -> Any:
    """Make a ``twilio.rest.Client`` send its API (api.twilio.com) requests to ``base_url``.

    ``client.api`` is the ``api.twilio.com`` Domain; every v2010 resource (Messages, Accounts,
    paging via ``next_page_uri``) builds its URL from ``client.api.base_url``. Edge/region are
    cleared because the SDK would otherwise rewrite the host (``TWILIO_EDGE``/``TWILIO_REGION``
    from the environment included)."""
    base_url = base_url.rstrip("/")
    if base_url != TWILIO_API_BASE_URL:
        client.api.base_url = base_url
        client.edge = None
        client.region = None
    return client


_ASYNC_HTTP_CLIENT_CLS: type | None = None


def timeout_async_http_client_class() -> type:
    """``AsyncTwilioHttpClient`` that honours its constructor ``timeout``.

    twilio 9.x's ``AsyncTwilioHttpClient.request`` ignores ``self.timeout`` and passes
    ``timeout=None`` to aiohttp, which means *no timeout at all*."""
    global _ASYNC_HTTP_CLIENT_CLS
    if _ASYNC_HTTP_CLIENT_CLS is None:
        from twilio.http.async_http_client import AsyncTwilioHttpClient

        class TimeoutAsyncTwilioHttpClient(AsyncTwilioHttpClient):
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
                if timeout is None:
                    timeout = self.timeout
                return await super().request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=headers,
                    auth=auth,
                    timeout=timeout,
                    allow_redirects=allow_redirects,
                )

        _ASYNC_HTTP_CLIENT_CLS = TimeoutAsyncTwilioHttpClient
    return _ASYNC_HTTP_CLIENT_CLS


def twilio_client_for(
    fake: FakeTwilio | RemoteFakeTwilio,
    account_sid: str | None = None,
    auth_token: str | None = None,
    async_: bool = False,
    *,
    timeout: float | None = None,
    subaccount_sid: str | None = None,
) -> Any:
    """A real ``twilio.rest.Client`` whose API requests go to ``fake``.

    ``account_sid``/``auth_token`` default to the fake's default account (a known sid's token
    is looked up). ``subaccount_sid`` acts on a sub-account with the parent's credentials.
    ``async_=True`` uses an aiohttp-based ``AsyncTwilioHttpClient`` (with ``timeout`` actually
    applied); it must be called inside a running event loop and closed with
    ``await client.http_client.close()``. Sync uses the SDK's pooled ``TwilioHttpClient``.
    """
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    sid = account_sid or fake.account_sid
    token = auth_token if auth_token is not None else fake.token_for(sid)
    if async_:
        http_client = timeout_async_http_client_class()(timeout=timeout)
    else:
        http_client = TwilioHttpClient(timeout=timeout)
    client = Client(sid, token, account_sid=subaccount_sid, http_client=http_client)
    return point_client_at(client, fake.base_url)


# --------------------------------------------------------------------------------------------
# CLI: python tests/fake_twilio.py --port 8099
# --------------------------------------------------------------------------------------------
def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Twilio-compatible fake API server (loopback only)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port (printed)")
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="SID:TOKEN",
        help="account credentials (repeatable; first is the default)",
    )
    p.add_argument("--no-callbacks", action="store_true", help="do not send status callbacks")
    p.add_argument("--callback-delay", type=float, default=0.0)
    p.add_argument("--callback-concurrency", type=int, default=16)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--magic-numbers", action="store_true")
    p.add_argument("--seed", default=None, help="SID seed (default: time-based)")
    return p.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse_args(argv)
    accounts = {}
    for item in args.account:
        sid, sep, token = item.partition(":")
        if not sep:
            raise SystemExit(f"--account must be SID:TOKEN, got {item!r}")
        accounts[sid] = token
    fake = FakeTwilio(
        accounts or None,
        host=args.host,
        port=args.port,
        callbacks=not args.no_callbacks,
        callback_delay=args.callback_delay,
        callback_concurrency=args.callback_concurrency,
        magic_numbers=args.magic_numbers,
        seed=args.seed if args.seed is not None else time.time_ns(),
    )
    fake.set_latency(args.latency)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with fake:
        print(
            json.dumps(
                {
                    "base_url": fake.base_url,
                    "account_sid": fake.account_sid,
                    "auth_token": fake.auth_token,
                }
            ),
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
