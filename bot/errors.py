"""The project's exception hierarchy: one root, so callers can catch "ours" precisely.

Kept free of heavy imports: the CLI reports configuration errors before loading aiogram.
"""

from __future__ import annotations


class HelloBotError(Exception):
    """Root of every exception hello-bot raises on purpose."""


class ConfigError(HelloBotError):
    """A setting is missing or invalid; the message names the environment variable."""


class SchemaNotReadyError(HelloBotError):
    """The database schema is not at the migration head the code expects."""


class UpdateInProgressError(HelloBotError):
    """Another worker is still processing this update_id; answer 5xx so Telegram asks again."""
