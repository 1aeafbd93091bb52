"""In-process redelivery (polling), called directly with stub handlers and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from aiogram.types import Update
from sqlalchemy.exc import OperationalError

from bot.delivery.redelivery import InProcessRedeliveryMiddleware
from bot.errors import PacingBacklogError
from bot.lifecycle import ServerState

UPDATE = Update(update_id=1)
OUTAGE = OperationalError("SELECT 1", {}, ConnectionRefusedError())


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing_then_ok(*errors: Exception) -> Any:
    queue = list(errors)
    seen: list[dict[str, Any]] = []

    async def handler(_event: Any, data: dict[str, Any]) -> str:
        seen.append(data)
        data["left_behind"] = True  # what an attempt's middlewares leave in its data
        if queue:
            raise queue.pop(0)
        return "done"

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def redelivery(time: FakeTime, state: ServerState | None = None) -> InProcessRedeliveryMiddleware:
    return InProcessRedeliveryMiddleware(
        state or ServerState(), give_up_after=60, sleep=time.sleep, clock=time.clock
    )


async def test_a_retryable_failure_is_processed_again_after_a_backoff() -> None:
    time = FakeTime()
    handler = failing_then_ok(OUTAGE, TimeoutError())
    assert await redelivery(time)(handler, UPDATE, {"tenant": "t"}) == "done"
    assert len(handler.seen) == 3
    assert len(time.slept) == 2
    assert time.slept[1] > time.slept[0] * 0.5  # grows (jittered): 0.25-0.75 s, then 0.5-1.5 s


async def test_each_attempt_gets_fresh_data() -> None:
    time = FakeTime()
    handler = failing_then_ok(OUTAGE)
    await redelivery(time)(handler, UPDATE, {"tenant": "t"})
    first, second = handler.seen
    assert first is not second
    assert "left_behind" in first


async def test_a_bug_is_not_retried() -> None:
    time = FakeTime()
    handler = failing_then_ok(ZeroDivisionError())
    with pytest.raises(ZeroDivisionError):
        await redelivery(time)(handler, UPDATE, {})
    assert len(handler.seen) == 1
    assert time.slept == []


async def test_a_pacing_backlog_is_retried_when_the_queue_will_have_gone() -> None:
    time = FakeTime()
    handler = failing_then_ok(PacingBacklogError(retry_after=7.5))
    assert await redelivery(time)(handler, UPDATE, {}) == "done"
    assert time.slept == [7.5]


async def test_retrying_is_bounded_in_time() -> None:
    time = FakeTime()
    handler = failing_then_ok(*[OUTAGE] * 1000)
    with pytest.raises(OperationalError):
        await redelivery(time)(handler, UPDATE, {})
    assert sum(time.slept) <= 60
    assert 5 < len(handler.seen) < 20  # backed off (capped at 30 s), not hammered


async def test_the_update_counts_as_in_flight_while_it_waits_to_be_retried() -> None:
    """A drain must wait for an update between two attempts, not see the process idle."""
    time, state = FakeTime(), ServerState()
    in_flight_while_asleep: list[int] = []

    async def sleep(seconds: float) -> None:
        in_flight_while_asleep.append(state.in_flight)
        await time.sleep(seconds)

    middleware = InProcessRedeliveryMiddleware(
        state, give_up_after=60, sleep=sleep, clock=time.clock
    )
    await middleware(failing_then_ok(OUTAGE), UPDATE, {})
    assert in_flight_while_asleep == [1]
    assert state.in_flight == 0
