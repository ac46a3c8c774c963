"""The hand-over loop: one asyncio event loop per process, running in a daemon thread, on
which providers with async clients (Twilio's) make their requests.

A pump hands a batch's windows to this loop and goes on picking and preparing the next batch
while the requests wait for their moment (a slow sender's window picked ahead of its bucket)
and for their answers; it records them when they are in (``distributions.sending.Batch``).
The loop thread does nothing but network I/O and never touches the database: the pump's
thread keeps every transaction, lock and lease. Sessions (aiohttp) are bound to this loop,
so one pooled HTTP session serves every batch of the process.

The loop is made on first use in each process (never inherited across a fork: a prefork
worker's child starts its own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid: int | None = None


def handover_loop() -> asyncio.AbstractEventLoop:
    """This process's running hand-over loop (started on first use)."""
    global _loop, _thread, _pid
    with _lock:
        if _pid != os.getpid() or _loop is None or _loop.is_closed() or not _thread.is_alive():
            # The interpreter's switch interval stays at its 5 ms: 1 ms made the loop's thread
            # hand over slow senders' windows a little sooner (200 long codes: 97.6 -> 98.5 %
            # of their rate) but cost a fast sender a quarter of its throughput (SMS bench:
            # 1,607 -> 1,157 msg/s), the two threads taking the lock from each other.
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, name="handover-loop", daemon=True)
            _thread.start()
            _pid = os.getpid()
        return _loop


def submit(coroutine: Coroutine) -> concurrent.futures.Future:
    """Run ``coroutine`` on the hand-over loop; its future, to wait on from any thread."""
    return asyncio.run_coroutine_threadsafe(coroutine, handover_loop())


def run(coroutine: Coroutine, timeout: float | None = None):
    """Run ``coroutine`` on the hand-over loop and wait for its result (not from the loop's
    own thread)."""
    return submit(coroutine).result(timeout)
