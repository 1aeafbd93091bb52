"""In-process redelivery for polling: what Telegram's redelivery does for a webhook.

getUpdates has no redelivery: once the next batch is asked for, the previous one is confirmed,
whatever became of it. So in polling mode a retryable failure (an outage, the deadline, a
reply queued behind Telegram's pacing) is processed again here, after a backoff, for a bounded
time. While it waits it holds its place among the updates in flight, so polling fetches less
(backpressure) and a drain waits for it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.exceptions import TelegramRetryAfter
from aiogram.types import TelegramObject, Update

from bot.errors import PacingBacklogError
from bot.lifecycle import ServerState
from bot.middlewares import NextHandler
from bot.observability.metrics import UPDATE_REDELIVERIES
from bot.retry_policy import is_retryable

log = structlog.get_logger(__name__)


class InProcessRedeliveryMiddleware(BaseMiddleware):
    """Outermost middleware on ``update`` in polling mode: counts the update in flight and
    processes it again after a retryable failure, until `give_up_after` seconds have passed.

    Outside the observer, so each attempt gets its own canonical line and metrics, as each
    webhook delivery does; outside dedup, so a released claim is claimed afresh.
    """

    def __init__(
        self,
        state: ServerState,
        *,
        give_up_after: float,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.give_up_after = give_up_after
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._clock = clock

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        with self.state.track():
            started = self._clock()
            attempt = 0
            while True:
                attempt += 1
                try:
                    # A fresh copy each time: an attempt's middlewares leave their keys behind.
                    return await handler(event, dict(data))
                except Exception as exc:
                    if not is_retryable(exc):
                        raise
                    delay = self.delay(exc, attempt)
                    reason = type(exc).__name__
                    if self._clock() - started + delay > self.give_up_after:
                        UPDATE_REDELIVERIES.labels("given_up").inc()
                        log.error(
                            "update_given_up",
                            update_id=event.update_id,
                            attempts=attempt,
                            error=reason,
                        )
                        raise
                UPDATE_REDELIVERIES.labels("retried").inc()
                log.warning(
                    "update_redelivered_in_process",
                    update_id=event.update_id,
                    attempt=attempt,
                    error=reason,
                    delay=round(delay, 2),
                )
                await self._sleep(delay)

    def delay(self, exc: Exception, attempt: int) -> float:
        """Telegram's or the limiter's own figure when there is one, else jittered backoff."""
        if isinstance(exc, PacingBacklogError | TelegramRetryAfter):
            return float(exc.retry_after)
        backoff = self.base_delay * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311
        return min(self.max_delay, backoff)
