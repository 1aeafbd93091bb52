"""The bot host: every bot of BOTS_DIR served by one process (`python -m bot host`).

One runtime (resources, Dispatcher), one Bot API session, and per bot only what Telegram or the
data set apart: its Bot, its secret, its Tenant (key namespace, data scope) and its schema gate.
Bots come and go with their files, without a restart and without touching the others.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiohttp import web
from prometheus_client import REGISTRY

from bot.app import Runtime, create_bot, create_session, open_runtime
from bot.config import Settings
from bot.db.bot_stores import bot_namespace, bot_scope
from bot.db.engine import create_engine
from bot.db.schema import SchemaGate
from bot.hosting.bots_dir import BotEntry, DirScanner, read_bots_dir
from bot.hosting.fair_share import FairShare
from bot.lifecycle import ServerState, settle_heap, until_signalled
from bot.observability.metrics import WEBHOOK_REQUESTS
from bot.observability.webhook_info import WebhookInfoCollector, watch_webhook
from bot.serving.probes import create_probe_app, start_http
from bot.serving.webhook import WebhookHandler, register_webhook
from bot.tenant import Tenant, working_for

log = structlog.get_logger(__name__)

# The contract allows 60 s from a file's change to the bot serving (or answering 404).
RESCAN_SECONDS = 5.0
# Reading a healthy directory takes milliseconds: a scan past this is stuck (a hung mount), and
# /readyz says so while the bots stay as they were.
SCAN_TIMEOUT_SECONDS = 10.0
# One attempt at a bot's schema check (and migration, for a new bot): past it the bot is
# `failed` and tried again in the background, and the host goes on without it.
BOT_START_TIMEOUT_SECONDS = 30.0
# How long an update over its bot's fair share waits for a slot before the 503: with the
# update's own budget (bot.delivery.deadline.update_budget, 51 s) still inside Telegram's 60 s.
ADMISSION_WAIT_SECONDS = 5.0


@dataclass
class HostedBot:
    entry: BotEntry
    bot: Bot
    tenant: Tenant
    webhook: WebhookHandler
    status: str = "serving"
    # Why the last attempt to bring it to head failed (an exception's class name), if it did.
    error: str | None = None
    # Served on a schema a newer release migrated (a rollback): shown in the report.
    schema_ahead: bool = False
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    own_engine: bool = False


class BotHost:
    """The bots of one directory on one runtime; `sync` brings them in line with the files."""

    def __init__(self, runtime: Runtime, *, session: BaseSession, state: ServerState) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.session = session
        self.state = state
        self.bots: dict[int, HostedBot] = {}
        self.problems: dict[str, str] = {}
        self.scanner = DirScanner(self.settings.require_bots_dir())
        self.scan_timeout = SCAN_TIMEOUT_SECONDS
        self.start_timeout = BOT_START_TIMEOUT_SECONDS
        # Until the first scan and the first check of each of its bots are done, not ready:
        # a Pod rolled in must not answer 404 for bots it is still loading.
        self.loaded = False
        self.scan_error: str | None = None
        self._migrating = asyncio.Lock()
        # Telegram's view of each bot's webhook, on /metrics with the bot's name (run_host
        # registers it).
        self.webhook_info = WebhookInfoCollector()
        # A bot alone may hold half the database pool; next to other busy bots, its fair share,
        # but two at least: with one, two updates of one chat arriving together already meet a
        # 503 whenever many bots are active.
        pool = self.settings.db_pool_size + self.settings.db_max_overflow
        self.fair_share = FairShare(max(2, pool // 2), floor=2)
        self.admission_wait = ADMISSION_WAIT_SECONDS

    async def sync(self) -> bool:
        """Brings the bots in line with the files, new bots checked concurrently (each attempt
        bounded). False when the scan did not finish within `scan_timeout`: nothing changes."""
        owners = {bot_id: hosted.entry.name for bot_id, hosted in self.bots.items()}
        snapshot = await self.scanner.scan(owners, wait=self.scan_timeout)
        if snapshot is None:
            return False
        for name, reason in snapshot.problems.items():
            if self.problems.get(name) != reason:
                log.warning("bot_file_invalid", file=name, reason=reason)
        self.problems = snapshot.problems
        current = {hosted.entry.name: hosted for hosted in self.bots.values()}
        for name, hosted in current.items():
            if snapshot.bots.get(name) != hosted.entry:
                await self.remove(hosted)
        added: list[HostedBot] = []
        for name, entry in snapshot.bots.items():
            if name not in current or current[name].entry != entry:
                try:
                    added.append(self.add(entry))
                except Exception as exc:  # this bot is reported; the others still get added
                    log.exception("bot_add_failed", bot=name)
                    self.problems[f"{name}.env"] = f"could not start: {type(exc).__name__}"
        if added:  # all at once, each attempt bounded by `start_timeout`
            await asyncio.wait([hosted.tasks[0] for hosted in added])
        for hosted in added:
            log.info("bot_added", bot=hosted.entry.name, status=hosted.status)
        self.loaded = True
        return True

    def add(self, entry: BotEntry) -> HostedBot:
        """Serves the bot (503 until its data is at head); its first task is the first attempt
        at that."""
        settings = self.settings
        scope, own_engine = bot_scope(settings, self.runtime.resources.engine, entry.name)
        schema = SchemaGate(scope)
        bot = create_bot(entry.token.get_secret_value(), self.session)
        namespace = bot_namespace(settings, entry.name)
        tenant = Tenant(name=entry.name, bot_id=bot.id, namespace=namespace, data=scope)
        webhook = WebhookHandler(
            dispatcher=self.runtime.dp,
            bot=bot,
            secret=entry.secret.get_secret_value(),
            schema=schema,
            state=self.state,
            tenant=tenant,
            admission=lambda: self.fair_share.slot(bot.id, wait=self.admission_wait),
            read_timeout=settings.request_read_timeout_seconds,
        )
        hosted = HostedBot(entry, bot, tenant, webhook, status="pending", own_engine=own_engine)
        self.bots[bot.id] = hosted
        first = asyncio.create_task(self._attempt(hosted, schema))
        hosted.tasks += [first, asyncio.create_task(self._keep_at_head(hosted, schema, first))]
        if settings.webhook_url:
            hosted.tasks.append(asyncio.create_task(self._register(hosted, schema)))
        return hosted

    async def _attempt(self, hosted: HostedBot, schema: SchemaGate) -> bool:
        """One try at bringing the bot to head, each step bounded by `start_timeout`: a
        database that never answers makes this bot `failed`, and keeps nothing else waiting.

        Checked first: a bot already at head loads no Alembic (10 MiB per process, measured by
        benchmarks/density.py). A bot behind it is migrated by the host itself, one at a time
        (Alembic's context is the process's; PostgreSQL also serialises it with any `migrate`).
        """
        try:
            async with asyncio.timeout(self.start_timeout):
                at_head = await schema.check()
            if not at_head:
                async with self._migrating, asyncio.timeout(self.start_timeout):
                    at_head = await _migrate(hosted, schema)
        except Exception as exc:  # this bot is reported and tried again; the others serve
            hosted.status, hosted.error = "failed", type(exc).__name__
            log.warning("bot_start_failed", bot=hosted.entry.name, error=hosted.error)
            return False
        # At head, or ahead of the code (a rollback): served.
        hosted.status, hosted.error = ("serving" if at_head else "schema_behind"), None
        hosted.schema_ahead = schema.state == "ahead"
        return at_head

    async def _keep_at_head(
        self, hosted: HostedBot, schema: SchemaGate, first: asyncio.Task[bool]
    ) -> None:
        delay = 2.0
        at_head = await first
        while not at_head:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            at_head = await self._attempt(hosted, schema)

    async def remove(self, hosted: HostedBot) -> None:
        # Its webhook stays registered: the file may have moved to another host, and Telegram
        # retries what this one answers 404 until the new home serves it.
        self.bots.pop(hosted.tenant.bot_id, None)
        self.fair_share.forget(hosted.tenant.bot_id)
        self.webhook_info.forget(hosted.entry.name)
        for task in hosted.tasks:
            task.cancel()
        if hosted.own_engine:
            await hosted.tenant.data.engine.dispose()
        log.info("bot_removed", bot=hosted.entry.name)

    async def _register(self, hosted: HostedBot, schema: SchemaGate) -> None:
        """setWebhook, then getWebhookInfo every WEBHOOK_INFO_INTERVAL_SECONDS, as `serve` does
        (bot.serving.webhook.start_webhook)."""
        working_for.set(hosted.entry.name)  # this task's own context: its calls are this bot's
        settings = self.settings
        url = f"{settings.webhook_url}{settings.webhook_path}/{hosted.tenant.bot_id}"
        accepted = await register_webhook(
            hosted.bot,
            url=url,
            secret=hosted.entry.secret.get_secret_value(),
            dp=self.runtime.dp,
            schema=schema,
            settings=settings,
        )
        if not accepted:
            hosted.status = "token_refused"
            return
        await watch_webhook(
            hosted.bot,
            name=hosted.entry.name,
            expected_url=url,
            collector=self.webhook_info,
            interval=settings.webhook_info_interval_seconds,
        )

    async def run(self, interval: float = RESCAN_SECONDS) -> None:
        """Loads the bots (listening already), then follows the directory every `interval` s."""
        settled = False
        while True:
            if await self._rescan() and not settled:
                log.info("host_loaded", bots=len(self.bots))
                settle_heap()  # start-up is over: its objects are permanent
                settled = True
            await asyncio.sleep(interval)

    async def _rescan(self) -> bool:
        try:
            scanned = await self.sync()
        except Exception as exc:  # a bad moment must not stop the host; /readyz tells
            log.exception("bots_dir_sync_failed")
            self.scan_error = type(exc).__name__
            return False
        if not scanned:
            log.warning("bots_dir_scan_stalled", seconds=round(self.scanner.running_for()))
        self.scan_error = None
        return scanned

    async def close(self) -> None:
        for hosted in list(self.bots.values()):
            await self.remove(hosted)

    def scan_report(self) -> dict[str, Any]:
        """The directory itself, for /readyz: anything but `ok` makes the host not ready."""
        if (seconds := self.scanner.running_for()) > self.scan_timeout:
            return {"status": "stalled", "seconds": int(seconds)}
        if self.scan_error is not None:
            return {"status": "error", "error": self.scan_error}
        return {"status": "ok" if self.loaded else "loading"}

    def report(self) -> dict[str, Any]:
        """Per bot and per invalid file, for /readyz (names only: nothing secret)."""
        report: dict[str, Any] = {}
        for hosted in self.bots.values():
            entry: dict[str, Any] = {"status": hosted.status, "id": hosted.tenant.bot_id}
            if hosted.status == "failed":
                entry["error"] = hosted.error
            if hosted.schema_ahead:
                # Still "serving" (what the operator's pickup reads); this says why it warned.
                entry["schema"] = "ahead"
            report[hosted.entry.name] = entry
        for name, reason in self.problems.items():
            report[name] = {"status": "invalid", "error": reason}
        return report

    async def handle(self, request: web.Request) -> web.Response:
        """POST {WEBHOOK_PATH}/{bot_id}: the bot's own webhook handler, or 404."""
        hosted = self.bots.get(_bot_id(request.match_info["bot_id"]))
        if hosted is None:
            WEBHOOK_REQUESTS.labels("404").inc()
            return web.json_response({"error": "no such bot"}, status=404)
        # Its secret is checked before its fair share is asked (WebhookHandler.admission).
        return await hosted.webhook.handle(request)


