"""Concurrent small writes to one data scope, coalesced into one statement per round.

Each update writes to the ledger twice (its claim, its done mark). Per update, that was two
checkouts of a pooled connection, two statements and two commits: on the webhook benchmark, as
much CPU as the rest of a returning user's update. Writes that arrive while a round is on its
way wait for the next one, so under load a round carries many and costs about one; alone, a
write goes out at once (one event-loop turn later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")

# Runs one round: the items of one key in the order they came, a result for each in that order.
Run = Callable[[Key, list[Item]], Awaitable[list[Result]]]
# Told about a result whose caller had gone (cancelled) by the time it came.
Orphan = Callable[[Key, Result], None]


class Batches(Generic[Key, Item, Result]):
    """At most one round in flight per key (a bot's data scope); the rest queue behind it."""

    def __init__(
        self, run: Run[Key, Item, Result], *, orphan: Orphan[Key, Result] | None = None
    ) -> None:
        self._run = run
        self._orphan = orphan
        self._pending: dict[Key, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._draining: dict[Key, asyncio.Task[None]] = {}

    async def submit(self, key: Key, item: Item) -> Result:
        """The item's result, once its round has run; its round's failure, if that failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((item, future))
        if key not in self._draining:
            self._draining[key] = asyncio.get_running_loop().create_task(self._drain(key))
        return await future

    async def _drain(self, key: Key) -> None:
        try:
            while batch := self._pending.pop(key, None):
                await self._round(key, batch)
        finally:
            del self._draining[key]

    async def _round(self, key: Key, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run(key, [item for item, _ in batch])
        except Exception as exc:  # every caller of the round gets its failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
            elif future.cancelled() and self._orphan is not None:
                self._orphan(key, result)
