"""The update deadline: how long an update may work, not how long it may wait for Telegram.

A reply paced by flood control (1 message/s per chat, 30/s per bot) is not stuck: 30 messages
from one chat take 27 s to answer by design. So the deadline (UPDATE_TIMEOUT_SECONDS) counts
work only, and time spent waiting for Telegram's pacing moves it back. The whole update, work
and waits, stays within a budget of twice the deadline (at most 50 s: a webhook answer must
reach Telegram within its 60 s). A wait that would end past the budget is refused up front
(`PacingBacklogError`, retryable): the update is retried once the queue ahead has gone.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject

from bot.middlewares import NextHandler

# Telegram waits about 60 s for a webhook's answer, and the dedup claim may wait 5 s before
# processing starts: work plus paced waits stay under what is left, with a margin.
WEBHOOK_ANSWER_BUDGET_SECONDS = 50.0

_current: contextvars.ContextVar[UpdateDeadline | None] = contextvars.ContextVar(
    "update_deadline", default=None
)


def pause_allowance(deadline: float) -> float:
    """How much longer than its `deadline` an update may take by waiting for pacing: as long
    again, within the webhook's answer budget (25 s for the default 25 s deadline)."""
    return max(0.0, min(deadline, WEBHOOK_ANSWER_BUDGET_SECONDS - deadline))


def update_budget(deadline: float) -> float:
    """The longest an update may take, paced waits included, and a second to spare: dedup's
    backstop, and so what a claim must outlive."""
    return deadline + pause_allowance(deadline) + 1.0


def current_deadline() -> UpdateDeadline | None:
    """The deadline of the update this task is processing (None outside one: start-up calls)."""
    return _current.get()


class UpdateDeadline:
    """One update's deadline, which paced waits push back, within its total budget."""

    def __init__(
        self,
        timeout: asyncio.Timeout,
        *,
        budget: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._clock = clock
        self._ends = clock() + budget

    def pause_left(self) -> float:
        """How long a paced wait starting now may last: what remains of the budget, whatever
        the work so far has used of it."""
        return self._ends - self._clock()

    def can_pause(self, seconds: float) -> bool:
        return seconds <= self.pause_left()

    @asynccontextmanager
    async def paused(self, planned: float) -> AsyncIterator[None]:
        """Waits inside do not count against the deadline. The deadline moves by `planned`
        before the wait (or the wait itself could hit it), then back by what was not spent."""
        self._shift(planned)
        started = self._clock()
        try:
            yield
        finally:
            spent = min(self._clock() - started, planned)
            self._shift(spent - planned)

    def _shift(self, seconds: float) -> None:
        when = self._timeout.when()
        if when is not None and seconds:
            self._timeout.reschedule(when + seconds)


class DeadlineMiddleware(BaseMiddleware):
    """Outer middleware on ``update``, inside dedup (so it counts from the claim): work gets
    `seconds`, work and paced waits together `seconds + pause_allowance(seconds)`; past either,
    TimeoutError (retryable) or PacingBacklogError (retryable, refused before waiting)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.budget = seconds + pause_allowance(seconds)

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        async with asyncio.timeout(self.seconds) as timeout:
            token = _current.set(UpdateDeadline(timeout, budget=self.budget))
            try:
                return await handler(event, data)
            finally:
                _current.reset(token)
