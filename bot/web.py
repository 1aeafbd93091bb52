"""The webhook server: aiogram's aiohttp integration plus probes, metrics and a graceful drain.

Updates are answered after they are processed (never fire-and-forget): 200 when done or already
done, 5xx when a retry can succeed (Telegram then redelivers), 4xx for input that never will.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler
from pydantic import ValidationError

from bot.app import Resources, create_bot, create_dispatcher, open_resources, prepare_schema
from bot.config import Settings
from bot.db.schema import SCHEMA_REVISION, schema_revision
from bot.lifecycle import ServerState, settle_heap, until_signalled
from bot.observability.metrics import DB_POOL_IN_USE, READY, WEBHOOK_REQUESTS
from bot.retry_policy import is_retryable

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
READINESS_TIMEOUT_SECONDS = 2.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret


def _answer(status: int, **body: Any) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response(body or {"ok": status == 200}, status=status, headers=headers)


class WebhookHandler(SimpleRequestHandler):
    """aiogram's request handler, processing in the request (``handle_in_background=False``)."""

    def __init__(
        self, *, dispatcher: Dispatcher, bot: Bot, secret: str, state: ServerState
    ) -> None:
        super().__init__(
            dispatcher=dispatcher, bot=bot, handle_in_background=False, secret_token=secret
        )
        self.state = state

    async def close(self) -> None:
        """The bot session outlives the app (it is closed after the drain), so nothing here."""

    def verify_secret(self, telegram_secret_token: str, bot: Bot) -> bool:
        # As bytes: compare_digest raises on non-ASCII str, which turned a stranger's header into
        # a 500 instead of a 401.
        return secrets.compare_digest(
            telegram_secret_token.encode(errors="surrogateescape"), self.secret_token.encode()
        )

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._answer(request)
        WEBHOOK_REQUESTS.labels(str(response.status)).inc()
        return response

    async def _answer(self, request: web.Request) -> web.Response:
        # The secret is checked before the body is read: nothing from a stranger is parsed.
        if not self.verify_secret(request.headers.get(SECRET_HEADER, ""), self.bot):
            return _answer(401, error="wrong or missing secret token")
        if self.state.draining:
            return _answer(503, error="shutting down")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, error=f"body over {MAX_BODY_BYTES} bytes")
        except ConnectionError:  # the client hung up mid-body: nobody reads this answer
            return _answer(400, error="incomplete body")
        try:
            update = Update.model_validate(json.loads(body), context={"bot": self.bot})
        except (ValueError, RecursionError, ValidationError):
            return _answer(400, error="body is not a Telegram Update")
        with self.state.track():
            return await self._process(update)

    async def _process(self, update: Update) -> web.Response:
        try:
            # The deadline (UPDATE_TIMEOUT_SECONDS) is the dedup middleware's: it starts when the
            # update is claimed, after any wait for a concurrent redelivery (at most 5 s).
            await self.dispatcher.feed_update(self.bot, update, **self.data)
        except TimeoutError:
            log.warning("update_deadline_exceeded", update_id=update.update_id)
            return _answer(503, error="deadline exceeded")
        except Exception as exc:
            if is_retryable(exc):
                return _answer(503, error="temporarily unavailable")
            log.exception("update_crashed", update_id=update.update_id)
            return _answer(500, error="internal error")
        return _answer(200)


def create_app(
    settings: Settings, *, bot: Bot, dp: Dispatcher, resources: Resources, state: ServerState
) -> web.Application:
    """The webhook route plus the probes and /metrics."""
    app = create_probe_app(resources=resources, state=state)
    WebhookHandler(
        dispatcher=dp,
        bot=bot,
        secret=settings.require_webhook_secret(),
        state=state,
    ).register(app, path=settings.webhook_path)
    return app


def create_probe_app(*, resources: Resources, state: ServerState) -> web.Application:
    """/healthz, /readyz and /metrics: served in webhook and polling mode alike."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def healthz(_request: web.Request) -> web.Response:
        # Answering at all proves the process and its event loop work; nothing external is asked.
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        checks, ready = await readiness(resources, state)
        READY.set(1 if ready else 0)
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler())
    pool = resources.engine.sync_engine.pool
    DB_POOL_IN_USE.set_function(lambda: float(getattr(pool, "checkedout", lambda: 0)()))
    return app


async def readiness(resources: Resources, state: ServerState) -> tuple[dict[str, Any], bool]:
    checks: dict[str, Any] = {}
    ready = True
    if state.draining:
        checks["shutdown"] = {"status": "draining"}
        ready = False
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            current = await schema_revision(resources.engine)
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = {"status": "error", "error": type(exc).__name__}
        ready = False
    else:
        checks["database"] = {"status": "ok"}
        head = SCHEMA_REVISION
        at_head = current == head
        checks["schema"] = {
            "status": "ok" if at_head else "behind",
            "current": current,
            "head": head,
        }
        ready = ready and at_head
    cache = resources.cache
    if cache.redis is None:
        checks["redis"] = {"status": "disabled"}
    else:
        # Redis down is degraded, not unready: the memory fallback keeps updates flowing.
        checks["redis"] = {"status": "ok" if await cache.ping() else "degraded"}
    return checks, ready


async def register_webhook(settings: Settings, bot: Bot, dp: Dispatcher) -> None:
    """setWebhook, retried with backoff until Telegram accepts it (it may be unreachable now)."""
    url = settings.webhook_url + settings.webhook_path
    delay = 1.0
    while True:
        try:
            await bot.set_webhook(
                url=url,
                secret_token=settings.require_webhook_secret(),
                allowed_updates=dp.resolve_used_update_types(),
                max_connections=settings.webhook_max_connections,
                drop_pending_updates=False,
            )
        except Exception as exc:  # retried below; the server keeps serving meanwhile
            log.warning("webhook_registration_failed", error=type(exc).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        else:
            log.info("webhook_registered", url=url)
            return


async def run_server(settings: Settings) -> None:
    settings.require_token()
    settings.require_webhook_secret()
    async with AsyncExitStack() as stack:
        resources = await open_resources(settings, stack)
        try:
            await prepare_schema(settings, resources.engine)
        except Exception as exc:  # unreachable or unmigrated: both are the readiness probe's job
            # Serve anyway: /readyz stays 503 until the database is reachable and migrated (on a
            # first install the migration Job runs alongside this Pod).
            log.warning("schema_not_ready", error=str(exc))
        bot = create_bot(settings)
        stack.push_async_callback(bot.session.close)
        dp = create_dispatcher(settings, resources=resources)
        state = ServerState()
        app = create_app(settings, bot=bot, dp=dp, resources=resources, state=state)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.port).start()
        log.info(
            "server_started", host=settings.host, port=settings.port, path=settings.webhook_path
        )
        if settings.webhook_url:
            registration = asyncio.create_task(register_webhook(settings, bot, dp))
            stack.callback(registration.cancel)
        settle_heap()
        await until_signalled()
        state.draining = True
        log.info("shutdown_started", in_flight=state.in_flight)
        drained = await state.wait_idle(settings.shutdown_grace_seconds)
        log.info(
            "shutdown_drained" if drained else "shutdown_grace_expired", in_flight=state.in_flight
        )
