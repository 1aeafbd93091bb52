"""Outbound Bot API calls: flood control before a call, bounded retries after a failed one.

Both are aiogram request middlewares on the Bot's session, so every call any handler makes goes
through them, in every mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import structlog
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import (
    DeleteWebhook,
    GetMe,
    GetUpdates,
    GetWebhookInfo,
    Response,
    SendMessage,
    SetWebhook,
)

from bot.delivery.deadline import UpdateDeadline, current_deadline
from bot.errors import PacingBacklogError
from bot.observability.metrics import (
    BOT_API_PACING_REFUSED,
    BOT_API_REQUESTS,
    BOT_API_RETRIES,
    BOT_API_THROTTLED,
)
from bot.tenant import working_for

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import TelegramMethod
    from aiogram.methods.base import TelegramType

log = structlog.get_logger(__name__)


@cache
def pin_response_models() -> tuple[type, ...]:
    """Keeps aiogram's Response[T] classes for the methods we call alive.

    aiogram builds ``Response[method.__returning__]`` on every call; pydantic caches generic
    classes only weakly, so each cyclic garbage collection drops them and the next call rebuilds
    one: about 9% of the CPU of a busy webhook (py-spy, benchmarks/webhook.py). Strong
    references keep the cache warm. Called once, from create_bot.
    """
    methods = (SendMessage, GetMe, GetUpdates, SetWebhook, DeleteWebhook, GetWebhookInfo)
    return tuple(Response[m.__returning__] for m in methods)  # type: ignore[misc]


def paused(deadline: UpdateDeadline | None, seconds: float) -> AbstractAsyncContextManager[None]:
    """A wait for Telegram's pacing: off the update's deadline, if it fits in its budget."""
    if deadline is None or not deadline.can_pause(seconds):
        return contextlib.nullcontext()
    return deadline.paused(seconds)


class RetryMiddleware(BaseRequestMiddleware):
    """Retries 429 after Telegram's retry_after, and 5xx/network errors with jittered backoff.

    Bounded by attempts and by total wait, so an update finishes (or fails, to be redelivered)
    well inside its deadline. Errors Telegram will repeat (400, 403) are never retried.
    Note: a network error after the request left may mean Telegram did send the message; the
    retry can then duplicate it. That window is the price of not losing replies.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 4,
        max_total_wait: float = 10.0,
        base_delay: float = 0.25,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.max_attempts = max_attempts
        self.max_total_wait = max_total_wait
        self.base_delay = base_delay
        self._sleep = sleep

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        name, owner = type(method).__name__, working_for.get()
        waited = 0.0
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = await make_request(bot, method)
            except TelegramRetryAfter as exc:
                reason, delay = "flood_wait", float(exc.retry_after)
                error: TelegramAPIError = exc
            except TelegramServerError as exc:
                reason, delay, error = "server_error", self._backoff(attempt), exc
            except TelegramNetworkError as exc:
                reason, delay, error = "network", self._backoff(attempt), exc
            except TelegramAPIError as exc:
                BOT_API_REQUESTS.labels(owner, name, "error").inc()
                log.warning("bot_api_refused", method=name, error=type(exc).__name__)
                raise
            else:
                BOT_API_REQUESTS.labels(owner, name, "ok" if attempt == 1 else "retried").inc()
                return result
            if attempt == self.max_attempts or waited + delay > self.max_total_wait:
                BOT_API_REQUESTS.labels(owner, name, "error").inc()
                log.warning("bot_api_gave_up", method=name, reason=reason, attempts=attempt)
                raise error
            BOT_API_RETRIES.labels(owner, name, reason).inc()
            log.info("bot_api_retry", method=name, reason=reason, attempt=attempt, delay=delay)
            # Telegram's retry_after is pacing too: not counted against the deadline when it
            # fits in the update's budget.
            deadline = current_deadline() if reason == "flood_wait" else None
            async with paused(deadline, delay):
                await self._sleep(delay)
            waited += delay
        raise AssertionError  # pragma: no cover - the loop always returns or raises

    def _backoff(self, attempt: int) -> float:
        return self.base_delay * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311


class TokenBucket:
    """Reservation-style token bucket: each call reserves a token and learns how long to wait.

    Tokens may go negative, so concurrent callers queue in arrival order without a lock.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self._updated = clock()

    def reserve(self) -> float:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def release(self) -> None:
        """Gives back a reserved token that was never used (its wait was cancelled): the next
        caller takes the slot, instead of every later one queueing behind an empty one."""
        self.tokens = min(self.burst, self.tokens + 1)


@dataclass(slots=True)
class Reservation:
    """One message's slot in the buckets that pace it, and how long to wait for it."""

    delay: float
    buckets: tuple[TokenBucket, ...]

    def cancel(self) -> None:
        for bucket in self.buckets:
            bucket.release()


