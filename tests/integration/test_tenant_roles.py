"""Who makes each hosted bot's role (bot/db/bot_stores.py `provision`), as a login role that is
not a superuser: under the operator the admin makes it and grants it (the login role runs
tenant code and may not create roles, issue 22); without it (the chart's `bot.mode=host`) the
login role makes it itself, with CREATEROLE."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.db.bot_stores import postgres_scope, role_name
from bot.db.migrations import upgrade_to_head
from tests.conftest import POSTGRES_ADMIN_DSN


async def admin(database: str, *statements: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, database=database)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def login(host_database: str) -> AsyncIterator[tuple[str, str]]:
    """A login role (no superuser) that owns the hosts' database: (role, database)."""
    database = str(make_url(host_database).database)
    role = f"hb_login_{uuid.uuid4().hex[:10]}"
    await admin(
        database, f'CREATE ROLE "{role}" LOGIN', f'ALTER DATABASE "{database}" OWNER TO "{role}"'
    )
    yield role, database
    await admin(
        database,
        f'ALTER DATABASE "{database}" OWNER TO CURRENT_USER',
        f'DROP OWNED BY "{role}"',
        f'DROP ROLE "{role}"',
    )


def engine_as(role: str, database: str) -> AsyncEngine:
    url = make_url(POSTGRES_ADMIN_DSN.replace("postgresql://", "postgresql+asyncpg://"))
    return create_async_engine(url.set(username=role, password=None, database=database))


async def migrate_and_switch(role: str, database: str) -> str:
    """`migrate` for the bot `alpha` as the login role; the role a unit of work then runs as."""
    engine = engine_as(role, database)
    try:
        scope = postgres_scope(engine, "alpha")
        await upgrade_to_head(engine, scope)
        async with scope.session() as session:
            return str(await session.scalar(text("SELECT current_user")))
    finally:
        await engine.dispose()


async def test_the_operator_made_role_needs_no_createrole(login: tuple[str, str]) -> None:
    role, database = login
    bot_role = role_name(database, "alpha")
    await admin(database, f'CREATE ROLE "{bot_role}" NOLOGIN', f'GRANT "{bot_role}" TO "{role}"')
    assert await migrate_and_switch(role, database) == bot_role
    assert await migrate_and_switch(role, database) == bot_role  # again: nothing to grant


async def test_without_the_operator_the_login_role_makes_it(login: tuple[str, str]) -> None:
    role, database = login
    await admin(database, f'ALTER ROLE "{role}" CREATEROLE')
    assert await migrate_and_switch(role, database) == role_name(database, "alpha")
