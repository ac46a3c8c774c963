"""A real HTTP server on 127.0.0.1 that receives webhook deliveries and records them.

Behaviour is scripted per test: ``fail_first`` answers 500 to the first N requests of each
event id, ``hang_first`` holds the first N requests of each event id longer than the sender's
timeout, ``status`` is the answer otherwise.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers.get("relay-event-id", "")


@dataclass
class Script:
    status: int = 200
    fail_first: int = 0
    hang_first: int = 0
    hang_seconds: float = 0.0
    body: bytes = b'{"ok": true}'


@dataclass
class Receiver:
    script: Script = field(default_factory=Script)
    requests: list[Received] = field(default_factory=list)
    seen: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            # Buffered: the status line, headers and body leave in one write (no Nagle wait).
            wbufsize = 64 * 1024

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                event_id = headers.get("relay-event-id", "")
                with receiver.lock:
                    receiver.seen[event_id] += 1
                    number = receiver.seen[event_id]
                script = receiver.script
                if number <= script.hang_first:
                    time.sleep(script.hang_seconds)
                    status = 0  # recorded as not accepted: the sender gave up waiting
                elif number <= script.hang_first + script.fail_first:
                    status = 500
                else:
                    status = script.status
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, headers, body, time.time(), status)
                    )
                answer = script.body if status < 300 else b"receiver says no"
                try:
                    self.send_response(status or 200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that hung up: fine
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/relay"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, in the order they arrived."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.answered < 300]

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)
