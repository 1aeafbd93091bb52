"""Exactly-once updates: each update is claimed in the bot's ledger (bot.db.ledger) before it is
processed and marked done after; processing has a deadline, counted from the claim.

The claim's life, in the database every replica shares:
- "processing" with a short expiry while a worker has it, so a crashed worker's claim lapses and
  Telegram's redelivery is processed;
- "done" for a day once the handler has finished (Telegram gives up redelivering within 24 h),
  so a redelivery is acknowledged without being processed again, by whichever replica it
  reaches;
- released on a retryable failure, so the redelivery is processed once;
- done on a bug too: retrying cannot fix it, and the errors router has apologised.

The done mark comes after the handler, never before: the handler's own writes are committed by
then (its session, or its autocommitted statements), so a done mark never stands for work that
was lost. A worker that dies between its reply and the done mark leaves a claim that lapses, and
Telegram's redelivery is processed again: the handlers' writes are upserts for that reason.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from bot.db.ledger import DONE, Claim, UpdateLedger
from bot.errors import UpdateInProgressError
from bot.middlewares import NextHandler
from bot.middlewares.observer import UPDATE_INFO_KEY, UpdateInfo
from bot.observability.metrics import DUPLICATES
from bot.retry_policy import is_retryable
from bot.tenant import Tenant

log = structlog.get_logger(__name__)

# While another worker holds the claim, its state is read again after this, growing to the cap:
# each read is a database round trip, and a slow update may have many redeliveries waiting.
POLL_INTERVAL_SECONDS = 0.05
POLL_INTERVAL_CAP_SECONDS = 0.5
# How long a redelivery waits for the worker holding its claim before it is answered 503 (and
# Telegram retries later). The processing deadline starts after it: when the wait came out of
# the deadline, an update claimed late was cut off after its reply had gone out, released, and
# answered again (tests/e2e, SIGKILL scenario).
CLAIM_WAIT_SECONDS = 5.0


class DeduplicationMiddleware(BaseMiddleware):
    """Outer middleware on ``update``; registered inside the observer so duplicates are logged."""

    def __init__(
        self, *, ledger: UpdateLedger, deadline: float, wait: float = CLAIM_WAIT_SECONDS
    ) -> None:
        self.ledger = ledger
        # Counted from the claim, so waiting for another worker never eats into it.
        self.deadline = deadline
        # The claim outlives the deadline, so it never lapses under a live worker.
        self.processing_ttl = deadline + 30
        self.wait = wait

    async def __call__(
        self,
        handler: NextHandler,
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        assert isinstance(event, Update)
        # update_ids are per bot: the claim is the bot's (its id, in its own data scope).
        tenant: Tenant = data["tenant"]
        claim = await self._claim(tenant, event.update_id)
        if claim is None:
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
            await (self.ledger.release(claim) if is_retryable(exc) else self._done(claim))
            raise
        except BaseException:  # cancelled by shutdown: let it be redelivered
            await self.ledger.release(claim)
            raise
        await self._done(claim)
        return result

    async def _claim(self, tenant: Tenant, update_id: int) -> Claim | None:
        """The claim when this worker should process the update; None when it was done."""
        scope, bot_id = tenant.data, tenant.bot_id
        deadline = time.monotonic() + self.wait
        interval = POLL_INTERVAL_SECONDS
        while True:
            claim = await self.ledger.claim(scope, bot_id, update_id, self.processing_ttl)
            if claim is not None:
                return claim
            state = await self.ledger.state(scope, bot_id, update_id)
            if state == DONE:
                return None
            if state is not None and time.monotonic() >= deadline:
                msg = "update is being processed by another worker"
                raise UpdateInProgressError(msg)
            if state is not None:  # processing elsewhere (a concurrent redelivery): wait
                await asyncio.sleep(interval)
                interval = min(interval * 1.5, POLL_INTERVAL_CAP_SECONDS)
            # None: released or lapsed just now; claim again at once.

    async def _done(self, claim: Claim) -> None:
        try:
            await self.ledger.done(claim)
        except Exception as exc:  # the update was processed: answer 200 all the same
            # Telegram has no reason to redeliver it; if it does anyway, the claim lapses first
            # and the update is processed again (what a worker dying here would cost too).
            log.warning("update_done_mark_failed", error=type(exc).__name__)
