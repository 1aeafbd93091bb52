"""Long polling: for development, or where Telegram cannot reach a public URL.

The probes and /metrics are served on HOST:PORT as in webhook mode, and SIGTERM drains the same
way: readiness turns 503, no new update is fetched, in-flight ones finish within the grace period.

No update is dropped. aiogram confirms a batch (the next getUpdates' offset) once every update
of it has been started; at most POLLING_MAX_IN_FLIGHT run at once, so when the limits cannot
send replies as fast as updates come, polling fetches less instead of piling them up. An update
that fails for a reason worth retrying is processed again in-process (bot.delivery.redelivery).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog

from bot.app import BotApp, assemble
from bot.config import Settings
from bot.delivery.redelivery import InProcessRedeliveryMiddleware
from bot.lifecycle import ServerState, settle_heap, until_signalled
from bot.serving.probes import create_probe_app, start_http
from bot.tenant import working_for

log = structlog.get_logger(__name__)


async def run_polling(settings: Settings) -> None:
    settings.require_token()
    state = ServerState()
    redelivery = InProcessRedeliveryMiddleware(state, give_up_after=settings.polling_retry_seconds)
    async with assemble(settings, around=[redelivery]) as app, AsyncExitStack() as stack:
        working_for.set(app.tenant.name)
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
    # No update is fetched before the schema is at head: an update failing on a missing table
    # would only be retried in-process until it was given up. /readyz says why meanwhile.
    await app.schema.wait_open()
    # A webhook and getUpdates exclude each other; pending updates are kept, not dropped.
    await app.bot.delete_webhook(drop_pending_updates=False)
    await app.dp.start_polling(
        app.bot,
        allowed_updates=app.dp.resolve_used_update_types(),
        handle_signals=False,
        close_bot_session=False,
        # The next batch is asked for (confirming this one) only once each of its updates has
        # a slot: backpressure, and an update confirmed is an update started.
        tasks_concurrency_limit=app.settings.polling_max_in_flight,
        tenant=app.tenant,
    )
