"""Each bot of the host keeps its rows apart, and PostgreSQL itself enforces it: a schema and a
role per bot, every unit of work run as the bot's role, over one shared pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.cache import Cache
from bot.db.bot_stores import postgres_scope, sqlite_url
from bot.db.migrations import upgrade_to_head
from bot.db.models import User
from bot.db.schema import SCHEMA_REVISION, SchemaGate, schema_revision
from bot.db.scope import DataScope
from bot.services.users import UserProfile, UserService
from bot.tenant import Tenant


@pytest.fixture
async def engine(host_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(host_database, pool_size=2, max_overflow=0)
    yield engine
    await engine.dispose()


def tenant(name: str, scope: DataScope) -> Tenant:
    return Tenant(name=name, bot_id=hash(name) % 10**6, namespace=f"t:{name}", data=scope)


async def count_users(scope: DataScope) -> int:
    async with scope.session() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def test_each_bot_has_its_own_schema_migrated_to_head(engine: AsyncEngine) -> None:
    shop, news = postgres_scope(engine, "shop"), postgres_scope(engine, "news-2")
    assert (shop.schema, news.schema) == ("bot_shop", "bot_news_2")
    for scope in (shop, news):
        assert await upgrade_to_head(engine, scope) == (None, SCHEMA_REVISION)
        assert await upgrade_to_head(engine, scope) == (SCHEMA_REVISION, SCHEMA_REVISION)
        assert await schema_revision(engine, scope.schema) == SCHEMA_REVISION
        assert await SchemaGate(scope).check() is True
    # The database's own schema is untouched: a single-bot deployment's data is not the host's.
    assert await schema_revision(engine) is None
    assert await SchemaGate(postgres_scope(engine, "later")).check() is False


async def test_a_bot_sees_only_its_own_users(engine: AsyncEngine) -> None:
    shop, news = postgres_scope(engine, "shop"), postgres_scope(engine, "news")
    for scope in (shop, news):
        await upgrade_to_head(engine, scope)
    service = UserService(dialect="postgresql", cache=Cache())
    same_person = UserProfile(telegram_id=42, first_name="Ann")
    assert (await service.register(same_person, tenant=tenant("shop", shop))).is_new
    # The same Telegram user is new to the other bot: nothing of the first bot's is shared.
    assert (await service.register(same_person, tenant=tenant("news", news))).is_new
    assert await count_users(shop) == 1
    await service.register(
        UserProfile(telegram_id=43, first_name="Bo"), tenant=tenant("shop", shop)
    )
    assert (await count_users(shop), await count_users(news)) == (2, 1)


async def test_postgres_refuses_a_bot_the_rows_of_another(engine: AsyncEngine) -> None:
    shop, news = postgres_scope(engine, "shop"), postgres_scope(engine, "news")
    for scope in (shop, news):
        await upgrade_to_head(engine, scope)
    await upgrade_to_head(engine)  # a single-bot deployment's users, in the default schema
    async with shop.statement() as connection:
        assert await connection.scalar(text("SELECT current_user")) == shop.role
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 0
    # Even a statement naming the other bot's table outright, as a bug in our code would.
    with pytest.raises(DBAPIError, match="permission denied"):
        async with shop.statement() as connection:
            await connection.execute(text("SELECT count(*) FROM bot_news.users"))
    with pytest.raises(DBAPIError, match="permission denied"):
        async with shop.session() as session:
            await session.execute(text("SELECT count(*) FROM public.users"))


async def test_the_role_ends_with_the_unit_of_work(engine: AsyncEngine) -> None:
    """A pooled connection must not carry one bot's role into the next checkout."""
    shop = postgres_scope(engine, "shop")
    await upgrade_to_head(engine, shop)
    login = await _current_user(engine)
    async with shop.statement() as connection:
        assert await connection.scalar(text("SELECT current_user")) == shop.role
    assert await _current_user(engine) == login  # pool_size 2: the same connections


async def _current_user(engine: AsyncEngine) -> str:
    async with engine.connect() as connection:
        return str(await connection.scalar(text("SELECT current_user")))


def test_sqlite_bots_get_a_file_each(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hello-bot.db'}"
    assert sqlite_url(url, "shop") == f"sqlite+aiosqlite:///{tmp_path / 'hello-bot.shop.db'}"
    assert sqlite_url("sqlite+aiosqlite://", "shop") == "sqlite+aiosqlite://"
