"""Composition root: shared resources, the schema policy, the Bot, the Dispatcher with routers
and middlewares, and `assemble`, the one start-up path every mode takes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cache import Cache, create_redis
from bot.config import Settings
from bot.db.bot_stores import bot_namespace, bot_scope
from bot.db.engine import create_engine
from bot.db.ledger import UpdateLedger
from bot.db.schema import SchemaGate
from bot.db.scope import DataScope
from bot.delivery.deadline import DeadlineMiddleware, update_budget
from bot.delivery.outbound import FloodControlMiddleware, RetryMiddleware, pin_response_models
from bot.handlers import common, failures, language, start
from bot.i18n import load_i18n
from bot.middlewares.dedup import DeduplicationMiddleware
from bot.middlewares.locale import LocaleMiddleware
from bot.middlewares.observer import HandlerNameMiddleware, UpdateObserverMiddleware
from bot.middlewares.session import SessionMiddleware
from bot.observability.tracing import BotApiTracing, RedisSpans, start_tracing
from bot.services.users import UserService
from bot.tenant import Tenant

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    """Process-wide resources, opened once at start-up and closed once at shutdown."""

    engine: AsyncEngine
    cache: Cache
    tracer_provider: TracerProvider | None = None


async def open_resources(
    settings: Settings, stack: AsyncExitStack, *, span_exporter: SpanExporter | None = None
) -> Resources:
    """Open the engine, cache and tracing; `stack` closes them in reverse order."""
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    redis = None
    if redis_url := settings.redis_url.get_secret_value():
        redis = create_redis(redis_url)
        stack.push_async_callback(redis.aclose)
    provider = await start_tracing(settings, stack, engine=engine, exporter=span_exporter)
    spans = None
    if provider is not None and redis is not None:
        server = str(redis.connection_pool.connection_kwargs.get("host", ""))
        spans = RedisSpans(trace.get_tracer("bot", tracer_provider=provider), server)
    return Resources(
        engine=engine,
        cache=Cache(redis=redis, spans=spans),
        tracer_provider=provider,
    )


async def prepare_schema(settings: Settings, scope: DataScope) -> SchemaGate:
    """One policy for every mode and every bot: an embedded SQLite database upgrades itself;
    PostgreSQL is migrated by `migrate` (the chart's Job), and the gate stays closed until it
    is."""
    if settings.is_sqlite:
        from bot.db.migrations import upgrade_to_head  # noqa: PLC0415 - see bot.db.schema

        before, after = await upgrade_to_head(scope.engine)
        if before != after:
            log.info("schema_upgraded", before=before, after=after)
    schema = SchemaGate(scope)
    await schema.check()
    return schema


def create_session(
    settings: Settings, tracer_provider: TracerProvider | None = None
) -> BaseSession:
    """The Bot API session: one per process, shared by every bot it serves (connection pool and
    TLS context); flood control keeps a budget per bot, as Telegram counts them."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    # Flood control first (outermost): a retry re-enters make_request below it, so retries are
    # not paced twice; Telegram's own retry_after governs those.
    session.middleware(
        FloodControlMiddleware(
            global_rate=settings.telegram_rate_limit, chat_rate=settings.telegram_chat_rate_limit
        )
    )
    session.middleware(RetryMiddleware())
    if tracer_provider is not None:
        server = urlsplit(settings.telegram_api_url).hostname or ""
        session.middleware(
            BotApiTracing(trace.get_tracer("bot", tracer_provider=tracer_provider), server)
        )
    pin_response_models()
    return session


def create_bot(token: str, session: BaseSession) -> Bot:
    return Bot(
        token=token,
        session=session,
        # No parse mode: replies carry entities, so user-supplied text is never parsed as markup.
        default=DefaultBotProperties(parse_mode=None, link_preview_is_disabled=True),
    )


def update_path(
    settings: Settings, resources: Resources, *, deduplicate: bool
) -> list[BaseMiddleware]:
    """The outer middlewares on `update`, in the order an update passes them (after what a mode
    wraps around it; docs/development.md, "An update's path"):

    1. the observer, so every update (duplicates, unwanted and failed ones included) gets its log
       context, metrics and canonical line;
    2. dedup, so a duplicate is skipped before any filter or handler runs; its own deadline is a
       backstop past the next one and past every paced wait it allows;
    3. the deadline, counted from the claim.

    The console numbers its updates from 1 on every run and nothing redelivers them: no 2 and 3.
    """
    tracer = trace.get_tracer("bot", tracer_provider=resources.tracer_provider)
    path: list[BaseMiddleware] = [UpdateObserverMiddleware(tracer=tracer)]
    if deduplicate:
        deadline = settings.update_timeout_seconds
        ledger = UpdateLedger(resources.engine.dialect.name)
        path.append(DeduplicationMiddleware(ledger=ledger, deadline=update_budget(deadline)))
        path.append(DeadlineMiddleware(deadline))
    return path


def handler_path(locale: LocaleMiddleware) -> list[BaseMiddleware]:
    """The inner middlewares of every event type, in order, once a handler matched (an unmatched
    update costs no session and no language lookup): the handler's name for the log line, the
    language, then the session, held only while the handler runs."""
    return [HandlerNameMiddleware(), locale, SessionMiddleware()]


def create_dispatcher(
    settings: Settings,
    *,
    resources: Resources,
    deduplicate: bool = True,
    around: Sequence[BaseMiddleware] = (),
) -> Dispatcher:
    """The same Dispatcher serves webhook, polling and console; only `deduplicate` differs
    (`update_path`), and what a mode wraps `around` every update (polling: in-flight count and
    in-process redelivery), so that a retry is a whole new pass."""
    # Services are workflow data: built once, and every handler of every update type can ask for
    # them by name (bot.middlewares.HandlerData lists the keys).
    user_service = UserService(dialect=resources.engine.dialect.name, cache=resources.cache)
    dp = Dispatcher(name=settings.project_name, user_service=user_service)
    for middleware in [*around, *update_path(settings, resources, deduplicate=deduplicate)]:
        dp.update.outer_middleware(middleware)
    # Not on `update` (the outer path above): a handler added for a new type gets the same data.
    locale = LocaleMiddleware(load_i18n(), users=user_service)
    inner = handler_path(locale)
    for name, observer in dp.observers.items():
        if name not in {"update", "error"}:
            for middleware in inner:
                observer.middleware(middleware)
    # Errors: only the locale (the apology is translated); no handler of ours ran there to name.
    dp.errors.middleware(locale)
    # Order matters: the failures router first (it sees errors from all), the catch-all last.
    dp.include_routers(
        failures.create_router(),
        start.create_router(),
        language.create_router(),
        common.create_router(),
    )
    return dp


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the bots of a process share: settings, resources and the one Dispatcher."""

    settings: Settings
    resources: Resources
    dp: Dispatcher


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    deduplicate: bool = True,
    around: Sequence[BaseMiddleware] = (),
    span_exporter: SpanExporter | None = None,
) -> AsyncIterator[Runtime]:
    """The start-up every mode shares: resources opened, the Dispatcher built; all closed in
    reverse on exit. `assemble` adds one bot to it; the bot host adds many."""
    async with AsyncExitStack() as stack:
        resources = await open_resources(settings, stack, span_exporter=span_exporter)
        dp = create_dispatcher(
            settings, resources=resources, deduplicate=deduplicate, around=around
        )
        yield Runtime(settings=settings, resources=resources, dp=dp)


@dataclass(frozen=True, slots=True)
class BotApp:
    """What serve, poll and chat run: one bot on the runtime."""

    settings: Settings
    resources: Resources
    dp: Dispatcher
    schema: SchemaGate
    bot: Bot
    tenant: Tenant
    """Handed to the Dispatcher with every update: `dp.feed_update(bot, update, tenant=...)`."""


@asynccontextmanager
async def assemble(
    settings: Settings,
    *,
    bot: Bot | None = None,
    bot_name: str | None = None,
    deduplicate: bool = True,
    around: Sequence[BaseMiddleware] = (),
    span_exporter: SpanExporter | None = None,
) -> AsyncIterator[BotApp]:
    """The start-up path of serve, poll, chat and the tests: the runtime, the schema policy, and
    the Bot (unless given, as the console's is); everything closed in reverse on exit.

    `bot_name` plays one bot of the host (`chat --bot`): its data and keys, not the project's.
    """
    async with (
        open_runtime(
            settings, deduplicate=deduplicate, around=around, span_exporter=span_exporter
        ) as runtime,
        AsyncExitStack() as stack,
    ):
        # One bot per process: its rows are the database's own, its namespace the project's (as
        # the keys always were); or one bot of the host's, exactly as the host keeps it.
        name, namespace = settings.project_name, settings.project_name
        scope = DataScope(runtime.resources.engine)
        if bot_name is not None:
            name, namespace = bot_name, bot_namespace(settings, bot_name)
            scope, own_engine = bot_scope(settings, runtime.resources.engine, bot_name)
            if own_engine:
                stack.push_async_callback(scope.engine.dispose)
        schema = await prepare_schema(settings, scope)
        if bot is None:
            bot = create_bot(
                settings.require_token(),
                create_session(settings, runtime.resources.tracer_provider),
            )
        stack.push_async_callback(bot.session.close)
        tenant = Tenant(name=name, bot_id=bot.id, namespace=namespace, data=scope)
        yield BotApp(
            settings=settings,
            resources=runtime.resources,
            dp=runtime.dp,
            schema=schema,
            bot=bot,
            tenant=tenant,
        )
