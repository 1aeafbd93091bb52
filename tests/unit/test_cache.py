from __future__ import annotations

from bot.cache import Cache, MemoryStore
from tests.support.tenants import keys_only_tenant


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_memory_store_expires_entries() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.set("a", "1", ttl=10)
    assert store.get("a") == "1"
    clock.now += 10
    assert store.get("a") is None
    assert len(store) == 0


def test_memory_store_is_bounded_lru() -> None:
    store = MemoryStore(max_items=3, clock=Clock())
    for key in "abc":
        store.set(key, key, ttl=60)
    assert store.get("a") == "a"  # touch: b is now the oldest
    store.set("d", "d", ttl=60)
    assert [store.get(k) for k in "abcd"] == ["a", None, "c", "d"]
    assert len(store) == 3


def test_set_nx_claims_once_until_expiry() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    assert store.set_nx("k", "x", ttl=5) is True
    assert store.set_nx("k", "y", ttl=5) is False
    clock.now += 5
    assert store.set_nx("k", "z", ttl=5) is True


async def test_cache_without_redis_uses_memory_and_keys_carry_the_bot_namespace() -> None:
    cache = Cache()
    key = keys_only_tenant("proj", 7, "proj").key("user", 42)
    assert key == "proj:user:42"
    assert await cache.get(key) is None
    await cache.set(key, "v", ttl=60)
    assert await cache.get(key) == "v"
    assert await cache.set_nx(key, "w", ttl=60) is False
    await cache.delete(key)
    assert await cache.get(key) is None
    assert await cache.ping() is False
