"""The per-sender token bucket is shared by every worker process through Redis."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workers import require_redis

ROOT = Path(__file__).resolve().parent.parent

TAKER = """
import django, os, sys, time
django.setup()
from distributions import throttle
for _ in range(int(sys.argv[2])):
    throttle.acquire(sys.argv[1], rate=float(sys.argv[3]), tokens=1)
print(time.time())
"""


@pytest.mark.integration
def test_two_processes_share_one_senders_rate(settings):
    redis_url = require_redis()
    key = f"test-sender-{time.time_ns()}"
    rate, per_process = 20, 30  # 60 tokens at 20/s with a burst of 20: at least 2 s
    env = {**os.environ, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    started = time.time()
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, key, str(per_process), str(rate)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    finished = [float(taker.communicate(timeout=60)[0].strip()) for taker in takers]
    assert all(taker.returncode == 0 for taker in takers)
    elapsed = max(finished) - started
    assert elapsed >= (2 * per_process - rate) / rate * 0.9, elapsed


def test_local_bucket_limits_one_process(settings):
    from distributions import throttle

    settings.REDIS_URL = ""
    key = f"local-{time.time_ns()}"
    started = time.monotonic()
    for _ in range(15):
        throttle.acquire(key, rate=10, tokens=1)
    assert time.monotonic() - started >= 0.45  # 15 tokens, burst 10, 10/s
