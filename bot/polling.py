"""Long polling: for development, or where Telegram cannot reach a public URL.

The probes and /metrics are served on HOST:PORT as in webhook mode, and SIGTERM drains the same
way: readiness turns 503, no new update is fetched, in-flight ones finish within the grace period.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog
from aiohttp import web

from bot.app import create_bot, create_dispatcher, open_resources, prepare_schema
from bot.config import Settings
from bot.lifecycle import InFlightMiddleware, ServerState, settle_heap, until_signalled
from bot.web import create_probe_app

log = structlog.get_logger(__name__)


async def run_polling(settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        resources = await open_resources(settings, stack)
        await prepare_schema(settings, resources.engine)
        bot = create_bot(settings)
        stack.push_async_callback(bot.session.close)
        state = ServerState()
        dp = create_dispatcher(settings, resources=resources)
        dp.update.outer_middleware(InFlightMiddleware(state))
        runner = web.AppRunner(
            create_probe_app(resources=resources, state=state),
            handle_signals=False,
            access_log=None,
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.port).start()
        # A webhook and getUpdates exclude each other; pending updates are kept, not dropped.
        await bot.delete_webhook(drop_pending_updates=False)
        polling = asyncio.ensure_future(
            dp.start_polling(
                bot,
                allowed_updates=dp.resolve_used_update_types(),
                handle_signals=False,
                close_bot_session=False,
            )
        )
        settle_heap()
        log.info("polling_started", probes_port=settings.port)
        await until_signalled(also=polling)
        state.draining = True
        log.info("shutdown_started", in_flight=state.in_flight)
        if not polling.done():
            await dp.stop_polling()
        await polling
        drained = await state.wait_idle(settings.shutdown_grace_seconds)
        log.info(
            "shutdown_drained" if drained else "shutdown_grace_expired", in_flight=state.in_flight
        )
