"""Which failures are worth retrying: the line between "answer 5xx, Telegram redelivers" and
"report it, retrying cannot help"."""

from __future__ import annotations

from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from asyncpg.exceptions import OperatorInterventionError, PostgresConnectionError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from bot.errors import PacingBacklogError, SchemaNotReadyError, UpdateInProgressError

# SQLSTATE classes where the same work can succeed later: connection exception (08), transaction
# rollback (40: serialization failure, deadlock), insufficient resources (53: too many
# connections), operator intervention (57: shutting down, starting up, terminated by an admin).
RETRYABLE_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})


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
        PacingBacklogError,
        ConnectionError,
        TimeoutError,
        # Raised unwrapped by asyncpg (SQLAlchemy 2.0 did not wrap errors while connecting):
        # "the database system is starting up" / "shutting down", class 08 and 57.
        PostgresConnectionError,
        OperatorInterventionError,
    )
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            # The connection died mid-statement (server restart, network): SQLAlchemy has
            # invalidated the pool, so the next attempt gets a fresh connection.
            return True
        # SQLAlchemy 2.1 wraps errors raised while connecting in a plain DBAPIError ("the
        # database system is shutting down"); the server's SQLSTATE says what it is.
        sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
        if sqlstate[:2] in RETRYABLE_SQLSTATE_CLASSES:
            return True
    return isinstance(exc, retryable)
