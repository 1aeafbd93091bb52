"""One AsyncSession per update: committed when the handler succeeds, rolled back otherwise."""

from __future__ import annotations

from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.cache import Cache
from bot.middlewares import NextHandler
from bot.services.users import UserService


class DatabaseMiddleware(BaseMiddleware):
    """Injects ``session`` and ``user_service``.

    Registered as an inner middleware, so it runs only once a handler has matched; the session
    takes a pooled connection only when a handler first touches the database.
    """

    def __init__(self, *, sessionmaker: async_sessionmaker[AsyncSession], cache: Cache) -> None:
        self.sessionmaker = sessionmaker
        self.cache = cache

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        async with self.sessionmaker() as session, session.begin():
            data["session"] = session
            data["user_service"] = UserService(session=session, cache=self.cache)
            return await handler(event, data)
