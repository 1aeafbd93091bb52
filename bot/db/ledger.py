"""The exactly-once ledger: one row per update in the bot's own `update_claims` table.

PostgreSQL is required to process an update anyway, so it is the record of which updates are
being processed and which are done, for every replica at once; Redis losing its keys cannot
make an update look new. A row is

- ``processing`` until ``expires_at`` (a short expiry: a crashed worker's claim lapses, and
  Telegram's redelivery is then processed);
- ``done`` for a day once processed (Telegram gives up redelivering within 24 h);
- absent once released (a retryable failure) or pruned (expired).

Times are the database's clock in milliseconds, so replicas whose clocks differ agree on when a
claim lapses. Every statement runs in the bot's data scope: in the bot host, the bot's schema
under its role, so PostgreSQL keeps one bot's claims from every other.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import BigInteger, Delete, Select, bindparam, delete, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.functions import FunctionElement

from bot.db.models import UpdateClaim
from bot.db.scope import DataScope

log = structlog.get_logger(__name__)

PROCESSING, DONE = "processing", "done"
DONE_TTL_SECONDS = 25 * 3600.0
# Expired rows are deleted by the bot itself, at most this often per bot and process, in the
# background of an update: the table holds about a day of updates, whatever the traffic.
PRUNE_INTERVAL_SECONDS = 600.0
RELEASE_RETRY_SECONDS = 1.0

_claims = UpdateClaim.__table__


class epoch_ms(FunctionElement[int]):
    """The database's clock, in milliseconds since the epoch (constant within a statement)."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_ms, "postgresql")
def _epoch_ms_postgresql(_element: epoch_ms, _compiler: SQLCompiler, **_: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)"


@compiles(epoch_ms, "sqlite")
def _epoch_ms_sqlite(_element: epoch_ms, _compiler: SQLCompiler, **_: Any) -> str:
    return "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"


@dataclass(frozen=True, slots=True)
class Claim:
    """A won claim: what it takes to finish or release it."""

    scope: DataScope
    bot_id: int
    update_id: int
    token: int
    """The claim's ``expires_at`` as written: a release deletes the row only while it still
    holds this value, so a late release never drops a claim someone else has won since."""


class UpdateLedger:
    """Claims, finishes and releases updates; one per process, shared by its bots."""

    def __init__(self, dialect: str) -> None:
        self._claim = _claim_statement(dialect, PROCESSING)
        self._done = _claim_statement(dialect, DONE, unconditional=True)
        self._state = _state_statement()
        self._release = _release_statement()
        self._prune = delete(_claims).where(_claims.c.expires_at < epoch_ms())
        self._pruned_at: dict[int, float] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def claim(
        self, scope: DataScope, bot_id: int, update_id: int, ttl: float
    ) -> Claim | None:
        """One round trip: the claim for `ttl` seconds, or None when a live one (processing
        elsewhere, or done) holds the update. Atomic across replicas: the insert and the
        takeover of a lapsed row are one statement on the primary key."""
        self._maybe_prune(scope, bot_id)
        params = {"bot_id": bot_id, "update_id": update_id, "ttl_ms": int(ttl * 1000)}
        async with scope.statement() as connection:
            token = (await connection.execute(self._claim, params)).scalar()
        return None if token is None else Claim(scope, bot_id, update_id, token)

    async def state(self, scope: DataScope, bot_id: int, update_id: int) -> str | None:
        """PROCESSING, DONE, or None when no live row holds the update."""
        async with scope.statement() as connection:
            result = await connection.execute(
                self._state, {"bot_id": bot_id, "update_id": update_id}
            )
            return result.scalar()

    async def done(self, claim: Claim) -> None:
        """Marks the update done for a day (written even if the row lapsed meanwhile)."""
        params = {
            "bot_id": claim.bot_id,
            "update_id": claim.update_id,
            "ttl_ms": int(DONE_TTL_SECONDS * 1000),
        }
        async with claim.scope.statement() as connection:
            await connection.execute(self._done, params)

    async def release(self, claim: Claim) -> None:
        """Gives the update back for its redelivery; never raises. A release that fails (the
        database is what failed, often) is retried in the background until it lands or the
        claim lapses by itself, so the redelivery does not wait out the whole expiry."""
        try:
            await self._delete(claim)
        except Exception as exc:  # any failure: the retries below, or the expiry, finish it
            log.warning("update_release_failed", error=type(exc).__name__)
            self._spawn(self._release_later(claim))

    async def prune(self, scope: DataScope) -> int:
        """Deletes every expired row of the scope; returns how many."""
        async with scope.statement() as connection:
            return (await connection.execute(self._prune)).rowcount

    async def _delete(self, claim: Claim) -> None:
        params = {"bot_id": claim.bot_id, "update_id": claim.update_id, "token": claim.token}
        async with claim.scope.statement() as connection:
            await connection.execute(self._release, params)

    async def _release_later(self, claim: Claim) -> None:
        while time.time() * 1000 < claim.token:
            await asyncio.sleep(RELEASE_RETRY_SECONDS)
            try:
                await self._delete(claim)
            except Exception:  # noqa: S112 - still unreachable: try again, or let it lapse
                continue
            return

    def _maybe_prune(self, scope: DataScope, bot_id: int) -> None:
        now = time.monotonic()
        if now - self._pruned_at.get(bot_id, -PRUNE_INTERVAL_SECONDS) < PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at[bot_id] = now
        self._spawn(self._prune_quietly(scope))

    async def _prune_quietly(self, scope: DataScope) -> None:
        try:
            removed = await self.prune(scope)
        except Exception as exc:  # the next interval tries again; the update is unaffected
            log.warning("update_claims_prune_failed", error=type(exc).__name__)
            return
        log.info("update_claims_pruned", removed=removed)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # a reference, or the loop may drop the task mid-way
        task.add_done_callback(self._background.discard)


@functools.cache
def _claim_statement(
    dialect: str, state: str, *, unconditional: bool = False
) -> ReturningInsert[tuple[int]]:
    """INSERT ... ON CONFLICT DO UPDATE ... RETURNING expires_at, built once per dialect.

    The claim takes the row only where the one in place has expired (WHERE on the conflict
    branch): no row comes back when a live claim or a done mark holds the update. The done mark
    (`unconditional`) always writes.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # noqa: PLC0415
    else:
        from sqlalchemy.dialects.sqlite import insert  # noqa: PLC0415
    statement = insert(_claims).values(
        bot_id=bindparam("bot_id"),
        update_id=bindparam("update_id"),
        state=state,
        expires_at=epoch_ms() + bindparam("ttl_ms"),
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_claims.c.bot_id, _claims.c.update_id],
        set_={"state": excluded.state, "expires_at": excluded.expires_at},
        where=None if unconditional else _claims.c.expires_at <= epoch_ms(),
    ).returning(_claims.c.expires_at)


def _key() -> Any:
    return (_claims.c.bot_id == bindparam("bot_id")) & (
        _claims.c.update_id == bindparam("update_id")
    )


def _state_statement() -> Select[tuple[str]]:
    return select(_claims.c.state).where(_key(), _claims.c.expires_at > epoch_ms())


def _release_statement() -> Delete:
    return delete(_claims).where(
        _key(), _claims.c.state == PROCESSING, _claims.c.expires_at == bindparam("token")
    )
