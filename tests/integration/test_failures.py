"""Infrastructure going away: Redis failing never fails an update; a database outage propagates
(so the webhook can answer 5xx and Telegram redelivers); bugs are apologised for, not retried."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.exceptions import (
    AdminShutdownError,
    CannotConnectNowError,
    ConnectionDoesNotExistError,
    UniqueViolationError,
)
from sqlalchemy import delete
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from bot.db.migrations import upgrade_to_head
from bot.db.models import User
from bot.retry_policy import is_retryable
from tests.integration.conftest import Harness
from tests.support.fake_telegram import Scripted
from tests.support.servers import ThrowawayPostgres, ThrowawayRedis
from tests.support.updates import message_update, start_update, user

MakeHarness = Callable[..., Awaitable[Harness]]


async def test_redis_stopping_mid_run_never_fails_an_update(
    make_harness: MakeHarness, throwaway_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    h = await make_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", redis_url=throwaway_redis.url
    )
    uid = random.randint(10**9, 2 * 10**9)
    await h.feed(start_update(user(uid, "Ria")))
    assert await h.resources.cache.ping() is True

    throwaway_redis.stop()
    await h.feed(start_update(user(uid, "Ria")))
    await h.feed(start_update(user(uid + 1, "Sam")))
    await h.feed(message_update(user(uid), "still there?"))

    texts = h.telegram.sent_texts()
    assert texts[1] == "Welcome back, Ria!"
    assert texts[2].startswith("Hello, Sam!")
    assert len(texts) == 4
    assert await h.count_users(uid + 1) == 1

    throwaway_redis.start()
    assert await h.resources.cache.ping() is True
    await h.feed(start_update(user(uid + 1, "Sam")))
    assert h.telegram.sent_texts()[-1] == "Welcome back, Sam!"


async def test_unreachable_redis_from_the_start_falls_back_to_memory(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    dead = ThrowawayRedis()  # a free port nobody listens on
    h = await make_harness(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", redis_url=dead.url
    )
    uid = random.randint(10**9, 2 * 10**9)
    await h.feed(start_update(user(uid, "Mo")))
    assert h.resources.cache.redis_available is False
    # The row goes: only the memory cache still knows Mo, so only it can say "welcome back"
    # (the database would greet a stranger).
    async with h.app.tenant.data.session() as session:
        await session.execute(delete(User).where(User.telegram_id == uid))
    await h.feed(start_update(user(uid, "Mo")))
    assert h.telegram.sent_texts()[1] == "Welcome back, Mo!"


@pytest.fixture
async def harness_on_throwaway_pg(
    make_harness: MakeHarness, throwaway_pg: ThrowawayPostgres
) -> Harness:
    engine = create_async_engine(throwaway_pg.url())
    await upgrade_to_head(engine)
    await engine.dispose()
    return await make_harness(database_url=throwaway_pg.url(), redis_url="")


async def fails_for_redelivery(h: Harness, update: dict[str, Any]) -> BaseException:
    """Feeds `update` expecting a retryable failure and no reply; returns the failure."""
    with pytest.raises(Exception) as caught:  # which exception is checked below
        await h.feed(update)
    assert is_retryable(caught.value), repr(caught.value)
    assert h.telegram.sent_texts() == []  # no apology: the update will be redelivered
    return caught.value


async def test_database_outage_propagates_as_retryable_and_recovers(
    harness_on_throwaway_pg: Harness, throwaway_pg: ThrowawayPostgres
) -> None:
    h, uid = harness_on_throwaway_pg, random.randint(10**9, 2 * 10**9)
    throwaway_pg.stop()

    await fails_for_redelivery(h, start_update(user(uid, "Dee")))

    throwaway_pg.start()
    await h.feed(start_update(user(uid, "Dee")))
    assert h.telegram.sent_texts() == ["Hello, Dee! Nice to meet you. Send me anything, or /help."]
    assert await h.count_users(uid) == 1


async def test_a_postgresql_shutting_down_is_retried_not_apologised_for(
    harness_on_throwaway_pg: Harness, throwaway_pg: ThrowawayPostgres
) -> None:
    # Found by tests/e2e (PostgreSQL restarted mid-run) after the move to SQLAlchemy 2.1, which
    # wraps this connect-time error in a plain DBAPIError: the user got an apology and was lost.
    h, uid = harness_on_throwaway_pg, random.randint(10**9, 2 * 10**9)
    session = await asyncpg.connect(throwaway_pg.url().replace("+asyncpg", ""))
    await h.resources.engine.dispose()  # the update must open a connection, as after a restart
    throwaway_pg.begin_smart_shutdown()  # waits for `session`; refuses new connections

    failure = await fails_for_redelivery(h, start_update(user(uid, "Sam")))
    assert "shutting down" in str(failure)

    await session.close()  # the server now finishes stopping
    throwaway_pg.stop()
    throwaway_pg.start()
    await h.feed(start_update(user(uid, "Sam")))
    assert h.telegram.sent_texts() == ["Hello, Sam! Nice to meet you. Send me anything, or /help."]
    assert await h.count_users(uid) == 1


async def test_a_bug_in_a_handler_is_apologised_for_and_not_retried(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    async def broken(*_: object, **__: object) -> None:
        calls.append(1)
        msg = "boom"
        raise ZeroDivisionError(msg)

    monkeypatch.setattr("bot.services.users.UserService.register", broken)
    update = start_update(user(random.randint(10**9, 2 * 10**9)))
    await harness.feed(update)
    await harness.feed(update)  # Telegram's redelivery (it missed our answer): not run again
    assert harness.telegram.sent_texts() == [
        "Sorry, something went wrong on my side. Please try again later."
    ]
    assert calls == [1]


async def test_telegram_refusing_the_reply_is_not_retried(harness: Harness) -> None:
    harness.telegram.script(
        "sendMessage",
        Scripted(
            403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"}
        ),
    )
    await harness.feed(message_update(user(random.randint(10**9, 2 * 10**9)), "hi"))
    # One refused reply; no retry and no apology (which would be refused too).
    assert len(harness.telegram.calls_to("sendMessage")) == 1


def test_retryable_classification() -> None:
    assert is_retryable(OperationalError("SELECT 1", {}, ConnectionRefusedError()))
    assert is_retryable(ConnectionResetError())
    dropped = DBAPIError("SELECT 1", {}, ConnectionError(), connection_invalidated=True)
    assert is_retryable(dropped)
    assert not is_retryable(DBAPIError("SELECT 1", {}, ValueError()))  # a bad statement
    assert not is_retryable(ValueError("bug"))
    assert not is_retryable(KeyError("bug"))


def test_a_restarting_postgresql_is_retryable() -> None:
    # Both were seen by tests/e2e (PostgreSQL restarted mid-run) and answered with an apology.
    assert is_retryable(CannotConnectNowError("the database system is starting up"))
    assert is_retryable(AdminShutdownError("terminating connection due to administrator command"))
    closed = ConnectionDoesNotExistError("connection was closed in the middle of operation")
    assert is_retryable(DBAPIError("INSERT", {}, closed, connection_invalidated=True))
    assert not is_retryable(DBAPIError("INSERT", {}, ValueError("bug")))
    assert not is_retryable(UniqueViolationError("duplicate key"))


async def test_an_update_done_before_redis_lost_its_keys_is_not_processed_again(
    make_harness: MakeHarness, throwaway_redis: ThrowawayRedis, pg_migrated_url: str
) -> None:
    # Found by tests/e2e: Redis restarted empty, Telegram redelivered acknowledged updates, and
    # each was answered a second time. The ledger is in PostgreSQL now: Redis down, then back
    # empty, changes nothing about what is done.
    replicas = [
        await make_harness(database_url=pg_migrated_url, redis_url=throwaway_redis.url)
        for _ in range(2)
    ]
    update = message_update(user(random.randint(10**9, 2 * 10**9)), "once, please")
    await replicas[0].feed(update)
    throwaway_redis.stop()
    await replicas[1].feed(update)  # the other replica, Redis down
    throwaway_redis.start()  # empty
    assert await replicas[1].resources.cache.ping() is True
    await replicas[1].feed(update)
    await replicas[0].feed(update)
    assert len(replicas[0].telegram.calls_to("sendMessage")) == 1
