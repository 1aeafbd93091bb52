"""UserService against real PostgreSQL/SQLite and real Redis (or the memory fallback)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.services.users import UserProfile, UserService
from tests.integration.conftest import Harness
from tests.support.updates import start_update, user


@contextmanager
def count_writes(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def register(h: Harness, profile: UserProfile) -> bool:
    async with h.resources.sessionmaker() as session, session.begin():
        service = UserService(session=session, cache=h.resources.cache)
        return (await service.register(profile)).is_new


async def test_warm_start_with_unchanged_profile_writes_nothing(harness: Harness) -> None:
    profile = UserProfile(telegram_id=random.randint(10**9, 2 * 10**9), first_name="Warm")
    assert await register(harness, profile) is True
    with count_writes(harness.resources.engine) as writes:
        assert await register(harness, profile) is False
        await harness.feed(start_update(user(profile.telegram_id, "Warm")))
    assert writes == []
    assert harness.telegram.sent_texts() == ["Welcome back, Warm!"]


async def test_changed_profile_writes_once_and_refreshes_the_cache(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    await register(harness, UserProfile(telegram_id=uid, first_name="A"))
    changed = UserProfile(telegram_id=uid, first_name="B", language_code="de")
    with count_writes(harness.resources.engine) as writes:
        assert await register(harness, changed) is False
        assert await register(harness, changed) is False
    assert len(writes) == 1
    cached = await harness.resources.cache.get(harness.resources.cache.key("user", uid))
    assert cached is not None
    assert UserProfile.model_validate_json(cached) == changed


async def test_corrupt_cache_entry_is_ignored_and_replaced(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    key = harness.resources.cache.key("user", uid)
    await harness.resources.cache.set(key, "{not json", 60)
    assert await register(harness, UserProfile(telegram_id=uid, first_name="C")) is True
    cached = await harness.resources.cache.get(key)
    assert cached is not None
    assert UserProfile.model_validate_json(cached).first_name == "C"


async def test_fifty_concurrent_first_starts_create_one_row(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    updates = [start_update(user(uid, "Rush")) for _ in range(50)]

    await asyncio.gather(*(harness.feed(u) for u in updates))

    assert await harness.count_users(uid) == 1
    texts = harness.telegram.sent_texts()
    assert len(texts) == 50
    assert texts.count("Hello, Rush! Nice to meet you. Send me anything, or /help.") == 1
    assert texts.count("Welcome back, Rush!") == 49


async def test_registration_is_committed_before_it_is_cached_or_announced(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by tests/e2e (PostgreSQL restarted mid-run): the commit used to run after the reply.
    async def commit_fails(_session: AsyncSession) -> None:
        raise OperationalError("COMMIT", {}, ConnectionResetError())

    uid = random.randint(10**9, 2 * 10**9)
    monkeypatch.setattr(AsyncSession, "commit", commit_fails)
    with pytest.raises(OperationalError):
        await harness.feed(start_update(user(uid, "Late")))
    assert harness.telegram.calls_to("sendMessage") == []  # nothing announced
    assert await harness.resources.cache.get(harness.resources.cache.key("user", uid)) is None
    monkeypatch.undo()
    await harness.feed(start_update(user(uid, "Late")))  # Telegram's redelivery
    assert harness.telegram.sent_texts() == [
        "Hello, Late! Nice to meet you. Send me anything, or /help."
    ]
    assert await harness.count_users(uid) == 1
