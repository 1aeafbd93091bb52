"""The dedup middleware called directly with a stub handler, as aiogram's own tests do, over a
real ledger (a SQLite file; tests/integration/test_ledger.py runs it on PostgreSQL).

Each step of a claim's life is checked where it happens: from inside the handler (processing,
short expiry), and after it (done for a day, released, done on a bug).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from bot.db.ledger import DONE_TTL_SECONDS, PROCESSING, Claim, UpdateLedger, epoch_ms
from bot.db.models import Base, UpdateClaim
from bot.db.scope import DataScope
from bot.errors import UpdateInProgressError
from bot.middlewares.dedup import DeduplicationMiddleware
from bot.middlewares.observer import UPDATE_INFO_KEY, UpdateInfo
from bot.tenant import Tenant

UPDATE = Update(update_id=1)
DEADLINE = 30.0
Handler = Any


@pytest.fixture
async def scope(tmp_path: Path) -> AsyncIterator[DataScope]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all, tables=[UpdateClaim.__table__])
    yield DataScope(engine)
    await engine.dispose()


@pytest.fixture
def data(scope: DataScope) -> dict[str, Any]:
    return {"tenant": Tenant(name="p", bot_id=11, namespace="p", data=scope)}


@pytest.fixture
def ledger() -> UpdateLedger:
    return UpdateLedger("sqlite")


def middleware(ledger: UpdateLedger, wait: float = 1.0) -> DeduplicationMiddleware:
    return DeduplicationMiddleware(ledger=ledger, deadline=DEADLINE, wait=wait)


async def entry(scope: DataScope, update_id: int = 1, bot_id: int = 11) -> tuple[str, float] | None:
    """The update's ledger row as (state, seconds until it expires), or None."""
    claims = UpdateClaim.__table__
    query = select(claims.c.state, claims.c.expires_at - epoch_ms()).where(
        claims.c.bot_id == bot_id, claims.c.update_id == update_id
    )
    async with scope.statement() as connection:
        row = (await connection.execute(query)).one_or_none()
    return None if row is None else (row[0], row[1] / 1000)


async def until_started(task: asyncio.Task[Any], started: asyncio.Event) -> None:
    """Waits for the handler to start, or fails at once if the middleware ended without it
    (waiting for the event alone would hang the test on that bug)."""
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if not started.is_set():
        task.result()  # the middleware's own error, if it raised
        raise AssertionError("the middleware returned without running the handler")


async def seed(scope: DataScope, update_id: int, state: str, expires_in: float) -> None:
    """An entry written as another process would have, without this ledger's own prune."""
    values = {"bot_id": 11, "update_id": update_id, "state": state,
              "expires_at": epoch_ms() + int(expires_in * 1000)}  # fmt: skip
    async with scope.statement() as connection:
        await connection.execute(insert(UpdateClaim.__table__).values(values))


async def test_the_claim_is_processing_while_the_handler_runs_then_done(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    seen: list[tuple[str, float] | None] = []

    async def handler(event: Any, _data: dict[str, Any]) -> str:
        assert event is UPDATE  # the update itself goes on to the handlers
        seen.append(await entry(scope))
        return "handled"

    assert await middleware(ledger)(handler, UPDATE, data) == "handled"
    [(state, expires_in)] = seen
    # A short expiry while it runs (a crashed worker's claim lapses soon), past the deadline.
    assert state == PROCESSING
    assert DEADLINE < expires_in <= DEADLINE + 30
    after = await entry(scope)
    assert after is not None
    assert after[0] == "done"
    assert DONE_TTL_SECONDS - 60 < after[1] <= DONE_TTL_SECONDS


async def test_second_delivery_is_skipped(ledger: UpdateLedger, data: dict[str, Any]) -> None:
    calls = []

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        calls.append(1)
        return "handled"

    dedup = middleware(ledger)
    assert await dedup(handler, UPDATE, data) == "handled"
    assert await dedup(handler, UPDATE, data) is None
    assert calls == [1]


async def test_a_skipped_duplicate_is_marked_for_the_observer(
    ledger: UpdateLedger, data: dict[str, Any]
) -> None:
    """The observer's log line and metrics tell a duplicate from a handled update by this flag."""

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        return "handled"

    dedup = middleware(ledger)
    first = UpdateInfo(update_type="message")
    await dedup(handler, UPDATE, {**data, UPDATE_INFO_KEY: first})
    assert first.duplicate is False
    again = UpdateInfo(update_type="message")
    with capture_logs() as logs:
        assert await dedup(handler, UPDATE, {**data, UPDATE_INFO_KEY: again}) is None
    assert again.duplicate is True
    # The line docs/observability.md lists for it.
    assert "update_duplicate_skipped" in [entry["event"] for entry in logs]


async def test_a_failed_done_mark_still_returns_the_result_and_is_logged(
    scope: DataScope, data: dict[str, Any]
) -> None:
    """The update was processed: it is answered all the same, and the warning docs/observability.md
    lists says why a redelivery may run it again."""

    class NoDoneMark(UpdateLedger):
        async def done(self, claim: Claim) -> None:
            raise OperationalError("UPDATE", {}, ConnectionRefusedError())

    async def handler(_event: Any, _data: dict[str, Any]) -> str:
        return "handled"

    with capture_logs() as logs:
        assert await middleware(NoDoneMark("sqlite"))(handler, UPDATE, data) == "handled"
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e.get("error")) for e in warnings] == [
        ("update_done_mark_failed", "OperationalError")
    ]


