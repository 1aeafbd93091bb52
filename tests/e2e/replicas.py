"""Scenarios with three `serve` replicas behind one Service: one PostgreSQL, one Redis (a
throwaway one, since two of them kill it), and Telegram's deliveries and retries landing on any
replica. Exactly-once must not depend on which replica a retry reaches, nor on Redis.

Every scenario redelivers a share of the updates the way Telegram does when it misses an answer:
20% arrive 2-3 times at once (to different replicas), 30% again after they were acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tests.e2e.harness import (
    Environment,
    Row,
    SimulatedTelegram,
    Sizes,
    Tracked,
    Traffic,
    _await_cache_back,
    _crash_lines,
    account,
    bot_env,
    wait_until,
)
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.servers import ThrowawayRedis

REPLICAS = 3

Chaos = Callable[
    [SimulatedTelegram, ThrowawayRedis, list[BotProcess], list[Tracked]], Awaitable[None]
]


def _copies(index: int) -> int:
    return 1 + (index % 10 < 2) + (index % 10 < 1)


async def _run_replicated(
    env: Environment,
    sizes: Sizes,
    row: Row,
    chaos: Chaos,
    *,
    attempt_timeout: float = 30.0,
    faults: Callable[[str, dict[str, Any]], Scripted | None] | None = None,
) -> Row:
    redis = ThrowawayRedis()
    await asyncio.to_thread(redis.start)
    fake = FakeTelegram()
    fake.faults = faults
    await fake.start()
    local = dataclasses.replace(env, redis_url=redis.url)
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    bots = [BotProcess(bot_env(local, fake, project), cwd=env.workdir) for _ in range(REPLICAS)]
    items = Traffic(max(10, sizes.updates // 10)).make(sizes.updates)
    started = time.monotonic()
    try:
        # Three cold starts at once on a shared 2-core machine: more than one start's time.
        await asyncio.gather(*(bot.start(timeout=180) for bot in bots))
        sim = SimulatedTelegram(bots[0].url, attempt_timeout=attempt_timeout)
        sim.replicas = [bot.url for bot in bots]
        async with sim.running():
            await asyncio.gather(
                sim.run(items, rate=sizes.rate, copies=_copies, give_up_after=90),
                chaos(sim, redis, bots, items),
            )
            # Telegram missed these answers: each comes again, to any replica.
            again = [item for index, item in enumerate(items) if index % 10 in (2, 3, 4)]
            await asyncio.gather(*(sim.deliver(item) for item in again))
        account(row, items, fake, sim)
        row.notes.append(
            f"{row.deliveries - row.sent} redeliveries over {REPLICAS} replicas; "
            f"{sim.statuses.get(503, 0)} answers 503, {sim.statuses.get(0, 0)} timeouts"
        )
    finally:
        for bot in bots:
            code = await bot.stop()
            if code != 0:
                row.failures.append(f"a replica exited with {code}")
            row.notes.extend(_crash_lines(bot))
        await fake.stop()
        await asyncio.to_thread(redis.stop)
        row.seconds = time.monotonic() - started
    return row


async def replicas_redis_killed(env: Environment, sizes: Sizes) -> Row:
    """Redis is SIGKILLed after a third of the run and stays down to the end: every replica is
    on its own memory, and only the database can tell one replica what another did."""
    row = Row("3 replicas + Redis killed")

    async def chaos(
        sim: SimulatedTelegram, redis: ThrowawayRedis, _bots: list[BotProcess], items: list[Tracked]
    ) -> None:
        await wait_until(lambda: sim.acked >= len(items) // 3, 120, "a third acked")
        await asyncio.to_thread(redis.kill)

    return await _run_replicated(env, sizes, row, chaos)


async def replicas_redis_restarted_empty(env: Environment, sizes: Sizes) -> Row:
    """Redis is SIGKILLed after a third of the run and started again, empty, after two thirds;
    then acknowledged updates are redelivered: the "done" marks Redis held are gone."""
    row = Row("3 replicas + Redis restarted empty")
    return await _run_replicated(env, sizes, row, _redis_restarted_empty)


async def _redis_restarted_empty(
    sim: SimulatedTelegram, redis: ThrowawayRedis, bots: list[BotProcess], items: list[Tracked]
) -> None:
    await wait_until(lambda: sim.acked >= len(items) // 3, 120, "a third acked")
    await asyncio.to_thread(redis.kill)
    await wait_until(lambda: sim.acked >= 2 * len(items) // 3, 120, "2/3 acked")
    await asyncio.to_thread(redis.start)
    await asyncio.gather(*(_await_cache_back(bot) for bot in bots))


async def replicas_slow_processing(env: Environment, sizes: Sizes) -> Row:
    """Replies take 0.5-3 s and Telegram gives up on an attempt after 1 s, so its retries reach
    other replicas while the first attempt is still being processed; meanwhile Redis is killed
    and restarted empty as above. (With Redis healthy throughout, claims in Redis already
    handled the overlap: 0 duplicates before the ledger too.)"""
    row = Row("3 replicas + slow processing (overlapping retries)")
    rng = random.Random(17)

    def slow(method: str, _params: dict[str, Any]) -> Scripted | None:
        return Scripted(delay=rng.uniform(0.5, 3.0)) if method == "sendMessage" else None

    return await _run_replicated(
        env, sizes, row, _redis_restarted_empty, attempt_timeout=1.0, faults=slow
    )


REPLICA_SCENARIOS: dict[str, Callable[[Environment, Sizes], Awaitable[Row]]] = {
    "replicas_redis_killed": replicas_redis_killed,
    "replicas_redis_restarted": replicas_redis_restarted_empty,
    "replicas_slow": replicas_slow_processing,
}
