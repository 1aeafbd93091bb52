"""UserService against real PostgreSQL/SQLite and real Redis (or the memory fallback)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiogram import F
from aiogram.types import Message
from sqlalchemy import Insert, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from structlog.testing import capture_logs

from bot.services.users import (
    CACHE_NAMESPACE,
    CachedUser,
    RegisteredUser,
    UserProfile,
    UserService,
)
from bot.tenant import Tenant
from tests.integration.conftest import Harness
from tests.support.updates import message_update, start_update, user


@contextmanager
def count_writes(engine: AsyncEngine) -> Iterator[list[str]]:
    """The writes to users while the block runs (not the exactly-once ledger's claims)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "update_claims" in statement:
            return
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


def service_of(h: Harness) -> UserService:
    return UserService(dialect=h.resources.engine.dialect.name, cache=h.resources.cache)


async def register(h: Harness, profile: UserProfile) -> bool:
    return (await service_of(h).register(profile, tenant=h.app.tenant)).is_new


async def cached_entry(h: Harness, telegram_id: int) -> CachedUser | None:
    raw = await h.resources.cache.get(h.app.tenant.key(CACHE_NAMESPACE, telegram_id))
    return None if raw is None else CachedUser.model_validate_json(raw)


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
    cached = await harness.resources.cache.get(harness.app.tenant.key(CACHE_NAMESPACE, uid))
    assert cached is not None
    assert CachedUser.model_validate_json(cached) == CachedUser(profile=changed)


async def test_corrupt_cache_entry_is_ignored_and_replaced(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    key = harness.app.tenant.key(CACHE_NAMESPACE, uid)
    await harness.resources.cache.set(key, "{not json", 60)
    with capture_logs() as logs:
        assert await service_of(harness).cached(uid, tenant=harness.app.tenant) is None
    # Said once, without the key (it holds a user id), and dropped, not read again next time.
    assert logs == [{"event": "cache_entry_invalid", "log_level": "warning"}]
    assert await harness.resources.cache.get(key) is None
    await harness.resources.cache.set(key, "{not json", 60)
    assert await register(harness, UserProfile(telegram_id=uid, first_name="C")) is True
    cached = await harness.resources.cache.get(key)
    assert cached is not None
    assert CachedUser.model_validate_json(cached).profile.first_name == "C"


async def test_fifty_concurrent_first_starts_create_one_row(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    updates = [start_update(user(uid, "Rush")) for _ in range(50)]

    await asyncio.gather(*(harness.feed(u) for u in updates))

    assert await harness.count_users(uid) == 1
    texts = harness.telegram.sent_texts()
    assert len(texts) == 50
    assert texts.count("Hello, Rush! Nice to meet you. Send me anything, or /help.") == 1
    assert texts.count("Welcome back, Rush!") == 49


async def test_registration_is_stored_before_it_is_cached_or_announced(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by tests/e2e (PostgreSQL restarted mid-run): the commit used to run after the reply.
    real_execute = AsyncConnection.execute

    async def write_fails(connection: AsyncConnection, statement: Any, *args: Any) -> Any:
        if isinstance(statement, Insert):
            raise OperationalError("INSERT", {}, ConnectionResetError())
        return await real_execute(connection, statement, *args)

    uid = random.randint(10**9, 2 * 10**9)
    monkeypatch.setattr(AsyncConnection, "execute", write_fails)
    with pytest.raises(OperationalError):
        await harness.feed(start_update(user(uid, "Late")))
    assert harness.telegram.calls_to("sendMessage") == []  # nothing announced
    key = harness.app.tenant.key(CACHE_NAMESPACE, uid)
    assert await harness.resources.cache.get(key) is None
    monkeypatch.undo()
    await harness.feed(start_update(user(uid, "Late")))  # Telegram's redelivery
    assert harness.telegram.sent_texts() == [
        "Hello, Late! Nice to meet you. Send me anything, or /help."
    ]
    assert await harness.count_users(uid) == 1


async def test_registration_survives_a_handler_that_fails_after_it(harness: Harness) -> None:
    # The greeting is the promise that the user is stored, so the registration must not roll
    # back with the update's session when the handler fails later.
    uid = random.randint(10**9, 2 * 10**9)
    rollbacks: list[object] = []

    async def register_then_fail(
        message: Message, user_service: UserService, session: AsyncSession, tenant: Tenant
    ) -> None:
        assert message.from_user is not None
        await user_service.register(UserProfile(telegram_id=uid, first_name="Kept"), tenant=tenant)
        event.listen(session.sync_session, "after_rollback", rollbacks.append)
        await session.execute(text("SELECT 1"))  # the update's own transaction is in use too
        raise RuntimeError("handler failed after registering")

    harness.dp.message.register(register_then_fail, F.text == "/fail-after-register")
    await harness.feed(message_update(user(uid, "Kept"), "/fail-after-register"))
    assert len(rollbacks) == 1  # the update's transaction did roll back
    assert await harness.count_users(uid) == 1
    cached = await harness.resources.cache.get(harness.app.tenant.key(CACHE_NAMESPACE, uid))
    assert cached is not None


async def test_a_returning_user_keeps_their_row_and_gets_their_profile_updated(
    harness: Harness,
) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    first = UserProfile(telegram_id=uid, first_name="Old", username="old", language_code="en")
    assert await register(harness, first) is True
    [before] = await harness.user_rows(uid)
    # The cache entry expired: the same profile again only marks the user as seen.
    await harness.resources.cache.delete(harness.app.tenant.key(CACHE_NAMESPACE, uid))
    assert await register(harness, first) is False
    [seen] = await harness.user_rows(uid)
    assert (seen.id, seen.created_at, seen.updated_at) == (
        before.id,
        before.created_at,
        before.updated_at,
    )
    assert seen.last_seen_at > before.last_seen_at
    # Every field of a changed profile is stored, on the same row.
    changed = UserProfile(
        telegram_id=uid,
        first_name="New",
        username=None,
        last_name="Name",
        language_code="de",
        is_premium=True,
    )
    registered = await service_of(harness).register(changed, tenant=harness.app.tenant)
    assert (registered.profile, registered.is_new) == (changed, False)
    [after] = await harness.user_rows(uid)
    assert (after.id, after.created_at) == (before.id, before.created_at)
    assert after.updated_at > seen.updated_at
    assert after.last_seen_at > seen.last_seen_at
    stored = {f: getattr(after, f) for f in ("first_name", "username", "last_name")}
    assert stored == {"first_name": "New", "username": None, "last_name": "Name"}
    assert (after.language_code, after.is_premium) == ("de", True)


async def test_a_chosen_language_is_stored_and_kept_through_profile_changes(
    harness: Harness,
) -> None:
    service, tenant = service_of(harness), harness.app.tenant
    uid, other = random.randint(10**9, 2 * 10**9), random.randint(2 * 10**9, 3 * 10**9)
    profile = UserProfile(telegram_id=uid, first_name="Lang", language_code="en")
    # Choosing before /start registers the user.
    await service.choose_language(profile, "de", tenant=tenant)
    await service.choose_language(
        UserProfile(telegram_id=other, first_name="O"), "uk", tenant=tenant
    )
    assert await harness.count_users(uid) == 1
    assert await cached_entry(harness, uid) == CachedUser(profile=profile, chosen_language="de")
    # Each user's own choice, from the database (as for a user the cache no longer holds).
    assert await service.chosen_language(uid, tenant=tenant) == "de"
    assert await service.chosen_language(other, tenant=tenant) == "uk"
    assert await service.chosen_language(3 * 10**9 + 1, tenant=tenant) is None
    # A /start from the cache, and one with a changed profile, both know the choice...
    from_cache = await service.register(profile, tenant=tenant)
    assert from_cache == RegisteredUser(profile, is_new=False, chosen_language="de")
    renamed = profile.model_copy(update={"first_name": "Renamed", "language_code": "fr"})
    registered = await service.register(renamed, tenant=tenant)
    assert (registered.profile, registered.chosen_language) == (renamed, "de")
    # ...and the profile change neither drops the choice nor caches the user without it.
    assert await service.chosen_language(uid, tenant=tenant) == "de"
    assert await cached_entry(harness, uid) == CachedUser(profile=renamed, chosen_language="de")
    await service.choose_language(renamed, "en", tenant=tenant)
    assert await service.chosen_language(uid, tenant=tenant) == "en"