async def test_retryable_failure_releases_the_claim_and_the_redelivery_runs(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    calls = []

    async def broken_once(_event: Any, _data: dict[str, Any]) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError())
        return "handled"

    dedup = middleware(ledger)
    with pytest.raises(OperationalError):
        await dedup(broken_once, UPDATE, data)
    assert await entry(scope) is None
    assert await dedup(broken_once, UPDATE, data) == "handled"
    assert calls == [1, 1]


async def test_a_bug_is_final(ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]) -> None:
    calls = []

    async def buggy(_event: Any, _data: dict[str, Any]) -> None:
        calls.append(1)
        raise ZeroDivisionError

    dedup = middleware(ledger)
    with pytest.raises(ZeroDivisionError):
        await dedup(buggy, UPDATE, data)
    state = await entry(scope)
    assert state is not None
    assert state[0] == "done"
    assert await dedup(buggy, UPDATE, data) is None  # the redelivery: acknowledged, not rerun
    assert calls == [1]


async def test_cancellation_releases_the_claim(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    started = asyncio.Event()

    async def slow(_event: Any, _data: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(middleware(ledger)(slow, UPDATE, data))
    await until_started(task, started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await entry(scope) is None


async def test_a_claim_held_too_long_elsewhere_is_in_progress(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    assert await ledger.claim(scope, 11, 1, ttl=60) is not None  # another replica's, alive

    async def handler(_event: Any, _data: dict[str, Any]) -> None:
        raise AssertionError

    with pytest.raises(UpdateInProgressError):
        await middleware(ledger, wait=0.1)(handler, UPDATE, data)
    state = await entry(scope)
    assert state is not None
    assert state[0] == PROCESSING  # still the other worker's


class CountingLedger(UpdateLedger):
    """Counts the state reads a waiting redelivery makes (each one a database round trip)."""

    reads = 0

    async def state(self, scope: DataScope, bot_id: int, update_id: int) -> str | None:
        self.reads += 1
        return await super().state(scope, bot_id, update_id)


async def test_a_redelivery_waits_between_reads_of_a_claim_held_elsewhere(
    scope: DataScope, data: dict[str, Any]
) -> None:
    """While another worker holds the claim, the wait sleeps between reads, longer each time:
    a slow update's redeliveries must not hammer the database. Over 1 s the growing interval
    allows about seven reads; polling without the sleep, or with a shrinking one, makes
    hundreds."""
    ledger = CountingLedger("sqlite")
    assert await ledger.claim(scope, 11, 1, ttl=60) is not None  # another replica's, alive

    async def handler(_event: Any, _data: dict[str, Any]) -> None:
        raise AssertionError

    with pytest.raises(UpdateInProgressError):
        await middleware(ledger, wait=1.0)(handler, UPDATE, data)
    assert 2 <= ledger.reads <= 12


async def test_a_crashed_workers_claim_lapses_and_the_redelivery_runs(
    ledger: UpdateLedger, data: dict[str, Any], scope: DataScope
) -> None:
    assert await ledger.claim(scope, 11, 1, ttl=-1) is not None  # its expiry has passed
    calls = []

    async def handler(_event: Any, _data: dict[str, Any]) -> None:
        calls.append(1)

    await middleware(ledger, wait=0.1)(handler, UPDATE, data)
    assert calls == [1]


async def test_the_deadline_releases_the_claim_so_the_update_comes_back(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    async def hangs(_event: Any, _data: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    dedup = DeduplicationMiddleware(ledger=ledger, deadline=0.05)
    task = asyncio.create_task(dedup(hangs, UPDATE, data))
    # Bounded so a deadline that never fires fails here instead of hanging the run.
    done, _ = await asyncio.wait({task}, timeout=10)
    task.cancel()
    assert task in done, "the deadline did not end the handler"
    with pytest.raises(TimeoutError):
        await task
    assert await entry(scope) is None


async def test_the_deadline_starts_when_the_claim_is_won(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    await ledger.claim(scope, 11, 1, ttl=1.2)  # a dead worker's claim, expiring

    async def takes_a_while(_event: Any, _data: dict[str, Any]) -> str:
        await asyncio.sleep(0.2)
        return "handled"

    # 1.2 s of waiting, then 0.2 s of work: within a 1 s deadline only if it starts late.
    dedup = DeduplicationMiddleware(ledger=ledger, deadline=1.0, wait=3.0)
    assert await dedup(takes_a_while, UPDATE, data) == "handled"


async def test_a_late_release_leaves_a_newer_claim_alone(
    ledger: UpdateLedger, scope: DataScope
) -> None:
    stale = await ledger.claim(scope, 11, 1, ttl=-1)  # lapsed while its worker was stuck
    fresh = await ledger.claim(scope, 11, 1, ttl=60)  # another worker's, since
    assert stale is not None
    assert fresh is not None
    await ledger.release(stale)
    state = await entry(scope)
    assert state is not None
    assert state[0] == PROCESSING
    await ledger.release(fresh)
    assert await entry(scope) is None


async def test_update_ids_are_per_bot(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    """Bot A's update 1 done must not make bot B's update 1 a duplicate (one host, many bots,
    or a bot file given another bot's token)."""
    calls = []

    async def handler(_event: Any, handler_data: dict[str, Any]) -> None:
        calls.append(handler_data["tenant"].name)

    dedup = middleware(ledger)
    other = {"tenant": Tenant(name="q", bot_id=12, namespace="p:q", data=scope)}
    await dedup(handler, UPDATE, data)
    await dedup(handler, UPDATE, other)
    await dedup(handler, UPDATE, other)
    assert calls == ["p", "q"]
    state = await entry(scope, bot_id=12)
    assert state is not None
    assert state[0] == "done"


async def test_the_prune_removes_expired_entries_only(
    ledger: UpdateLedger, scope: DataScope
) -> None:
    await seed(scope, 1, PROCESSING, expires_in=-1)  # a crashed worker's, lapsed
    await seed(scope, 2, "done", expires_in=-1)  # past its day
    await seed(scope, 3, "done", expires_in=60)
    await seed(scope, 4, PROCESSING, expires_in=60)
    assert await ledger.prune(scope) == 2
    assert await entry(scope, 1) is None
    assert await entry(scope, 2) is None
    assert await entry(scope, 3) is not None
    assert await entry(scope, 4) is not None


async def test_the_bot_prunes_its_ledger_by_itself(
    ledger: UpdateLedger, scope: DataScope, data: dict[str, Any]
) -> None:
    await seed(scope, 7, "done", expires_in=-1)  # an entry past its day

    async def handler(_event: Any, _data: dict[str, Any]) -> None:
        return None

    await middleware(ledger)(handler, UPDATE, data)
    # The prune runs beside the first claim, in the background.
    for _ in range(100):
        if await entry(scope, 7) is None:
            break
        await asyncio.sleep(0.01)
    assert await entry(scope, 7) is None


async def test_concurrent_claims_in_one_process_are_won_once(
    ledger: UpdateLedger, scope: DataScope
) -> None:
    # One round may carry the same update twice (Telegram's concurrent redeliveries).
    won = await asyncio.gather(*(ledger.claim(scope, 11, 1, ttl=60) for _ in range(5)))
    assert sum(claim is not None for claim in won) == 1
