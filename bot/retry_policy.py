"""Which failures are worth retrying: the line between "answer 5xx, Telegram redelivers" and
"report it, retrying cannot help"."""

from __future__ import annotations

from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from asyncpg.exceptions import OperatorInterventionError, PostgresConnectionError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bot.errors import SchemaNotReadyError, UpdateInProgressError


def is_retryable(exc: BaseException) -> bool:
    """True for failures of infrastructure (database, network, Telegram 5xx/429), where
    processing the same update again later can succeed; False for bugs and bad requests."""
    retryable = (
        OperationalError,
        InterfaceError,
        PoolTimeoutError,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
        SchemaNotReadyError,
        UpdateInProgressError,
        ConnectionError,
        TimeoutError,
        # Raised unwrapped by asyncpg while a pooled connection is being opened during a
        # restart: "the database system is starting up" / "shutting down", class 08 and 57.
        PostgresConnectionError,
        OperatorInterventionError,
    )
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        # The connection died mid-statement (server restart, network): SQLAlchemy has
        # invalidated the pool, so the next attempt gets a fresh connection.
        return True
    return isinstance(exc, retryable)
