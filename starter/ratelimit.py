"""The JSON API's rate limit (``API_RATE_LIMIT``): a fixed window per key, one storage call per request.

Flask-Limiter counts the pages' limits (log-in, invitations). The API counts here instead, because a
call is the hot path: Flask-Limiter's fixed window with its headers costs three Redis round trips per
request (increment, then read the count and the expiry for ``X-RateLimit-*``), and its in-memory store
starts a timer thread every few calls. Here one Lua call (``WINDOW_SCRIPT``) increments the counter,
starts its window on the first hit and returns the count with the time left: one round trip, and the
headers come from its answer.

Same storage (``RATELIMIT_STORAGE_URI``, ``RATELIMIT_KEY_PREFIX``), same semantics as before: the window
of each limit starts at a key's first call and lasts the limit's period; refused calls count too. A
storage that fails (Redis down or silent: ``RATELIMIT_STORAGE_OPTIONS`` time it out within a second)
degrades to counting in this process with a logged warning, never a 500, and is tried again after
``RETRY_SECONDS``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask import Flask
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage, Storage, storage_from_string

log = logging.getLogger(__name__)

RETRY_SECONDS = 30  # after a storage failure, count in memory this long before trying the storage again
SWEEP_EVERY = 10_000  # in-memory hits between sweeps of expired windows
# KEYS[1] the counter; ARGV[1] the window in milliseconds, ARGV[2] the cost. Returns {count, ms left}.
WINDOW_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    left = tonumber(ARGV[1])
end
return {count, left}
"""


@dataclass(frozen=True)
class Window:
    """One limit's state after a call: what the ``X-RateLimit-*`` headers say."""

    limit: int
    remaining: int
    reset_at: float  # Unix time the window ends

    @property
    def breached(self) -> bool:
        return self.remaining < 0


@lru_cache(maxsize=16)
def limits_of(text: str) -> tuple[RateLimitItem, ...]:
    """``"120 per minute; 1000 per hour"`` as limits, tightest first (what the headers describe)."""
    return tuple(sorted(parse_many(text)))


class MemoryCounts:
    """Fixed windows in this process: key -> [count, window end]. Expired windows are swept now and then."""

    def __init__(self) -> None:
        self.windows: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.hits = 0

    def hit(self, key: str, seconds: int, cost: int, now: float) -> tuple[int, float]:
        with self.lock:
            self.hits += 1
            if self.hits % SWEEP_EVERY == 0:
                self.windows = {k: w for k, w in self.windows.items() if w[1] > now}
            window = self.windows.get(key)
            if window is None or window[1] <= now:
                window = self.windows[key] = [0, now + seconds]
            window[0] += cost
            return int(window[0]), window[1]


class ApiLimiter:
    """The API's counters for one app (``app.extensions["api_limiter"]``)."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.enabled = bool(config["RATELIMIT_ENABLED"])
        self.prefix = f"LIMITS:{config['RATELIMIT_KEY_PREFIX']}api/"
        uri = config["RATELIMIT_STORAGE_URI"]
        self.storage: Storage | None = None
        if not uri.startswith("memory://"):
            self.storage = storage_from_string(uri, **config.get("RATELIMIT_STORAGE_OPTIONS", {}))
        self.memory = MemoryCounts()
        self.dead_until = 0.0
        self.script: Any = None

    def hit(self, limits_text: str, identity: str, cost: int = 1) -> list[Window]:
        """Count one call of ``identity`` against every limit; their windows, tightest limit first."""
        now = time.time()
        windows = []
        for item in limits_of(limits_text):
            key = f"{self.prefix}{identity}/{item.amount}/{item.multiples}/{item.GRANULARITY.name}"
            count, reset_at = self._count(key, item.get_expiry(), cost, now)
            windows.append(Window(item.amount, item.amount - count, reset_at))
        return windows

    def _count(self, key: str, seconds: int, cost: int, now: float) -> tuple[int, float]:
        if self.storage is not None and now >= self.dead_until:
            try:
                return self._count_in_storage(key, seconds, cost, now)
            except Exception:  # whatever the store raises (refused, timed out, …): never a 500 for it
                log.warning("Rate limit storage unreachable - falling back to in-memory storage", exc_info=True)
                self.dead_until = now + RETRY_SECONDS
        return self.memory.hit(key, seconds, cost, now)

    def _count_in_storage(self, key: str, seconds: int, cost: int, now: float) -> tuple[int, float]:
        storage = self.storage
        assert storage is not None
        if isinstance(storage, RedisStorage):  # Redis, Sentinel or Cluster: one round trip
            if self.script is None:
                self.script = storage.get_connection().register_script(WINDOW_SCRIPT)
            count, left = self.script(keys=[key], args=[seconds * 1000, cost])
            return int(count), now + int(left) / 1000
        count = storage.incr(key, seconds, cost)  # another store (memcached, MongoDB, …): two calls
        return count, storage.get_expiry(key)


def init_app(app: Flask) -> None:
    app.extensions["api_limiter"] = ApiLimiter(app)
