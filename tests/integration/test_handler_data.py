"""What handlers receive: services as workflow data for every update type, and the update's
session (for handlers that take one) committed on success, rolled back on error."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiogram import F, Router
from aiogram.types import CallbackQuery, Message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bot.db.models import User
from bot.middlewares import HandlerData
from bot.middlewares.observer import UpdateInfo
from bot.services.users import UserService
from tests.integration.conftest import Harness
from tests.support.updates import message_update, next_update_id, start_update, user


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


def callback_update(from_user: dict[str, Any], data: str) -> dict[str, Any]:
    message = message_update(from_user, "pick one")["message"]
    query = {"id": str(next_update_id()), "from": from_user, "chat_instance": "1", "data": data}
    return {"update_id": next_update_id(), "callback_query": {**query, "message": message}}


async def test_a_handler_on_a_new_update_type_gets_services_session_and_its_name(
    harness: Harness,
) -> None:
    """The trap this guards: services once came from a middleware on `message` only."""
    seen: dict[str, Any] = {}

    async def pick_handler(
        query: CallbackQuery,
        user_service: UserService,
        session: AsyncSession,
        update_info: UpdateInfo,
    ) -> None:
        seen.update(user_service=user_service, session=session, handler=update_info.handler)
        await query.answer("picked")

    router = Router(name="picks")
    router.callback_query.register(pick_handler, F.data == "pick")
    harness.dp.include_router(router)
    await harness.feed(callback_update(user(random.randint(10**9, 2 * 10**9)), "pick"))
    assert isinstance(seen["user_service"], UserService)
    assert isinstance(seen["session"], AsyncSession)
    assert seen["handler"] == "pick_handler"
    assert [call.params["text"] for call in harness.telegram.calls_to("answerCallbackQuery")] == [
        "picked"
    ]


async def test_every_key_a_handler_receives_is_declared_in_handler_data(harness: Harness) -> None:
    seen: list[dict[str, Any]] = []

    async def takes_everything(_message: Message, **data: Any) -> None:
        seen.append(data)

    harness.dp.message.register(takes_everything, F.text == "/keys")
    await harness.feed(message_update(user(random.randint(10**9, 2 * 10**9)), "/keys"))
    declared = HandlerData.__required_keys__ | HandlerData.__optional_keys__
    assert {"user_service", "session", "update_info"} <= set(seen[0])
    assert set(seen[0]) - declared == set()
