"""The per-bot object: what differs between the bots one process serves.

Every mode hands one to the Dispatcher with each update (`feed_update(..., tenant=...)`, or
`start_polling(..., tenant=...)`), so middlewares and services take it from handler data instead
of a global: `serve`, `poll` and `chat` have one, the bot host one per bot.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from bot.db.scope import DataScope

# The name of the bot the current task works for, for what bots share but is counted per bot
# (the Bot API session's metrics): set for each update by the observer, for the whole process by
# `serve`, `poll` and `chat`, and by each of the host's bots in its own tasks. Empty elsewhere.
working_for: ContextVar[str] = ContextVar("working_for", default="")


@dataclass(frozen=True, slots=True)
class Tenant:
    """One bot's identity and namespace; nothing in it is secret."""

    name: str
    """The project's name (`PROJECT_NAME`), or the bot's file name in the host."""
    bot_id: int
    """The number before the colon of the bot's token: public, it is the bot's user id."""
    namespace: str
    """Prefix of every cache key of this bot (update claims, cached profiles)."""
    data: DataScope
    """Where its rows live, and how a unit of work reaches them."""

    def key(self, *parts: str | int) -> str:
        """A cache key of this bot's, e.g. ``hello-bot:update:42``."""
        return ":".join((self.namespace, *map(str, parts)))
