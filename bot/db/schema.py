"""Which schema revision the code expects, which one the database has, and the gate between.

The running bot never imports Alembic (0.6 s and 3 MiB per process): it reads Alembic's own
`alembic_version` table and compares it with KNOWN_REVISIONS, which a test holds equal to the
linear history of migrations/. Only `migrate` and the embedded SQLite upgrade load Alembic.

A revision the code does not know was written by a newer release: after a rollback the previous
version runs on the newer schema, which the migration policy keeps backwards compatible (add
first, drop in a later release), so such a schema is served, with a warning (`schema_ahead`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

import structlog
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.scope import DataScope
from bot.errors import SchemaNotReadyError

log = structlog.get_logger(__name__)

# Every revision of migrations/, oldest first: the last one is the head this code migrates to.
KNOWN_REVISIONS: tuple[str, ...] = ("0001", "0002", "0003")
SCHEMA_REVISION = KNOWN_REVISIONS[-1]
SCHEMA_POLL_SECONDS = 2.0


async def schema_revision(engine: AsyncEngine, schema: str | None = None) -> str | None:
    """The revision of the database (or of a bot's `schema` in it); None: never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_revision, schema)


def _revision(connection: Connection, schema: str | None) -> str | None:
    if not inspect(connection).has_table("alembic_version", schema=schema):
        return None
    table = "alembic_version"
    if schema is not None:
        table = f"{connection.dialect.identifier_preparer.quote(schema)}.{table}"
    return connection.execute(text(f"SELECT version_num FROM {table}")).scalar()  # noqa: S608


SchemaState = Literal["head", "behind", "ahead"]


def schema_state(current: str | None) -> SchemaState:
    """Where the database's revision stands against the code (None: never migrated)."""
    if current == SCHEMA_REVISION:
        return "head"
    if current is None or current in KNOWN_REVISIONS:
        return "behind"
    return "ahead"


class SchemaGate:
    """Opens once the database is at SCHEMA_REVISION or ahead of it, and stays open.

    No update is processed on a schema behind the code; one ahead of it (a newer release's
    migrations, then a rollback) is compatible by policy and served. The long-running modes
    start with the gate closed rather than exit: on a first install the migration Job runs
    beside the Pod, which then turns ready without a restart. Once open it is never re-checked
    per update (a database that goes away later fails its updates as retryable, and /readyz
    reports it).
    """

    def __init__(self, scope: DataScope) -> None:
        self.scope = scope
        self.reason = "schema not checked yet"
        self.state: SchemaState | None = None  # None until observed
        self._open = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def observe(self) -> str | None:
        """The current revision (raises when the database is unreachable); opens at head."""
        current = await schema_revision(self.scope.engine, self.scope.schema)
        state = schema_state(current)
        if state == "ahead" and self.state != "ahead":
            # Once per gate, not per probe: the kubelet asks every few seconds.
            where = {"schema": self.scope.schema} if self.scope.schema else {}  # a host's bot
            log.warning(
                "schema_ahead",
                current=current,
                head=SCHEMA_REVISION,
                reason="the database was migrated by a newer release; served as compatible",
                **where,
            )
        self.state = state
        if state != "behind":
            self._open.set()
        else:
            self.reason = (
                f"database schema is at {current}, code expects {SCHEMA_REVISION}: "
                "run `python -m bot migrate`"
            )
        return current

    async def check(self) -> bool:
        """Observe once; an unreachable database is a closed gate with the reason kept."""
        try:
            await self.observe()
        except Exception as exc:  # any failure to reach the database: try again later
            self.reason = f"database unreachable: {type(exc).__name__}"
        return self.is_open

    def require_open(self) -> None:
        """For the one-shot modes (chat), which have nobody to wait for."""
        if not self.is_open:
            raise SchemaNotReadyError(self.reason)

    async def wait_open(self, interval: float = SCHEMA_POLL_SECONDS) -> None:
        """Returns once the schema is at head (or ahead), checking every `interval` seconds."""
        if self.is_open:
            return
        log.warning("schema_not_ready", reason=self.reason)
        while not await self.check():
            # A /readyz that saw the head opens the gate and wakes this wait early.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._open.wait()
        log.info("schema_ready", revision=SCHEMA_REVISION, state=self.state)
