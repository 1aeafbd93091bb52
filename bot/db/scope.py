"""Where one bot's rows live, and the units of work that reach them.

`serve`, `poll` and `chat` have one scope: the database as configured. In the bot host each bot
on PostgreSQL has a schema and a role of its own (bot.db.bot_stores makes them), and every unit of
work runs as that role with that schema first on its search_path. The connection pool is shared,
so the number of connections does not grow with the number of bots.

What the role isolates: our code's mistakes. A query that names another bot's schema, or a
scope handed to the wrong bot's code, is refused by PostgreSQL rather than trusted to be right.
What it does not: code running inside the process. Any statement may `RESET ROLE` and act as
the host's login, which owns every bot's schema of this database (it runs the migrations); the
login being no superuser (the chart's PostgreSQL makes it so) keeps that to this database, not
the whole server. Tenants are kept apart by running only our code, not by this role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

# Both settings end with the transaction (is_local), so a pooled connection never carries one
# bot's role or path into another bot's unit of work. One round trip for both.
_ENTER = text("SELECT set_config('role', :role, true), set_config('search_path', :schema, true)")


@dataclass(frozen=True, slots=True)
class DataScope:
    engine: AsyncEngine
    schema: str | None = None
    """The bot's PostgreSQL schema; None: the database's default (one bot per process)."""
    role: str | None = None
    """The role its units of work run as; None: the login role."""
    sessionmaker: async_sessionmaker[AsyncSession] = field(init=False)
    autocommit: AsyncEngine = field(init=False)

    def __post_init__(self) -> None:
        # Built once per scope: each is an object per call otherwise.
        object.__setattr__(
            self, "sessionmaker", async_sessionmaker(self.engine, expire_on_commit=False)
        )
        # One statement is atomic by itself; autocommit spares BEGIN and COMMIT, two round trips
        # during which the pooled connection is held. The option engine shares the pool.
        object.__setattr__(
            self, "autocommit", self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def is_isolated(self) -> bool:
        return self.role is not None

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one statement: autocommitted, or a transaction under the bot's role."""
        if not self.is_isolated:
            async with self.autocommit.connect() as connection:
                yield connection
            return
        async with self.engine.begin() as connection:
            await self.enter(connection)
            yield connection

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed when the block succeeds, rolled back otherwise."""
        async with self.sessionmaker() as session, session.begin():
            if self.is_isolated:
                await self.enter(await session.connection())
            yield session

    async def enter(self, connection: AsyncConnection) -> None:
        await connection.execute(_ENTER, {"role": self.role, "schema": self.schema})
