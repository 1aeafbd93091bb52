"""Fixtures shared by every test layer: databases, Redis, the fake Bot API, settings."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.harness import drop_keys_after
from bot.config import Settings
from bot.db.migrations import upgrade_to_head
from tests.support.fake_telegram import FakeTelegram

# The machine's services (trust auth); override to point the suite elsewhere.
POSTGRES_ADMIN_DSN = os.environ.get(
    "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_TOKEN = "123456789:AAHtestTOKENthatMustNeverBeLogged_xyz123"
TEST_SECRET = "test-webhook-secret_0123456789"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _create_database(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop_database(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def _run_sync(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on a private loop in a thread: works from sync fixtures and from inside async tests."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def database_url(name: str) -> str:
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator[Callable[[], str]]:
    """Creates empty PostgreSQL databases named for this run; drops them all at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"hb_test_{uuid.uuid4().hex[:12]}"
        _run_sync(_create_database(name))
        created.append(name)
        return database_url(name)

    yield make
    for name in created:
        _run_sync(_drop_database(name))


@pytest.fixture(scope="session")
def pg_migrated_url(make_pg_database: Callable[[], str]) -> str:
    """One database per test run, migrated to head once (tests use unique Telegram ids)."""
    url = make_pg_database()

    async def migrate() -> None:
        engine = create_async_engine(url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()

    _run_sync(migrate())
    return url


@pytest.fixture
def project_name() -> str:
    """A fresh key namespace in the shared Redis for each test."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_cleanup(project_name: str) -> AsyncIterator[None]:
    async with drop_keys_after(REDIS_URL, project_name):
        yield


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def make_settings(fake_telegram: FakeTelegram, project_name: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bot_token": TEST_TOKEN,
            "telegram_api_url": fake_telegram.url,
            "project_name": project_name,
            # Flood control paces replies in real time; its own tests switch it on.
            "telegram_rate_limit": 0,
            "telegram_chat_rate_limit": 0,
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make
