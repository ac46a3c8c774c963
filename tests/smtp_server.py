"""A real SMTP server on 127.0.0.1 (aiosmtpd) for tests and benchmarks.

It records every accepted message (envelope sender, recipients, raw bytes) and can be told to
answer a recipient with a 4xx or 5xx at RCPT, to answer DATA with a code, to refuse logins, or
to hang before answering DATA. ``python -m tests.smtp_server PORT`` runs one that only counts
(for the benchmark), printing the count when it stops.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd logs every command at INFO: thousands of lines per test, and slow.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class Behaviour:
    rcpt_codes: dict[str, str] = field(default_factory=dict)  # address -> "550 5.1.1 No such user"
    rcpt_default: str = ""  # answer every RCPT with this (e.g. "451 4.3.0 Try later")
    data_reply: str = ""  # answer DATA with this instead of 250
    hang_seconds: float = 0.0  # wait this long before answering DATA
    # called with the envelope once the content is in, before any reply (the commit point)
    on_data: Callable[[object], None] | None = None
    record: bool = True


class Handler:
    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.messages: list[Received] = []
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        code = self.behaviour.rcpt_codes.get(address.lower()) or self.behaviour.rcpt_default
        if code:
            return code
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.behaviour.on_data is not None:
            self.behaviour.on_data(envelope)
        if self.behaviour.hang_seconds:
            await asyncio.sleep(self.behaviour.hang_seconds)
        if self.behaviour.data_reply:
            return self.behaviour.data_reply
        with self.lock:
            self.count += 1
            if self.behaviour.record:
                self.messages.append(
                    Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
                )
        return "250 2.0.0 Queued"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpServer:
    """``with SmtpServer() as server:`` ... ``server.port``, ``server.messages``."""

    def __init__(self, *, behaviour: Behaviour | None = None, users: dict | None = None):
        self.behaviour = behaviour or Behaviour()
        self.handler = Handler(self.behaviour)
        self.port = _free_port()
        self.users = users
        kwargs = {}
        if users is not None:
            kwargs = {
                "authenticator": self._authenticate,
                "auth_require_tls": False,
                "auth_required": True,
            }
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, data_size_limit=0, **kwargs
        )

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.users.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=bool(ok), handled=False)

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    @property
    def count(self) -> int:
        return self.handler.count

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


if __name__ == "__main__":
    port = int(sys.argv[1])
    handler = Handler(Behaviour(record=False))
    controller = Controller(handler, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        controller.stop()
        print(handler.count, flush=True)
