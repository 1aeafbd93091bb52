"""Fair shares of the bot host's capacity: one bot's flood cannot slow the other bots down.

The bots of a host share one event loop and one database pool. A bot alone may have `budget`
updates in flight; once other bots have had traffic within the last `window` seconds, each gets
an equal share of the budget (never less than `floor`). A cap that only bounds each bot (half
the pool, say) is not enough: a flooded bot then keeps that many updates running, and every
quiet bot's reply waits its turn in the same event loop behind them (p99 5.9x in
benchmarks.density). An update above its bot's share waits for one of its bot's own updates to
finish (holding only a connection, which Telegram bounds per bot), and is refused when that
takes longer than `wait` seconds: Telegram redelivers it. Waiting first spares a burst the 503
round trips, each of which Telegram answers with a longer back-off.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# A quiet bot (an update every few seconds) still counts as active between its updates, so a
# flood next to it keeps to its share while the quiet bot's next update is on its way.
ACTIVE_WINDOW_SECONDS = 2.0
RECOUNT_SECONDS = 0.2


class FairShare:
    """Admission per bot id: `acquire` (or `try_acquire`) before an update, `release` after."""

    def __init__(
        self,
        budget: int,
        *,
        floor: int = 1,
        window: float = ACTIVE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.floor = floor
        self.window = window
        self._clock = clock
        self._in_flight: Counter[int] = Counter()
        self._waiting: defaultdict[int, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._seen: dict[int, float] = {}
        self._active = 1
        self._counted_at = -math.inf

    def share(self) -> int:
        """How many updates each active bot may have in flight now."""
        return max(self.floor, self.budget // self._active_bots())

    def in_flight(self, bot_id: int) -> int:
        return self._in_flight[bot_id]

    def try_acquire(self, bot_id: int) -> bool:
        """Counts the bot as active (refused or not: it wants service) and admits the update
        if the bot is below its share."""
        now = self._clock()
        if now - self._seen.get(bot_id, -math.inf) >= self.window:
            self._counted_at = -math.inf  # one more active bot: every share shrinks at once
        self._seen[bot_id] = now
        if self._in_flight[bot_id] >= self.share():
            return False
        self._in_flight[bot_id] += 1
        return True

    async def acquire(self, bot_id: int, *, wait: float) -> bool:
        """`try_acquire`, else wait up to `wait` seconds for a slot of this bot's own, first
        come first served."""
        if self.try_acquire(bot_id):
            return True
        slot = asyncio.get_running_loop().create_future()
        queue = self._waiting[bot_id]
        queue.append(slot)
        # asyncio.wait never cancels `slot`: a slot handed over just as the wait ends is kept.
        await asyncio.wait((slot,), timeout=wait)
        if slot.done():
            return True
        queue.remove(slot)
        if not queue:
            del self._waiting[bot_id]
        return False

    @asynccontextmanager
    async def slot(self, bot_id: int, *, wait: float) -> AsyncIterator[bool]:
        """`acquire` as a context: True inside when admitted (released on exit), else False."""
        if not await self.acquire(bot_id, wait=wait):
            yield False
            return
        try:
            yield True
        finally:
            self.release(bot_id)

    def release(self, bot_id: int) -> None:
        """The update is finished: its slot goes to the bot's next waiting update, if any."""
        self._in_flight[bot_id] -= 1
        queue = self._waiting.get(bot_id)
        if queue and self._in_flight[bot_id] < self.share():
            self._in_flight[bot_id] += 1
            queue.popleft().set_result(None)
            if not queue:
                del self._waiting[bot_id]
        if self._in_flight[bot_id] <= 0:
            del self._in_flight[bot_id]

    def forget(self, bot_id: int) -> None:
        """A bot left the host: it no longer takes a share."""
        self._seen.pop(bot_id, None)
        self._counted_at = -math.inf

    def _active_bots(self) -> int:
        # A bot joining is counted at once (above); one falling quiet within RECOUNT_SECONDS,
        # since a count per update would cost O(bots) each.
        now = self._clock()
        if now - self._counted_at >= RECOUNT_SECONDS:
            self._active = max(1, sum(now - seen < self.window for seen in self._seen.values()))
            self._counted_at = now
        return self._active
