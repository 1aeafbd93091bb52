"""The webhook server: aiogram's aiohttp integration plus probes, metrics and a graceful drain.

Updates are answered after they are processed (never fire-and-forget): 200 when done or already
done, 5xx when a retry can succeed (Telegram then redelivers), 4xx for input that never will.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, nullcontext
from typing import Any

import structlog
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramUnauthorizedError
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import ValidationError

from bot.app import BotApp, assemble
from bot.config import Settings
from bot.db.schema import SchemaGate
from bot.lifecycle import ServerState, settle_heap, until_signalled
from bot.observability.metrics import WEBHOOK_REQUESTS
from bot.observability.webhook_info import WebhookInfoCollector, watch_webhook
from bot.retry_policy import is_retryable
from bot.serving.probes import MAX_BODY_BYTES, create_probe_app, start_http
from bot.tenant import Tenant, working_for

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret

# Admission of an authenticated update (the bot host's fair share): True when it may go on.
Admission = Callable[[], AbstractAsyncContextManager[bool]]


# `\ud800`-`\udfff` escapes: JSON may spell half a surrogate pair, no text can hold one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(body: bytes) -> Any:
    """The body as Telegram sends it: JSON in UTF-8 whose strings are text. A lone surrogate
    (a valid escape, but no character) would parse, then fail the update when the database or
    the Bot API encodes the name or text that carries it; it is malformed input (ValueError)."""
    data = json.loads(body.decode("utf-8"))
    if _SURROGATE_ESCAPE.search(body):  # rare: the full check only then
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    return data


def _answer(status: int, **body: Any) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response(body or {"ok": status == 200}, status=status, headers=headers)


class WebhookHandler(SimpleRequestHandler):
    """aiogram's request handler, processing in the request (``handle_in_background=False``)."""

    def __init__(
        self,
        *,
        dispatcher: Dispatcher,
        bot: Bot,
        secret: str,
        schema: SchemaGate,
        state: ServerState,
        tenant: Tenant,
        read_timeout: float,
        admission: Admission | None = None,
    ) -> None:
        # `tenant` goes into the data of every update this handler feeds (`self.data`).
        super().__init__(
            dispatcher=dispatcher,
            bot=bot,
            handle_in_background=False,
            secret_token=secret,
            tenant=tenant,
        )
        self.schema = schema
        self.state = state
        self.read_timeout = read_timeout
        self.admission = admission or (lambda: nullcontext(True))

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

    def _refusal(self, request: web.Request) -> web.Response | None:
        """Answers decided before the body is read: nothing from a stranger is parsed."""
        if not self.verify_secret(request.headers.get(SECRET_HEADER, ""), self.bot):
            return _answer(401, error="wrong or missing secret token")
        if self.state.draining:
            return _answer(503, error="shutting down")
        if not self.schema.is_open:
            # Processed on a schema behind the code, the update would fail for good; Telegram
            # redelivers it once the migration is done.
            return _answer(503, error="database schema not migrated")
        return None

    async def _answer(self, request: web.Request) -> web.Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        # Only now, authenticated, does the update count against its bot's share.
        async with self.admission() as admitted:
            if not admitted:
                return _answer(503, error="too many updates in flight for this bot")
            return await self._read_and_process(request)

    async def _read_and_process(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await request.read()
        except TimeoutError:
            # Its connection goes too (aiohttp then reads the rest for at most LINGER_SECONDS).
            response = _answer(408, error="body not received in time")
            response.force_close()
            return response
        except web.HTTPRequestEntityTooLarge:
            return _answer(413, error=f"body over {MAX_BODY_BYTES} bytes")
        except ConnectionError:  # the client hung up mid-body: nobody reads this answer
            return _answer(400, error="incomplete body")
        try:
            update = Update.model_validate(parse_json(body), context={"bot": self.bot})
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


def create_app(app: BotApp, *, state: ServerState) -> web.Application:
    """The webhook route plus the probes and /metrics."""
    web_app = create_probe_app(resources=app.resources, schema=app.schema, state=state)
    WebhookHandler(
        dispatcher=app.dp,
        bot=app.bot,
        secret=app.settings.require_webhook_secret(),
        schema=app.schema,
        state=state,
        tenant=app.tenant,
        read_timeout=app.settings.request_read_timeout_seconds,
    ).register(web_app, path=app.settings.webhook_path)
    return web_app


async def register_webhook(
    bot: Bot, *, url: str, secret: str, dp: Dispatcher, schema: SchemaGate, settings: Settings
) -> bool:
    """setWebhook once the schema is at head (until then every delivery would be refused),
    retried with backoff while Telegram is unreachable. False when Telegram refuses the token
    (revoked): retrying cannot help."""
    await schema.wait_open()
    delay = 1.0
    while True:
        try:
            await bot.set_webhook(
                url=url,
                secret_token=secret,
                allowed_updates=dp.resolve_used_update_types(),
                max_connections=settings.webhook_max_connections,
                drop_pending_updates=False,
            )
        except TelegramUnauthorizedError:
            log.error("webhook_registration_refused", url=url, error="token refused")
            return False
        except Exception as exc:  # retried below; the server keeps serving meanwhile
            log.warning("webhook_registration_failed", error=type(exc).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
        else:
            log.info("webhook_registered", url=url)
            return True


def start_webhook(
    app: BotApp, stack: AsyncExitStack, *, registry: CollectorRegistry = REGISTRY
) -> None:
    """setWebhook, then Telegram's view of delivery on /metrics (bot.observability.webhook_info),
    in the background until `stack` closes."""
    settings = app.settings
    collector = WebhookInfoCollector()
    registry.register(collector)
    stack.callback(registry.unregister, collector)

    async def register_then_watch() -> None:
        accepted = await register_webhook(
            app.bot,
            url=settings.webhook_url + settings.webhook_path,
            secret=settings.require_webhook_secret(),
            dp=app.dp,
            schema=app.schema,
            settings=settings,
        )
        if not accepted:  # a refused token: getWebhookInfo would be refused the same way
            return
        # Watched from registration on: before it, Telegram still has the previous URL.
        await watch_webhook(
            app.bot,
            name=app.tenant.name,
            expected_url=settings.webhook_url + settings.webhook_path,
            collector=collector,
            interval=settings.webhook_info_interval_seconds,
        )

    task = asyncio.create_task(register_then_watch())
    stack.callback(task.cancel)


async def run_server(settings: Settings) -> None:
    settings.require_token()
    settings.require_webhook_secret()
    async with assemble(settings) as app, AsyncExitStack() as stack:
        working_for.set(app.tenant.name)
        state = ServerState()
        await start_http(
            create_app(app, state=state), host=settings.host, port=settings.port, stack=stack
        )
        log.info(
            "server_started", host=settings.host, port=settings.port, path=settings.webhook_path
        )
        # Until the schema is at head, /readyz says why and updates are answered 503.
        if settings.webhook_url:
            start_webhook(app, stack)
        else:
            task = asyncio.create_task(app.schema.wait_open())
            stack.callback(task.cancel)
        settle_heap()
        await until_signalled()
        state.stop_accepting()
        await state.drain(settings.shutdown_grace_seconds)
