"""For a handler that takes one, the update's AsyncSession: committed when the handler succeeds,
rolled back otherwise."""

from __future__ import annotations

from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.types import TelegramObject

from bot.middlewares import NextHandler
from bot.tenant import Tenant


class SessionMiddleware(BaseMiddleware):
    """Injects ``session`` for handlers that take one, in the update's bot's data scope.

    Registered as an inner middleware, so it runs only once a handler has matched.
    """

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
        tenant: Tenant = data["tenant"]
        async with tenant.data.session() as session:
            data["session"] = session
            return await handler(event, data)
