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
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import BigInteger, Delete, Select, TextClause, bindparam, delete, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.functions import FunctionElement

from bot.db.batches import Batches
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
Write = tuple[int, int, int]
"""(bot_id, update_id, time to live in milliseconds): one row a round writes."""


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
    """Claims, finishes and releases updates; one per process, shared by its bots.

    Claims and done marks of concurrent updates go out together (bot.db.batches): one pooled
    connection, one statement and one commit per round on PostgreSQL, whatever its size.
    """

    def __init__(self, dialect: str) -> None:
        self._dialect = dialect
        self._claim = _claim_statement(dialect, PROCESSING)
        self._done = _claim_statement(dialect, DONE, unconditional=True)
        self._state = _state_statement()
        self._release = _release_statement()
        self._prune = delete(_claims).where(_claims.c.expires_at < epoch_ms())
        self._pruned_at: dict[int, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._claims: Batches[DataScope, Write, Claim | None] = Batches(
            self._claim_round, orphan=self._release_orphan
        )
        self._dones: Batches[DataScope, Write, int | None] = Batches(self._done_round)

    async def claim(
        self, scope: DataScope, bot_id: int, update_id: int, ttl: float
    ) -> Claim | None:
        """The claim for `ttl` seconds, or None when a live one (processing elsewhere, or done)
        holds the update. Atomic across replicas: the insert and the takeover of a lapsed row
        are one statement on the primary key."""
        self._maybe_prune(scope, bot_id)
        return await self._claims.submit(scope, (bot_id, update_id, int(ttl * 1000)))

    async def state(self, scope: DataScope, bot_id: int, update_id: int) -> str | None:
        """PROCESSING, DONE, or None when no live row holds the update."""
        async with scope.statement() as connection:
            result = await connection.execute(
                self._state, {"bot_id": bot_id, "update_id": update_id}
            )
            return result.scalar()

    async def done(self, claim: Claim) -> None:
        """Marks the update done for a day (written even if the row lapsed meanwhile)."""
        row = (claim.bot_id, claim.update_id, int(DONE_TTL_SECONDS * 1000))
        await self._dones.submit(claim.scope, row)

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

    async def _claim_round(self, scope: DataScope, rows: list[Write]) -> list[Claim | None]:
        """Each row's claim, or None; a row repeated in the round loses after its first (one
        statement may not take a row twice, and the first holds it if anyone can)."""
        first: dict[tuple[int, int], int] = {}
        for bot_id, update_id, ttl in rows:
            first.setdefault((bot_id, update_id), ttl)
        won = await self._write(scope, [(*key, ttl) for key, ttl in first.items()], claim=True)
        claims: list[Claim | None] = []
        seen: set[tuple[int, int]] = set()
        for bot_id, update_id, _ in rows:
            token = None if (bot_id, update_id) in seen else won.get((bot_id, update_id))
            seen.add((bot_id, update_id))
            claims.append(None if token is None else Claim(scope, bot_id, update_id, token))
        return claims

    async def _done_round(self, scope: DataScope, rows: list[Write]) -> list[int | None]:
        unique = list({(bot_id, update_id): ttl for bot_id, update_id, ttl in rows}.items())
        written = await self._write(scope, [(*key, ttl) for key, ttl in unique], claim=False)
        return [written.get((bot_id, update_id)) for bot_id, update_id, _ in rows]

    async def _write(
        self, scope: DataScope, rows: list[Write], *, claim: bool
    ) -> dict[tuple[int, int], int]:
        """Writes the rows (distinct keys) as claims, or as done marks; returns the expires_at
        of those it wrote, by key. PostgreSQL: one statement over arrays. SQLite: one per row,
        over one connection (it has no arrays, and its writes are local)."""
        written: dict[tuple[int, int], int] = {}
        async with scope.statement() as connection:
            if self._dialect == "postgresql":
                bot_ids, update_ids, ttls = (list(column) for column in zip(*rows, strict=True))
                batch = _batch_statement(claim)
                params = {"bot_ids": bot_ids, "update_ids": update_ids, "ttls": ttls}
                for bot_id, update_id, token in await connection.execute(batch, params):
                    written[bot_id, update_id] = token
                return written
            statement = self._claim if claim else self._done
            for bot_id, update_id, ttl in rows:
                params = {"bot_id": bot_id, "update_id": update_id, "ttl_ms": ttl}
                token = (await connection.execute(statement, params)).scalar()
                if token is not None:
                    written[bot_id, update_id] = token
        return written

    def _release_orphan(self, _scope: DataScope, claim: Claim | None) -> None:
        """A claim won for an update whose worker was cancelled meanwhile (shutdown): given
        back, so the redelivery need not wait for it to lapse."""
        if claim is not None:
            self._spawn(self.release(claim))

    async def _delete(self, claim: Claim) -> None:
        params = {"bot_id": claim.bot_id, "update_id": claim.update_id, "token": claim.token}
        async with claim.scope.statement() as connection:
            await connection.execute(self._release, params)

    async def _release_later(self, claim: Claim) -> None:
        # Our clock against the database's: a skew only makes the retries stop a bit early or
        # late; the claim lapses at its own time regardless.
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

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
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


@functools.cache
def _batch_statement(claim: bool) -> TextClause:
    """PostgreSQL's round: the claim (or, with `claim` False, the done mark) for many rows in
    one statement over arrays, RETURNING the rows it wrote. The same conditions as
    `_claim_statement`: a claim takes only a row that is absent or expired."""
    now = "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)"
    state = PROCESSING if claim else DONE
    condition = f"WHERE update_claims.expires_at <= {now}" if claim else ""
    return text(
        f"""INSERT INTO update_claims (bot_id, update_id, state, expires_at)
        SELECT b, u, '{state}', {now} + t
        FROM unnest(CAST(:bot_ids AS BIGINT[]), CAST(:update_ids AS BIGINT[]),
                    CAST(:ttls AS BIGINT[])) AS rows (b, u, t)
        WHERE true
        ON CONFLICT (bot_id, update_id) DO UPDATE
        SET state = excluded.state, expires_at = excluded.expires_at
        {condition}
        RETURNING bot_id, update_id, expires_at"""  # noqa: S608 - constants only
    )


def _key() -> ColumnElement[bool]:
    return (_claims.c.bot_id == bindparam("bot_id")) & (
        _claims.c.update_id == bindparam("update_id")
    )


def _state_statement() -> Select[tuple[str]]:
    return select(_claims.c.state).where(_key(), _claims.c.expires_at > epoch_ms())


def _release_statement() -> Delete:
    return delete(_claims).where(
        _key(), _claims.c.state == PROCESSING, _claims.c.expires_at == bindparam("token")
    )
