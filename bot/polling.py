"""Long polling: for development, or where Telegram cannot reach a public URL."""

from __future__ import annotations

from contextlib import AsyncExitStack

import structlog

from bot.app import create_bot, create_dispatcher, open_resources, prepare_schema
from bot.config import Settings

log = structlog.get_logger(__name__)


async def run_polling(settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        resources = await open_resources(settings, stack)
        await prepare_schema(settings, resources.engine)
        bot = create_bot(settings)
        stack.push_async_callback(bot.session.close)
        dp = create_dispatcher(settings, resources=resources)
        # A webhook and getUpdates exclude each other; pending updates are kept, not dropped.
        await bot.delete_webhook(drop_pending_updates=False)
        log.info("polling_started")
        await dp.start_polling(
            bot,
            allowed_updates=dp.resolve_used_update_types(),
            handle_signals=True,
            close_bot_session=False,
        )
