"""Composition root: shared resources, the Bot, the Dispatcher with routers and middlewares."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.cache import Cache, create_redis
from bot.config import Settings
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.schema import SCHEMA_REVISION, schema_revision
from bot.errors import SchemaNotReadyError
from bot.handlers import common, errors, start
from bot.middlewares.database import DatabaseMiddleware
from bot.middlewares.dedup import DeduplicationMiddleware
from bot.middlewares.observability import HandlerNameMiddleware, UpdateObserverMiddleware
from bot.observability.tracing import start_tracing
from bot.outbound import FloodControlMiddleware, RetryMiddleware, pin_response_models

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    """Process-wide resources, opened once at start-up and closed once at shutdown."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
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
    provider = await start_tracing(
        settings, stack, engine=engine, redis=redis, exporter=span_exporter
    )
    return Resources(
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        cache=Cache(prefix=settings.project_name, redis=redis),
        tracer_provider=provider,
    )


async def prepare_schema(settings: Settings, engine: AsyncEngine) -> None:
    """The embedded SQLite database upgrades itself; PostgreSQL must be migrated by `migrate`."""
    if settings.is_sqlite:
        from bot.db.migrations import upgrade_to_head  # noqa: PLC0415 - see bot.db.schema

        before, after = await upgrade_to_head(engine)
        if before != after:
            log.info("schema_upgraded", before=before, after=after)
        return
    current = await schema_revision(engine)
    if current != SCHEMA_REVISION:
        msg = (
            f"database schema is at {current}, code expects {SCHEMA_REVISION}: "
            "run `python -m bot migrate`"
        )
        raise SchemaNotReadyError(msg)


def create_bot(settings: Settings, *, session: BaseSession | None = None) -> Bot:
    if session is None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    # Flood control first (outermost): a retry re-enters make_request below it, so retries are
    # not paced twice; Telegram's own retry_after governs those.
    session.middleware(
        FloodControlMiddleware(
            global_rate=settings.telegram_rate_limit, chat_rate=settings.telegram_chat_rate_limit
        )
    )
    session.middleware(RetryMiddleware())
    pin_response_models()
    return Bot(
        token=settings.require_token(),
        session=session,
        # No parse mode: replies carry entities, so user-supplied text is never parsed as markup.
        default=DefaultBotProperties(parse_mode=None, link_preview_is_disabled=True),
    )


def create_dispatcher(
    settings: Settings, *, resources: Resources, deduplicate: bool = True
) -> Dispatcher:
    """The same Dispatcher serves webhook, polling and console; only `deduplicate` differs (the
    console numbers its updates from 1 on every run, and nothing redelivers them)."""
    dp = Dispatcher(name=settings.project_name)
    # Outer on update, in this order: the observer first, so every update (duplicates, unwanted
    # and failed ones included) gets its log context, metrics and canonical line; then dedup,
    # so a duplicate is skipped before any filter or handler runs.
    dp.update.outer_middleware(
        UpdateObserverMiddleware(
            tracer=trace.get_tracer("bot", tracer_provider=resources.tracer_provider)
        )
    )
    if deduplicate:
        dp.update.outer_middleware(
            DeduplicationMiddleware(cache=resources.cache, deadline=settings.update_timeout_seconds)
        )
    database = DatabaseMiddleware(
        sessionmaker=resources.sessionmaker, engine=resources.engine, cache=resources.cache
    )
    for observer in (dp.message, dp.edited_message):
        # Inner: run only after a handler matched, so unmatched updates cost no session.
        observer.middleware(HandlerNameMiddleware())
        observer.middleware(database)
    # Order matters: the errors router first (it sees errors from all), the catch-all last.
    dp.include_routers(errors.create_router(), start.create_router(), common.create_router())
    return dp
