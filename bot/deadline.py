"""The update deadline: how long an update may work, not how long it may wait for Telegram.

A reply paced by flood control (1 message/s per chat, 30/s per bot) is not stuck: 30 messages
from one chat take 27 s to answer by design. So the deadline (UPDATE_TIMEOUT_SECONDS) counts
work only; time an update spends waiting for Telegram's pacing moves it back, up to a pause
allowance. A wait longer than what is left of the allowance is refused up front
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

# Telegram gives a webhook answer about 60 s; the dedup claim may wait 5 s before processing
# starts. Work plus paced waits stay under what is left, with a margin.
WEBHOOK_ANSWER_BUDGET_SECONDS = 50.0

_current: contextvars.ContextVar[UpdateDeadline | None] = contextvars.ContextVar(
    "update_deadline", default=None
)


def pause_allowance(deadline: float) -> float:
    """How long an update may wait for pacing on top of its `deadline`: as long again, within
    the webhook's answer budget (25 s for the default 25 s deadline)."""
    return max(0.0, min(deadline, WEBHOOK_ANSWER_BUDGET_SECONDS - deadline))


def current_deadline() -> UpdateDeadline | None:
    """The deadline of the update this task is processing (None outside one: start-up calls)."""
    return _current.get()


class UpdateDeadline:
    """One update's deadline; paced waits push it back while its allowance lasts."""

    def __init__(
        self,
        timeout: asyncio.Timeout,
        *,
        allowance: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._clock = clock
        self.allowance_left = allowance

    def can_pause(self, seconds: float) -> bool:
        return seconds <= self.allowance_left

    @asynccontextmanager
    async def paused(self, planned: float) -> AsyncIterator[None]:
        """Waits inside do not count against the deadline. The deadline moves by `planned`
        before the wait (or the wait itself could hit it), then by what was actually spent."""
        if not self.can_pause(planned):
            msg = f"a paced wait of {planned:.1f}s exceeds the {self.allowance_left:.1f}s left"
            raise ValueError(msg)
        self._shift(planned)
        started = self._clock()
        try:
            yield
        finally:
            spent = min(self._clock() - started, planned)
            self._shift(spent - planned)
            self.allowance_left -= spent

    def _shift(self, seconds: float) -> None:
        when = self._timeout.when()
        if when is not None and seconds:
            self._timeout.reschedule(when + seconds)


class DeadlineMiddleware(BaseMiddleware):
    """Outer middleware on ``update``, inside dedup (so it counts from the claim): processing
    gets `seconds`, plus paced waits up to `pause_allowance(seconds)`; then TimeoutError, which
    is retryable."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.allowance = pause_allowance(seconds)

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        async with asyncio.timeout(self.seconds) as timeout:
            token = _current.set(UpdateDeadline(timeout, allowance=self.allowance))
            try:
                return await handler(event, data)
            finally:
                _current.reset(token)
