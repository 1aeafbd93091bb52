"""Which failures are worth retrying: the line between "answer 5xx, Telegram redelivers" and
"report it, retrying cannot help"."""

from __future__ import annotations

from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
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
    )
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        # The connection died mid-statement (server restart, network): SQLAlchemy has
        # invalidated the pool, so the next attempt gets a fresh connection.
        return True
    return isinstance(exc, retryable)
