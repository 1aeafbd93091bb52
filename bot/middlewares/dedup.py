"""Exactly-once updates: each update_id is claimed before processing and marked done after;
processing has a deadline, counted from the claim.

A claim is `SET NX` on ``<bot namespace>:update:<id>`` (memory fallback when Redis is away):
- "processing" with a short TTL while a worker has it, so a crashed worker's claim expires and
  Telegram's redelivery is processed;
- "done" for a day once finished (Telegram gives up redelivering within 24 h), so a redelivered
  update is acknowledged without being processed again;
- released on a retryable failure, so the redelivery is processed once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from bot.cache import Cache
from bot.errors import UpdateInProgressError
from bot.middlewares import NextHandler
from bot.middlewares.observer import UPDATE_INFO_KEY, UpdateInfo
from bot.observability.metrics import DUPLICATES
from bot.retry_policy import is_retryable
from bot.tenant import Tenant

log = structlog.get_logger(__name__)

PROCESSING, DONE = "processing", "done"
DONE_TTL_SECONDS = 25 * 3600.0
POLL_INTERVAL_SECONDS = 0.05
# How long a redelivery waits for the worker holding its claim before it is answered 503 (and
# Telegram retries later). The processing deadline starts after it: when the wait came out of
# the deadline, an update claimed late was cut off after its reply had gone out, released, and
# answered again (tests/e2e, SIGKILL scenario).
CLAIM_WAIT_SECONDS = 5.0


class DeduplicationMiddleware(BaseMiddleware):
    """Outer middleware on ``update``; registered inside the observer so duplicates are logged."""

    def __init__(self, *, cache: Cache, deadline: float, wait: float = CLAIM_WAIT_SECONDS) -> None:
        self.cache = cache
        # Counted from the claim, so waiting for another worker never eats into it.
        self.deadline = deadline
        # The claim outlives the deadline, so it never expires under a live worker.
        self.processing_ttl = deadline + 30
        self.wait = wait

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        # update_ids are per bot: bot A's update 5 must never mark bot B's update 5 done.
        tenant: Tenant = data["tenant"]
        key = tenant.key("update", event.update_id)
        if not await self._claim(key):
            info: UpdateInfo | None = data.get(UPDATE_INFO_KEY)
            if info is not None:
                info.duplicate = True
            DUPLICATES.inc()
            log.info("update_duplicate_skipped")
            return None
        try:
            async with asyncio.timeout(self.deadline):
                result = await handler(event, data)
        except Exception as exc:
            # Bugs are final (the errors router reports them); outages and the deadline
            # (TimeoutError) are retried by Telegram.
            await (self.cache.delete(key) if is_retryable(exc) else self._done(key))
            raise
        except BaseException:  # cancelled by shutdown: let it be redelivered
            await self.cache.delete(key)
            raise
        await self._done(key)
        return result

    async def _claim(self, key: str) -> bool:
        """True when this worker should process the update; False when it was already done."""
        deadline = time.monotonic() + self.wait
        while True:
            if await self.cache.set_nx(key, PROCESSING, self.processing_ttl):
                return True
            state = await self.cache.get(key)
            if state == DONE:
                return False
            if state is not None and time.monotonic() >= deadline:
                msg = "update is being processed by another worker"
                raise UpdateInProgressError(msg)
            # Still processing elsewhere (a concurrent redelivery), or released just now.
            await asyncio.sleep(POLL_INTERVAL_SECONDS)

    async def _done(self, key: str) -> None:
        await self.cache.set(key, DONE, DONE_TTL_SECONDS)
