"""Fixed-window rate limits: per annotator on label submission, per client address on failed
token checks (to slow token guessing; ``refuse_past_limit``).

Redis counters (INCR + EXPIRE on one key per window) when the broker is Redis, so every API
process shares one count; an in-process counter on the embedded setup (one API process).
A fixed window is a dozen lines and needs no new dependency; the `limits` library would add
sliding windows we do not need. If Redis fails, the limiter lets requests through (logged):
a Redis blip must not stop labelling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis
import redis.asyncio

from app.core.errors import TooManyRequests

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60


class RateLimiter(Protocol):
    def hit(self, key: str) -> int:
        """Count one event for ``key`` in the current window; return the new count."""

    def count(self, key: str) -> int:
        """Events for ``key`` in the current window."""

    def retry_after(self) -> int:
        """Whole seconds until the current window ends (at least 1)."""


class _Window:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def window(self) -> int:
        return int(self.clock() // WINDOW_SECONDS)

    def retry_after(self) -> int:
        end = (self.window() + 1) * WINDOW_SECONDS
        return max(1, math.ceil(end - self.clock()))


class MemoryLimiter(_Window):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._lock = threading.Lock()  # sync routes run in a thread pool
        self._counts: dict[str, int] = {}
        self._current = self.window()

    def _roll(self) -> None:
        # Called under the lock: a new window forgets every old count (bounded memory).
        now = self.window()
        if now != self._current:
            self._counts.clear()
            self._current = now

    def hit(self, key: str) -> int:
        with self._lock:
            self._roll()
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]

    def count(self, key: str) -> int:
        with self._lock:
            self._roll()
            return self._counts.get(key, 0)


class RedisLimiter(_Window):
    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    def _key(self, key: str) -> str:
        return f"annoloop:ratelimit:{key}:{self.window()}"

    def hit(self, key: str) -> int:
        name = self._key(key)
        try:
            pipe = self.redis.pipeline()
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS * 2, nx=True)  # outlives its window, then goes
            count, _ = pipe.execute()
            return int(count)
        except redis.RedisError:
            log.warning("rate limiter: Redis unavailable, not limiting", exc_info=True)
            return 0

    def count(self, key: str) -> int:
        try:
            value = self.redis.get(self._key(key))
        except redis.RedisError:
            log.warning("rate limiter: Redis unavailable, not limiting", exc_info=True)
            return 0
        return int(value) if value else 0


class AsyncRateLimiter(Protocol):
    """``RateLimiter`` for routes that run in the event loop (``app.fastpath``)."""

    async def hit(self, key: str) -> int: ...

    async def count(self, key: str) -> int: ...

    def retry_after(self) -> int: ...


class AsyncMemoryLimiter:
    """The in-process counter behind an async face: it does no I/O, so nothing to await."""

    def __init__(self, limiter: MemoryLimiter) -> None:
        self.limiter = limiter

    async def hit(self, key: str) -> int:
        return self.limiter.hit(key)

    async def count(self, key: str) -> int:
        return self.limiter.count(key)

    def retry_after(self) -> int:
        return self.limiter.retry_after()


class AsyncRedisLimiter(_Window):
    """The same Redis counters as ``RedisLimiter`` (the two share every count)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.url = url
        # One client per event loop: its connections belong to the loop that opened them.
        self._clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}

    @property
    def redis(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            self._clients = {k: v for k, v in self._clients.items() if not k.is_closed()}
            client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=1, socket_connect_timeout=1
            )
            self._clients[loop] = client
        return client

    def _key(self, key: str) -> str:
        return f"annoloop:ratelimit:{key}:{self.window()}"

    async def hit(self, key: str) -> int:
        name = self._key(key)
        try:
            pipe = self.redis.pipeline()
            pipe.incr(name)
            pipe.expire(name, WINDOW_SECONDS * 2, nx=True)
            count, _ = await pipe.execute()
            return int(count)
        except redis.RedisError:
            log.warning("rate limiter: Redis unavailable, not limiting", exc_info=True)
            return 0

    async def count(self, key: str) -> int:
        try:
            value = await self.redis.get(self._key(key))
        except redis.RedisError:
            log.warning("rate limiter: Redis unavailable, not limiting", exc_info=True)
            return 0
        return int(value) if value else 0

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def auth_failure_key(client: str) -> str:
    return f"auth-fail:{client}"


def refuse_past_limit(failures: int, limit: int, retry_after: Callable[[], int]) -> None:
    """429 instead of 401 for a failed token check once ``client`` is past the limit.

    The rule for both code paths (``app.deps``, ``app.fastpath.caller``): only failures
    are counted and only failures are refused, so a valid token always passes and one
    guesser behind a shared address (a proxy, an office NAT) cannot lock out everyone else
    there. A correct guess past the limit passes too, but tokens are 256 random bits: the
    limit slows guessing down, it is not what makes guessing hopeless.
    """
    if failures > limit:
        raise TooManyRequests(
            "too many failed token checks from this address", retry_after=retry_after()
        )


def make_limiter(broker_url: str) -> RateLimiter:
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisLimiter(broker_url)
    return MemoryLimiter()


def make_async_limiter(broker_url: str, sync: RateLimiter) -> AsyncRateLimiter:
    """Counting in the same place as ``sync`` (its memory, or the same Redis)."""
    if isinstance(sync, MemoryLimiter):
        return AsyncMemoryLimiter(sync)
    return AsyncRedisLimiter(broker_url)