async def _migrate(hosted: HostedBot, schema: SchemaGate) -> bool:
    from bot.db.migrations import upgrade_to_head  # noqa: PLC0415 - see BotHost._attempt

    scope = hosted.tenant.data
    try:
        await upgrade_to_head(scope.engine, scope)
    except Exception as exc:  # this bot waits and is retried; the others serve
        log.warning("bot_migration_failed", bot=hosted.entry.name, error=type(exc).__name__)
    return await schema.check()


def _bot_id(text: str) -> int:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else -1


def create_host_app(host: BotHost) -> web.Application:
    runtime = host.runtime
    app = create_probe_app(
        resources=runtime.resources,
        schema=None,
        state=host.state,
        bots=host.report,
        bots_dir=host.scan_report,
    )
    app.router.add_post(runtime.settings.webhook_path.rstrip("/") + "/{bot_id}", host.handle)
    return app


async def run_host(settings: Settings) -> None:
    settings.require_bots_dir()
    async with open_runtime(settings) as runtime, AsyncExitStack() as stack:
        session = create_session(settings, runtime.resources.tracer_provider)
        stack.push_async_callback(session.close)
        host = BotHost(runtime, session=session, state=ServerState())
        stack.push_async_callback(host.close)
        REGISTRY.register(host.webhook_info)
        stack.callback(REGISTRY.unregister, host.webhook_info)
        # Listening first: /healthz answers while the bots load, whatever the database does.
        await start_http(
            create_host_app(host),
            host=settings.host,
            port=settings.port,
            stack=stack,
        )
        log.info("host_started", port=settings.port)
        loader = asyncio.create_task(host.run())
        stack.callback(loader.cancel)
        await until_signalled()
        host.state.stop_accepting()
        await host.state.drain(settings.shutdown_grace_seconds)


async def migrate_bots(settings: Settings) -> None:
    """`migrate` with BOTS_DIR: every bot's data to head (safe to run beside a host doing it)."""
    from bot.db.migrations import (  # noqa: PLC0415 - only migrate needs Alembic
        log_migrated,
        upgrade_to_head,
    )

    snapshot = read_bots_dir(settings.require_bots_dir())
    for name, reason in snapshot.problems.items():
        log.warning("bot_file_invalid", file=name, reason=reason)
    engine = create_engine(settings)
    try:
        for name in snapshot.bots:
            scope, own_engine = bot_scope(settings, engine, name)
            try:
                before, after = await upgrade_to_head(scope.engine, scope)
            finally:
                if own_engine:
                    await scope.engine.dispose()
            log_migrated(before, after, bot=name)
    finally:
        await engine.dispose()
