"""Which schema revision the code expects, and which one the database has.

The running bot never imports Alembic (0.6 s and 3 MiB per process): it reads Alembic's own
`alembic_version` table and compares it with SCHEMA_REVISION, which a test holds equal to the
head of migrations/. Only `migrate` and the embedded SQLite upgrade load Alembic.
"""

from __future__ import annotations

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA_REVISION = "0001"


async def schema_revision(engine: AsyncEngine) -> str | None:
    """The database's current revision; None for a database that was never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revision)


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
