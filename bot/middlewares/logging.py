"""Per-update logging context and the one canonical line each update ends with."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.types import TelegramObject, Update

log = structlog.get_logger("bot.updates")

UPDATE_INFO_KEY = "update_info"


@dataclass(slots=True)
class UpdateInfo:
    """Shared between the outer and inner middlewares of one update (data dicts are copied)."""

    update_type: str
    handler: str = "none"


class UpdateLoggingMiddleware(BaseMiddleware):
    """Outer middleware on ``update``: binds update_id/update_type, logs ``update_handled``."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        info = UpdateInfo(update_type=event.event_type)
        data[UPDATE_INFO_KEY] = info
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            update_id=event.update_id, update_type=info.update_type
        )
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await handler(event, data)
            outcome = "unhandled" if result is UNHANDLED else "handled"
            return result
        finally:
            log.info(
                "update_handled",
                handler=info.handler,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )


class HandlerNameMiddleware(BaseMiddleware):
    """Inner middleware: records which handler matched, for logs, metrics and traces."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        info: UpdateInfo | None = data.get(UPDATE_INFO_KEY)
        matched: HandlerObject | None = data.get("handler")
        if info is not None and matched is not None:
            info.handler = matched.callback.__name__
        return await handler(event, data)
