"""The bot wired as in production: real Dispatcher, real database and cache, fake Bot API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import BotApp, Resources, assemble
from bot.config import Settings
from bot.db.bot_stores import role_name
from bot.db.models import User
from tests.conftest import REDIS_URL, TEST_SECRET, TEST_TOKEN
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram
from tests.support.servers import ThrowawayPostgres, ThrowawayRedis


@dataclass
class Harness:
    app: BotApp
    telegram: FakeTelegram

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def resources(self) -> Resources:
        return self.app.resources

    @property
    def bot(self) -> Bot:
        return self.app.bot

    @property
    def dp(self) -> Dispatcher:
        return self.app.dp

    async def feed(self, update: dict[str, Any]) -> Any:
        return await self.dp.feed_raw_update(self.bot, update, tenant=self.app.tenant)

    async def user_rows(self, telegram_id: int) -> list[User]:
        async with self.app.tenant.data.sessionmaker() as session:
            result = await session.scalars(select(User).where(User.telegram_id == telegram_id))
            return list(result)

    async def count_users(self, telegram_id: int) -> int:
        async with self.app.tenant.data.sessionmaker() as session:
            query = select(func.count()).select_from(User).where(User.telegram_id == telegram_id)
            return int(await session.scalar(query) or 0)


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_migrated_url"))
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


@pytest.fixture(params=["redis", "memory"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_cleanup")
        return REDIS_URL
    return ""


@pytest.fixture
async def make_harness(
    make_settings: Callable[..., Settings], fake_telegram: FakeTelegram
) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Builds harnesses from settings overrides, through the start-up path every mode takes;
    closes what they opened after the test."""
    async with AsyncExitStack() as stack:

        async def make(*, span_exporter: SpanExporter | None = None, **overrides: Any) -> Harness:
            settings = make_settings(**overrides)
            app = await stack.enter_async_context(assemble(settings, span_exporter=span_exporter))
            return Harness(app, fake_telegram)

        yield make


@pytest.fixture
async def harness(
    make_harness: Callable[..., Awaitable[Harness]], database_url: str, redis_url: str
) -> Harness:
    return await make_harness(database_url=database_url, redis_url=redis_url)


@pytest.fixture
async def host_database(make_pg_database: Callable[[], str]) -> AsyncIterator[str]:
    """A fresh database for bot-host tests; the per-bot roles they make (roles belong to the
    whole cluster, not to the database) are dropped afterwards."""
    url = make_pg_database()
    yield url
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            suffix = role_name(str(engine.url.database), "x").rsplit("@", 1)[1]
            roles = await connection.scalars(
                text("SELECT rolname FROM pg_roles WHERE rolname LIKE :like"),
                {"like": f"bot\\_%@{suffix}"},
            )
            for role in list(roles):
                quoted = connection.dialect.identifier_preparer.quote(role)
                await connection.execute(text(f"DROP OWNED BY {quoted}"))
                await connection.execute(text(f"DROP ROLE {quoted}"))
            await connection.commit()
    finally:
        await engine.dispose()


@pytest.fixture
async def make_bot_process(
    fake_telegram: FakeTelegram,
    pg_migrated_url: str,
    project_name: str,
    redis_cleanup: None,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., BotProcess]]:
    """`python -m bot serve` child processes against the fake Bot API, the run's migrated
    database and Redis; extra settings as keyword arguments; stopped after the test."""
    processes: list[BotProcess] = []

    def make(**env: str) -> BotProcess:
        process = BotProcess(
            {
                "BOT_TOKEN": TEST_TOKEN,
                "WEBHOOK_SECRET": TEST_SECRET,
                "TELEGRAM_API_URL": fake_telegram.url,
                "DATABASE_URL": pg_migrated_url,
                "REDIS_URL": REDIS_URL,
                "PROJECT_NAME": project_name,
                "LOG_FORMAT": "json",
                "TELEGRAM_CHAT_RATE_LIMIT": "0",
                **env,
            },
            cwd=tmp_path,
        )
        processes.append(process)
        return process

    yield make
    for process in processes:
        await process.stop()


@pytest.fixture
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    """A Redis of this test's own, safe to stop (the machine's is shared)."""
    server = ThrowawayRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL of this test's own (initdb on a free port), safe to stop."""
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.destroy()
