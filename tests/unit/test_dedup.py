"""The dedup middleware called directly with a stub handler, as aiogram's own tests do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiogram.types import Update
from sqlalchemy.exc import OperationalError

from bot.cache import Cache
from bot.errors import UpdateInProgressError
from bot.middlewares.dedup import DeduplicationMiddleware
from tests.support.tenants import keys_only_tenant

UPDATE = Update(update_id=1)
TENANT = keys_only_tenant("p", 11, "p")
DATA: dict[str, Any] = {"tenant": TENANT}


def middleware(cache: Cache, wait: float = 1.0) -> DeduplicationMiddleware:
    return DeduplicationMiddleware(cache=cache, deadline=30, wait=wait)


async def test_second_delivery_is_skipped() -> None:
    cache, calls = Cache(), []

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        calls.append(1)
        return "done"

    dedup = middleware(cache)
    assert await dedup(handler, UPDATE, DATA) == "done"
    assert await dedup(handler, UPDATE, DATA) is None
    assert calls == [1]
    assert await cache.get("p:update:1") == "done"


async def test_retryable_failure_releases_the_claim() -> None:
    cache = Cache()

    async def broken(_event: Any, _data: dict[str, Any]) -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError())

    with pytest.raises(OperationalError):
        await middleware(cache)(broken, UPDATE, DATA)
    assert await cache.get("p:update:1") is None


async def test_a_bug_is_final() -> None:
    cache = Cache()

    async def buggy(_event: Any, _data: dict[str, Any]) -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await middleware(cache)(buggy, UPDATE, DATA)
    assert await cache.get("p:update:1") == "done"


async def test_cancellation_releases_the_claim() -> None:
    cache = Cache()
    started = asyncio.Event()

    async def slow(_event: Any, _data: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(middleware(cache)(slow, UPDATE, DATA))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await cache.get("p:update:1") is None


async def test_a_claim_held_too_long_elsewhere_is_in_progress() -> None:
    cache = Cache()
    await cache.set("p:update:1", "processing", ttl=60)

    async def handler(_event: Any, _data: dict[str, Any]) -> None:
        raise AssertionError

    with pytest.raises(UpdateInProgressError):
        await middleware(cache, wait=0.1)(handler, UPDATE, DATA)


async def test_the_deadline_releases_the_claim_so_the_update_comes_back() -> None:
    cache = Cache()

    async def hangs(_event: Any, _data: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    dedup = DeduplicationMiddleware(cache=cache, deadline=0.05)
    with pytest.raises(TimeoutError):
        await dedup(hangs, UPDATE, DATA)
    assert await cache.get("p:update:1") is None


async def test_the_deadline_starts_when_the_claim_is_won() -> None:
    cache = Cache()
    await cache.set_nx("p:update:1", "processing", 1.2)  # a dead worker's claim, expiring

    async def takes_a_while(_event: Any, _data: dict[str, Any]) -> str:
        await asyncio.sleep(0.2)
        return "done"

    # 1.2 s of waiting, then 0.2 s of work: within a 1 s deadline only if it starts late.
    dedup = DeduplicationMiddleware(cache=cache, deadline=1.0, wait=3.0)
    assert await dedup(takes_a_while, UPDATE, DATA) == "done"


async def test_update_ids_are_per_bot() -> None:
    """Bot A's update 1 done must not make bot B's update 1 a duplicate (one host, many bots)."""
    cache, calls = Cache(), []

    async def handler(_event: Any, data: dict[str, Any]) -> None:
        calls.append(data["tenant"].name)

    dedup = middleware(cache)
    other = {"tenant": keys_only_tenant("q", 12, "p:q")}
    await dedup(handler, UPDATE, DATA)
    await dedup(handler, UPDATE, other)
    await dedup(handler, UPDATE, other)
    assert calls == ["p", "q"]
    assert await cache.get("p:q:update:1") == "done"
