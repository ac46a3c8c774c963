"""The HTTP side of a delivery: one POST with a timeout, through connections that refuse to
reach addresses ``security`` forbids (checked on the socket's peer, after DNS resolution).

One pool manager per worker process (connections to an endpoint are reused); no automatic
retries or redirects here: the delivery's own state machine retries, and a redirect could
lead anywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from webhooks.security import UnsafeURL, peer_check, url_check

EXCERPT_BYTES = 500
USER_AGENT = "Relay-Webhooks/1"


class _PeerChecked:
    def _new_conn(self):
        sock = super()._new_conn()
        try:
            peer_check(self.host, sock.getpeername()[0])
        except UnsafeURL:
            sock.close()
            raise
        return sock


class _HTTPConnection(_PeerChecked, HTTPConnection):
    pass


class _HTTPSConnection(_PeerChecked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_manager: urllib3.PoolManager | None = None


def pool_manager() -> urllib3.PoolManager:
    global _manager
    if _manager is None:
        manager = urllib3.PoolManager(num_pools=50, maxsize=4, retries=False)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        _manager = manager
    return _manager


@dataclass
class PostResult:
    status_code: int | None
    latency_ms: int
    excerpt: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def timeout_seconds() -> float:
    return float(settings.RELAY_WEBHOOKS_TIMEOUT)


def post(url: str, body: bytes, headers: dict[str, str], *, check: bool = True) -> PostResult:
    """POST ``body``; never raises for network trouble: the result says what happened.

    ``check=False`` skips the URL check with its DNS lookup (the caller checked this URL a
    moment ago); the connected address is checked in any case."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        if check:
            url_check(url)
    except UnsafeURL as exc:
        return PostResult(None, elapsed(), error=str(exc)[:300])
    seconds = timeout_seconds()
    timeout = urllib3.Timeout(connect=min(seconds, 3.0), read=seconds)
    try:
        response = pool_manager().request(
            "POST",
            url,
            body=body,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=timeout,
            redirect=False,
            preload_content=False,
        )
    except UnsafeURL as exc:
        return PostResult(None, elapsed(), error=str(exc)[:300])
    except urllib3.exceptions.TimeoutError:
        return PostResult(None, elapsed(), error=f"Timed out after {seconds:g} s")
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        host = urlsplit(url).hostname
        return PostResult(None, elapsed(), error=f"Could not reach {host}: {reason}"[:300])
    try:
        data = response.read(EXCERPT_BYTES + 1)
    except urllib3.exceptions.HTTPError as exc:
        data = b""
        error = f"Answer cut short: {exc}"[:300]
    else:
        error = ""
    latency = elapsed()
    if len(data) > EXCERPT_BYTES:
        response.close()  # a long answer is not read to its end: drop the connection
    response.release_conn()
    excerpt = data[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return PostResult(response.status, latency, excerpt, error)