class ChatLimiter:
    """One bot's budget: Telegram counts its limits per token, so every bot has its own."""

    def __init__(
        self,
        *,
        global_rate: float,
        chat_rate: float,
        chat_burst: float,
        group_per_minute: float,
        max_chats: int,
        clock: Callable[[], float],
    ) -> None:
        self.global_bucket = TokenBucket(global_rate, global_rate, clock) if global_rate else None
        self.chat_rate = chat_rate
        self.chat_burst = chat_burst
        self.group_rate = group_per_minute / 60.0
        self.max_chats = max_chats
        self._chats: OrderedDict[int | str, TokenBucket] = OrderedDict()
        self._clock = clock

    def reserve(self, chat_id: int | str) -> Reservation:
        """Reserve a slot for one message to `chat_id`, to be waited for (or cancelled)."""
        buckets = (self.global_bucket,) if self.global_bucket else ()
        if self.chat_rate:
            buckets = (*buckets, self._chat_bucket(chat_id))
        return Reservation(max((b.reserve() for b in buckets), default=0.0), buckets)

    def delay_for(self, chat_id: int | str) -> float:
        """Reserve a slot for one message to `chat_id`; returns how long to wait for it."""
        return self.reserve(chat_id).delay

    def _chat_bucket(self, chat_id: int | str) -> TokenBucket:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            is_group = isinstance(chat_id, str) or chat_id < 0
            rate = self.group_rate if is_group else self.chat_rate
            bucket = TokenBucket(rate, self.chat_burst, self._clock)
            self._chats[chat_id] = bucket
            if len(self._chats) > self.max_chats:
                # The oldest bucket has long refilled; forgetting it loses nothing.
                self._chats.popitem(last=False)
        else:
            self._chats.move_to_end(chat_id)
        return bucket


class FloodControlMiddleware(BaseRequestMiddleware):
    """Keeps to Telegram's limits: about 30 messages/s overall, about 1/s per private chat with
    short bursts, 20/min per group, each per bot. Only calls that post into a chat are paced.

    One middleware can sit on a session that several Bots share (the connection pool and TLS
    context are not limited by Telegram), and still pace each bot on its own budget.
    """

    def __init__(
        self,
        *,
        global_rate: float = 30.0,
        chat_rate: float = 1.0,
        chat_burst: float = 3.0,
        group_per_minute: float = 20.0,
        max_chats: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._new_limiter = functools.partial(
            ChatLimiter,
            global_rate=global_rate,
            chat_rate=chat_rate,
            chat_burst=chat_burst,
            group_per_minute=group_per_minute,
            max_chats=max_chats,
            clock=clock,
        )
        self._limiters: dict[int, ChatLimiter] = {}
        self._sleep = sleep

    def limiter(self, bot_id: int) -> ChatLimiter:
        limiter = self._limiters.get(bot_id)
        if limiter is None:
            limiter = self._limiters[bot_id] = self._new_limiter()
        return limiter

    def delay_for(self, chat_id: int | str, *, bot_id: int = 0) -> float:
        """Reserve a slot for one message of bot `bot_id` to `chat_id`; returns the wait."""
        return self.limiter(bot_id).delay_for(chat_id)

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = getattr(method, "chat_id", None)
        if chat_id is not None and type(method).__name__.startswith(("Send", "Forward", "Copy")):
            reservation = self.limiter(bot.id).reserve(chat_id)
            if reservation.delay > 0:
                await self._wait(reservation)
        return await make_request(bot, method)

    async def _wait(self, reservation: Reservation) -> None:
        """Waits for a reserved slot; the wait does not count against the update's deadline.
        A slot whose wait is refused or cancelled (deadline, shutdown) is given back."""
        deadline = current_deadline()
        if deadline is not None and not deadline.can_pause(reservation.delay):
            reservation.cancel()
            BOT_API_PACING_REFUSED.labels(working_for.get()).inc()
            # Worth retrying once the rest of the wait fits in a fresh update's budget.
            raise PacingBacklogError(max(0.1, reservation.delay - deadline.pause_left()))
        BOT_API_THROTTLED.labels(working_for.get()).observe(reservation.delay)
        try:
            async with paused(deadline, reservation.delay):
                await self._sleep(reservation.delay)
        except BaseException:
            reservation.cancel()
            raise
