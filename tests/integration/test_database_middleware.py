"""The update's session: for handlers that take one, committed on success, rolled back on error."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiogram import F
from aiogram.types import Message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bot.db.models import User
from bot.services.users import UserService
from tests.integration.conftest import Harness
from tests.support.updates import message_update, start_update, user


@contextmanager
def count_sessions() -> Iterator[list[Any]]:
    begun: list[Any] = []

    def record(session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            begun.append(session)

    event.listen(Session, "after_transaction_create", record)
    try:
        yield begun
    finally:
        event.remove(Session, "after_transaction_create", record)


def add_user(session: AsyncSession, telegram_id: int) -> None:
    now = datetime.now(UTC)
    session.add(
        User(telegram_id=telegram_id, first_name="Tx", created_at=now, updated_at=now,
             last_seen_at=now)
    )  # fmt: skip


async def test_a_handler_that_takes_a_session_has_its_work_committed(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)

    async def writes(message: Message, session: AsyncSession) -> None:
        add_user(session, uid)
        await message.answer("stored")

    harness.dp.message.register(writes, F.text == "/write")
    await harness.feed(message_update(user(uid), "/write"))
    assert await harness.count_users(uid) == 1


async def test_a_failing_handler_has_its_work_rolled_back(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)

    async def writes_then_fails(_message: Message, session: AsyncSession) -> None:
        add_user(session, uid)
        await session.flush()  # the row is in the database, inside the update's transaction
        raise RuntimeError("handler failed")

    harness.dp.message.register(writes_then_fails, F.text == "/write-fail")
    await harness.feed(message_update(user(uid), "/write-fail"))
    assert await harness.count_users(uid) == 0


async def test_handlers_that_take_no_session_get_none(harness: Harness) -> None:
    uid = random.randint(10**9, 2 * 10**9)
    seen: list[dict[str, Any]] = []

    async def takes_everything(_message: Message, **data: Any) -> None:
        seen.append(data)

    harness.dp.message.register(takes_everything, F.text == "/everything")
    with count_sessions() as sessions:
        await harness.feed(start_update(user(uid, "Lean")))  # start_handler takes no session
        assert sessions == []
        await harness.feed(message_update(user(uid), "/everything"))
        assert len(sessions) == 1
    assert isinstance(seen[0]["session"], AsyncSession)
    assert isinstance(seen[0]["user_service"], UserService)
