"""Real Celery worker processes for integration tests (Redis broker, the test database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from django.db import connection

import pytest

from config.celery import app as celery_app
from config.celery import ping

ROOT = Path(__file__).resolve().parent.parent


def require_redis() -> str:
    """The Redis URL for integration tests; skip without one, except in CI where it fails."""
    url = os.environ.get("REDIS_URL", "")
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not url:
        if in_ci:
            pytest.fail("CI=true but REDIS_URL is not set: integration tests need Redis")
        pytest.skip("integration test: set REDIS_URL (and run on PostgreSQL) to run it")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"REDIS_URL={url} is set but Redis does not answer: {exc}")
    return url


def test_database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = f":{settings['PORT']}" if settings.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{settings['NAME']}"


class WorkerProcess:
    """``celery -A config worker`` in its own process group, killable and restartable."""

    def __init__(
        self,
        *,
        concurrency: int = 2,
        extra_env: dict | None = None,
        pool: str = "prefork",
        queues: str = "control,send",
    ):
        self.concurrency = concurrency
        self.pool = pool
        self.queues = queues
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **(extra_env or {}),
        }
        self.name = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.log = tempfile.NamedTemporaryFile(prefix="relay-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> WorkerProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "INFO",
                "-P",
                self.pool,
                "-c",
                str(self.concurrency),
                "-Q",
                self.queues,
                "-n",
                self.name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                ping.apply_async(kwargs={"value": "ready"}).get(timeout=5)
                return
            except Exception:  # noqa: BLE001, S112 - not ready yet: keep polling until the deadline
                continue
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.output()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-6000:]


@pytest.fixture
def start_worker(transactional_db):
    """Start real worker processes; all are stopped at the end of the test."""
    require_redis()
    workers: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        worker = WorkerProcess(**kwargs)
        workers.append(worker)  # before it starts: a worker that never gets ready is stopped too
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()
    celery_app.control.purge()
