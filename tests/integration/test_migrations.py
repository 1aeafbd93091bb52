"""Alembic: the head matches the models, and concurrent upgrades are safe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from structlog.testing import capture_logs

from bot.db.migrations import alembic_config, current_revision, head_revision, upgrade_to_head
from bot.db.models import Base
from bot.db.schema import KNOWN_REVISIONS, SCHEMA_REVISION, SchemaGate, schema_revision
from bot.db.scope import DataScope


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


def test_the_code_knows_the_whole_linear_history_of_migrations() -> None:
    # The gate tells "behind" (a revision it knows) from "ahead" (one a newer release wrote)
    # with KNOWN_REVISIONS, without Alembic: a new migration must be appended to it.
    script = ScriptDirectory.from_config(alembic_config())
    history = list(script.walk_revisions())  # head first
    assert [len(script.get_heads()), *(len(s.nextrev) for s in history[1:])] == [1] * len(history)
    assert tuple(s.revision for s in reversed(history)) == KNOWN_REVISIONS
    assert KNOWN_REVISIONS[-1] == SCHEMA_REVISION


async def _stamp(engine: AsyncEngine, revision: str) -> None:
    """What a newer release's migration leaves behind, as far as this code can tell."""
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE alembic_version SET version_num = :r"), {"r": revision}
        )


async def test_migrate_leaves_a_database_ahead_of_the_code_alone(empty_database: str) -> None:
    engine = create_async_engine(empty_database, poolclass=NullPool)
    try:
        await upgrade_to_head(engine)
        await _stamp(engine, "0099")
        # Alembic alone raises "Can't locate revision identified by '0099'" here.
        assert await upgrade_to_head(engine) == ("0099", "0099")
        assert await schema_revision(engine) == "0099"
    finally:
        await engine.dispose()


async def test_the_gate_opens_ahead_of_the_code_and_stays_closed_behind_it(
    empty_database: str,
) -> None:
    engine = create_async_engine(empty_database, poolclass=NullPool)
    try:
        await upgrade_to_head(engine)
        await _stamp(engine, KNOWN_REVISIONS[-2])  # a revision the code knows, older than head
        behind = SchemaGate(DataScope(engine))
        assert await behind.check() is False
        assert behind.state == "behind"
        assert f"is at {KNOWN_REVISIONS[-2]}, code expects {SCHEMA_REVISION}" in behind.reason
        await _stamp(engine, "0099")
        ahead = SchemaGate(DataScope(engine))
        with capture_logs() as logs:
            assert await ahead.check() is True
            assert await ahead.check() is True
        assert ahead.state == "ahead"
        # One warning per gate, not one per readiness probe.
        assert [e["event"] for e in logs] == ["schema_ahead"]
        assert (logs[0]["current"], logs[0]["head"]) == ("0099", SCHEMA_REVISION)
    finally:
        await engine.dispose()


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
