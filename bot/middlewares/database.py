"""One AsyncSession per update (committed when the handler succeeds, rolled back otherwise) and
the services handlers use."""

from __future__ import annotations

from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.cache import Cache
from bot.middlewares import NextHandler
from bot.services.users import UserService


class DatabaseMiddleware(BaseMiddleware):
    """Injects ``session`` and ``user_service``.

    Registered as an inner middleware, so it runs only once a handler has matched; the session
    takes a pooled connection only when a handler first touches it.
    """

    def __init__(
        self, *, sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine, cache: Cache
    ) -> None:
        self.sessionmaker = sessionmaker
        self.user_service = UserService(engine=engine, cache=cache)

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        async with self.sessionmaker() as session, session.begin():
            data["session"] = session
            data["user_service"] = self.user_service
            return await handler(event, data)
