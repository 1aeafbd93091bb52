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


class PacingBacklogError(HelloBotError):
    """A reply would wait for Telegram's pacing longer than the update may; worth retrying in
    `retry_after` seconds, when enough of the messages queued ahead of it have gone."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many replies queued ahead; retry in {retry_after:.1f}s")
        self.retry_after = retry_after
