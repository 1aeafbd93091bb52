"""For a handler that takes one, the update's AsyncSession: committed when the handler succeeds,
rolled back otherwise."""

from __future__ import annotations

from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.types import TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.middlewares import NextHandler


class SessionMiddleware(BaseMiddleware):
    """Injects ``session`` for handlers that take one; nothing else.

    Registered as an inner middleware, so it runs only once a handler has matched.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        target: HandlerObject | None = data.get("handler")
        if target is not None and not target.varkw and "session" not in target.params:
            # aiogram passes a handler only the data it names, so nobody would see this session;
            # /start, the hottest handler, takes none (its service writes on its own).
            return await handler(event, data)
        async with self.sessionmaker() as session, session.begin():
            data["session"] = session
            return await handler(event, data)
