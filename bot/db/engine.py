"""One engine per process and the session factory built on it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot.config import Settings


def create_engine(settings: Settings, *, url: str | None = None) -> AsyncEngine:
    """The engine of DATABASE_URL (or of `url`: a host's bot with its own SQLite file)."""
    parsed = make_url(url or settings.database_url.get_secret_value())
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        parsed,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # No pre-ping: it costs a round trip per update. A connection that died with the server
        # fails its update once (answered 5xx, so Telegram redelivers it) and SQLAlchemy then
        # invalidates the whole pool.
        pool_timeout=10,
        # Bounded connect and statement times: a stuck database must fail an update (so Telegram
        # redelivers it) well inside Telegram's 60 s webhook deadline.
        connect_args={
            "timeout": 5,
            "command_timeout": 15,
            "server_settings": {"application_name": settings.project_name},
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the console and a test reader share the file; busy_timeout absorbs brief locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
