"""A token bucket per sender, shared by every worker through Redis.

Each sender (phone number, short code, messaging service) may send ``rate`` messages per second
with bursts up to ``rate`` tokens. Without Redis (one machine, one worker: the development
default) the bucket lives in the worker process, which is then the only sender.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

# Refill and take atomically; answer how long to wait (ms) when there are not enough tokens.
_LUA = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + (now - ts) * rate / 1000.0)
local wait = 0
if tokens >= wanted then
  tokens = tokens - wanted
else
  wait = math.ceil((wanted - tokens) * 1000.0 / rate)
end
redis.call('HSET', key, 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', key, 60000)
return wait
"""

_local_lock = threading.Lock()
_local_state: dict[str, tuple[float, float]] = {}
_redis_client = None
_script = None


def _redis():
    global _redis_client, _script
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL)
        _script = _redis_client.register_script(_LUA)
    return _script


def _try_take(key: str, rate: float, wanted: int) -> float:
    """Take ``wanted`` tokens or return the seconds to wait before trying again."""
    capacity = max(rate, wanted)
    if settings.REDIS_URL:
        now_ms = int(time.time() * 1000)
        wait_ms = _redis()(keys=[f"relay:bucket:{key}"], args=[rate, capacity, wanted, now_ms])
        return int(wait_ms) / 1000.0
    with _local_lock:
        now = time.monotonic()
        tokens, ts = _local_state.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - ts) * rate)
        if tokens >= wanted:
            _local_state[key] = (tokens - wanted, now)
            return 0.0
        _local_state[key] = (tokens, now)
        return (wanted - tokens) / rate


def acquire(key: str, *, rate: float, tokens: int, max_wait: float = 60.0) -> None:
    """Block until ``tokens`` may be spent on sender ``key`` at ``rate`` per second."""
    if rate <= 0:
        return
    deadline = time.monotonic() + max_wait
    while True:
        wait = _try_take(key, rate, tokens)
        if wait <= 0:
            return
        if time.monotonic() + wait > deadline:
            raise TimeoutError(f"sender {key} throttled for more than {max_wait}s")
        time.sleep(min(wait, 1.0))
