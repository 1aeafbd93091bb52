"""Long polling: for development, or where Telegram cannot reach a public URL.

The probes and /metrics are served on HOST:PORT as in webhook mode, and SIGTERM drains the same
way: readiness turns 503, no new update is fetched, in-flight ones finish within the grace period.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog

from bot.app import BotApp, assemble
from bot.config import Settings
from bot.lifecycle import InFlightMiddleware, ServerState, settle_heap, until_signalled
from bot.probes import create_probe_app, start_http

log = structlog.get_logger(__name__)


async def run_polling(settings: Settings) -> None:
    settings.require_token()
    async with assemble(settings) as app, AsyncExitStack() as stack:
        state = ServerState()
        app.dp.update.outer_middleware(InFlightMiddleware(state))
        probes = create_probe_app(resources=app.resources, schema=app.schema, state=state)
        await start_http(probes, host=settings.host, port=settings.port, stack=stack)
        polling = asyncio.ensure_future(_poll(app))
        stack.callback(polling.cancel)
        settle_heap()
        log.info("polling_started", probes_port=settings.port)
        await until_signalled(also=polling)
        state.stop_accepting()
        if not polling.done():
            try:
                await app.dp.stop_polling()
            except RuntimeError:  # still waiting for the schema: nothing fetched, nothing lost
                polling.cancel()
        await asyncio.wait({polling})
        if not polling.cancelled():
            polling.result()  # a polling loop that crashed makes the process fail
        await state.drain(settings.shutdown_grace_seconds)


async def _poll(app: BotApp) -> None:
    # No update is fetched before the schema is at head: polling has no redelivery, so an update
    # that failed on a missing table would be lost. /readyz says why meanwhile.
    await app.schema.wait_open()
    # A webhook and getUpdates exclude each other; pending updates are kept, not dropped.
    await app.bot.delete_webhook(drop_pending_updates=False)
    await app.dp.start_polling(
        app.bot,
        allowed_updates=app.dp.resolve_used_update_types(),
        handle_signals=False,
        close_bot_session=False,
        tenant=app.tenant,
    )
