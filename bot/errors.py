"""The project's exception hierarchy: one root, so callers can catch "ours" precisely."""

from __future__ import annotations

from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class HelloBotError(Exception):
    """Root of every exception hello-bot raises on purpose."""


class ConfigError(HelloBotError):
    """A setting is missing or invalid; the message names the environment variable."""


class SchemaNotReadyError(HelloBotError):
    """The database schema is not at the migration head the code expects."""


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
        ConnectionError,
        TimeoutError,
    )
    return isinstance(exc, retryable)
