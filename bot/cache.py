"""Key-value cache: Redis when configured and healthy, a bounded in-memory TTL store otherwise.

Every method degrades instead of raising: a Redis outage costs hit rate, never an update.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bot.observability.metrics import CACHE_REQUESTS

if TYPE_CHECKING:
    from bot.observability.tracing import RedisSpans

log = structlog.get_logger(__name__)

T = TypeVar("T")

# After a Redis failure, skip Redis for this long instead of paying a timeout on every call.
REDIS_RETRY_AFTER_SECONDS = 5.0


class MemoryStore:
    """A bounded LRU of string values with per-key expiry (monotonic clock)."""

    def __init__(self, max_items: int = 20_000, clock: Callable[[], float] = time.monotonic):
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max_items = max_items
        self._clock = clock

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def set(self, key: str, value: str, ttl: float) -> None:
        self._items[key] = (self._clock() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    def set_nx(self, key: str, value: str, ttl: float) -> bool:
        if self.get(key) is not None:
            return False
        self.set(key, value, ttl)
        return True

    def delete(self, key: str) -> None:
        self._items.pop(key, None)

    def expires_in(self, key: str) -> float | None:
        """Seconds until `key` expires, None when absent."""
        return None if self.get(key) is None else self._items[key][0] - self._clock()


class Cache:
    """String cache shared by the bots of the process; each bot's keys carry its namespace
    (`bot.tenant.Tenant.key`)."""

    def __init__(
        self,
        *,
        redis: Redis | None = None,
        memory: MemoryStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        spans: RedisSpans | None = None,
    ) -> None:
        self.redis = redis
        self._spans = spans
        self.memory = memory or MemoryStore()
        self._clock = clock
        self._redis_down_until = 0.0

    @property
    def redis_available(self) -> bool:
        return self.redis is not None and self._clock() >= self._redis_down_until

    async def get(self, key: str) -> str | None:
        if self.redis_available:
            try:
                raw = await self._traced("GET", self.redis.get(key))  # type: ignore[union-attr]
            except (RedisError, OSError) as exc:
                self._redis_failed("get", exc)
            else:
                value = raw.decode() if isinstance(raw, bytes) else raw
                CACHE_REQUESTS.labels("miss" if value is None else "hit", "redis").inc()
                return value
        value = self.memory.get(key)
        CACHE_REQUESTS.labels("miss" if value is None else "hit", "memory").inc()
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        # Memory is written through even with Redis up: it is what we fall back to, and a stale
        # fallback could make a changed profile look unchanged.
        self.memory.set(key, value, ttl)
        if self.redis_available:
            try:
                await self._traced("SET", self.redis.set(key, value, px=int(ttl * 1000)))  # type: ignore[union-attr]
            except (RedisError, OSError) as exc:
                self._redis_failed("set", exc)

    async def set_nx(self, key: str, value: str, ttl: float) -> bool:
        """Set only if absent; True when this call set it (used to claim work exactly once).

        A key this process wrote (memory is written through) stays taken even when Redis lost
        it (restarted empty, failed over): Redis gets the known value back instead.
        """
        known, known_ttl = self.memory.get(key), self.memory.expires_in(key)
        if self.redis_available:
            try:
                claimed = await self._traced(
                    "SET",
                    self.redis.set(key, value, px=int(ttl * 1000), nx=True),  # type: ignore[union-attr]
                )
                if claimed and known is not None and known_ttl is not None:
                    await self._traced(
                        "SET",
                        self.redis.set(key, known, px=max(1, int(known_ttl * 1000))),  # type: ignore[union-attr]
                    )
                    return False
            except (RedisError, OSError) as exc:
                self._redis_failed("set_nx", exc)
            else:
                if claimed:
                    self.memory.set(key, value, ttl)
                return bool(claimed)
        return self.memory.set_nx(key, value, ttl)

    async def delete(self, key: str) -> None:
        self.memory.delete(key)
        if self.redis_available:
            try:
                await self._traced("DEL", self.redis.delete(key))  # type: ignore[union-attr]
            except (RedisError, OSError) as exc:
                self._redis_failed("delete", exc)

    async def ping(self) -> bool:
        """True when Redis answers; also closes the circuit early once it does."""
        if self.redis is None:
            return False
        try:
            await self.redis.ping()
        except (RedisError, OSError):
            return False
        self._redis_down_until = 0.0
        return True

    def _traced(self, command: str, call: Awaitable[T]) -> Awaitable[T]:
        return call if self._spans is None else self._spans.call(command, call)

    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        if self._clock() >= self._redis_down_until:
            log.warning("redis_unavailable", operation=operation, error=type(exc).__name__)
        self._redis_down_until = self._clock() + REDIS_RETRY_AFTER_SECONDS


def create_redis(url: str) -> Redis:
    # Short timeouts: the memory fallback is better than an update waiting on a dead Redis.
    return Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
        retry=Retry(NoBackoff(), retries=0),
    )
