"""Alembic: the head matches the models, and concurrent upgrades are safe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.db.migrations import current_revision, head_revision, upgrade_to_head
from bot.db.models import Base
from bot.db.schema import SCHEMA_REVISION, schema_revision


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, Base.metadata))


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(
    request: pytest.FixtureRequest, make_pg_database: Callable[[], str], tmp_path: Path
) -> str:
    if request.param == "postgres":
        return make_pg_database()
    return f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"


async def test_head_matches_the_models(empty_database: str) -> None:
    engine = create_async_engine(empty_database, poolclass=NullPool)
    try:
        before, after = await upgrade_to_head(engine)
        assert (before, after) == (None, head_revision())
        async with engine.connect() as connection:
            assert await connection.run_sync(_diff) == []
            columns = await connection.run_sync(
                lambda c: {col["name"]: col for col in inspect(c).get_columns("users")}
            )
        assert "BIGINT" in str(columns["telegram_id"]["type"]).upper()
    finally:
        await engine.dispose()


def test_the_code_expects_the_alembic_head() -> None:
    # Readiness compares the database with SCHEMA_REVISION; a new migration must move it too.
    assert head_revision() == SCHEMA_REVISION


async def test_schema_revision_reads_what_alembic_wrote(empty_database: str) -> None:
    engine = create_async_engine(empty_database, poolclass=NullPool)
    try:
        assert await schema_revision(engine) is None
        await upgrade_to_head(engine)
        assert await schema_revision(engine) == SCHEMA_REVISION
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent(empty_database: str) -> None:
    engine = create_async_engine(empty_database, poolclass=NullPool)
    try:
        await upgrade_to_head(engine)
        assert await upgrade_to_head(engine) == (head_revision(), head_revision())
    finally:
        await engine.dispose()


async def test_concurrent_migrations_on_postgres_queue_on_the_advisory_lock(
    make_pg_database: Callable[[], str],
) -> None:
    url = make_pg_database()
    engines = [create_async_engine(url, poolclass=NullPool) for _ in range(4)]
    try:
        results = await asyncio.gather(*(upgrade_to_head(e) for e in engines))
        head = head_revision()
        # Exactly one run did the work; the others waited on the lock and found nothing to do.
        assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str)
        assert await current_revision(engines[0]) == head
    finally:
        for engine in engines:
            await engine.dispose()
