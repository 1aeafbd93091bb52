"""Schema migrations: upgrade to head (serialised by an advisory lock) and head checks."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.bot_stores import provision
from bot.db.schema import SCHEMA_REVISION, schema_state
from bot.db.scope import DataScope

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
# Any constant works as long as every replica and Job agrees on it: "hellobot" in ASCII.
ADVISORY_LOCK_KEY = 0x68656C6C6F626F74


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@cache
def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision, None)


def _current_revision(connection: Connection, schema: str | None) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


async def upgrade_to_head(
    engine: AsyncEngine, scope: DataScope | None = None
) -> tuple[str | None, str | None]:
    """Upgrade the schema (a bot's, with `scope` in the host); returns (before, after).

    A database ahead of the code (a revision it does not know) is left as it is: before == after
    (the caller says so: `log_migrated`, or the schema gate).

    On PostgreSQL the whole upgrade runs in one transaction holding a transaction-level advisory
    lock, so concurrent `migrate` runs (a Job and an operator, two replicas, a host adding a bot)
    queue instead of racing, and the second finds nothing left to do.
    """
    schema = scope.schema if scope is not None else None
    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        if scope is not None and scope.is_isolated:
            await provision(connection, scope)
            # Unqualified names in the revisions (raw SQL included) land in the bot's schema.
            await connection.execute(
                text("SELECT set_config('search_path', :schema, true)"), {"schema": schema}
            )
        before = await connection.run_sync(_current_revision, schema)
        if schema_state(before) == "ahead":
            # A newer release migrated this database, then the code was rolled back (the chart's
            # migration Job runs this on every upgrade). Alembic would fail with "Can't locate
            # revision" and the rollback with it; the schema is compatible by policy, and a
            # downgrade is never automatic: nothing to do.
            await connection.commit()
            return before, before
        await connection.run_sync(_upgrade, schema)
        after = await connection.run_sync(_current_revision, schema)
        await connection.commit()
    return before, after


def log_migrated(before: str | None, after: str | None, **context: str) -> None:
    """The one line `migrate` ends with: what it did, or why it left the database alone."""
    if schema_state(after) == "ahead":
        log.warning(
            "schema_ahead",
            current=after,
            head=SCHEMA_REVISION,
            reason="the database was migrated by a newer release; nothing to migrate",
            **context,
        )
    else:
        log.info("migrated", before=before, after=after, **context)


def _upgrade(connection: Connection, schema: str | None) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["version_table_schema"] = schema
    command.upgrade(config, "head")
