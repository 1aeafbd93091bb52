"""The exactly-once ledger on PostgreSQL: claims atomic across replicas, kept per bot by
PostgreSQL in the host, and an update claimed but not yet answered visible as such, so a process
killed between claim and reply leaves it unfinished (never done)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.db.bot_stores import postgres_scope
from bot.db.ledger import DONE, PROCESSING, Claim, UpdateLedger, epoch_ms
from bot.db.migrations import upgrade_to_head
from bot.db.models import UpdateClaim
from bot.db.scope import DataScope
from bot.delivery.deadline import update_budget
from tests.conftest import TEST_SECRET, TEST_TOKEN
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.updates import message_update, next_update_id, user

BOT_ID = int(TEST_TOKEN.split(":")[0])
claims = UpdateClaim.__table__


@pytest.fixture
async def replicas(pg_migrated_url: str) -> AsyncIterator[list[DataScope]]:
    """Three processes' worth of engines on one database, each with its own pool."""
    engines = [create_async_engine(pg_migrated_url, pool_size=8) for _ in range(3)]
    yield [DataScope(engine) for engine in engines]
    for engine in engines:
        await engine.dispose()


async def test_claims_are_atomic_across_replicas(replicas: list[DataScope]) -> None:
    ledgers = [UpdateLedger("postgresql") for _ in replicas]
    update_ids = [next_update_id() for _ in range(40)]

    async def claim(index: int, update_id: int) -> Claim | None:
        return await ledgers[index].claim(replicas[index], BOT_ID, update_id, ttl=60)

    # Every update claimed by every replica twice, all at once.
    attempts = [(i % 3, update_id) for update_id in update_ids for i in range(6)]
    won = await asyncio.gather(*(claim(i, update_id) for i, update_id in attempts))
    winners = Counter(c.update_id for c in won if c is not None)
    assert winners == dict.fromkeys(update_ids, 1)


async def test_a_lapsed_claim_is_taken_over_by_exactly_one_replica(
    replicas: list[DataScope],
) -> None:
    ledger, update_id = UpdateLedger("postgresql"), next_update_id()
    assert await ledger.claim(replicas[0], BOT_ID, update_id, ttl=-1) is not None  # crashed
    won = await asyncio.gather(
        *(ledger.claim(scope, BOT_ID, update_id, ttl=60) for scope in replicas * 3)
    )
    assert sum(c is not None for c in won) == 1
    assert await ledger.state(replicas[1], BOT_ID, update_id) == PROCESSING


async def test_postgres_keeps_each_bots_claims_to_itself(host_database: str) -> None:
    engine = create_async_engine(host_database, pool_size=2, max_overflow=0)
    try:
        shop, news = postgres_scope(engine, "shop"), postgres_scope(engine, "news")
        for scope in (shop, news):
            await upgrade_to_head(engine, scope)
        ledger = UpdateLedger("postgresql")
        claim = await ledger.claim(shop, 1, 5, ttl=60)
        assert claim is not None
        await ledger.done(claim)
        # The same bot id and update id in the other bot's schema: its own, unclaimed.
        assert await ledger.claim(news, 1, 5, ttl=60) is not None
        with pytest.raises(DBAPIError, match="permission denied"):
            async with news.statement() as connection:
                await connection.execute(text("SELECT count(*) FROM bot_shop.update_claims"))
    finally:
        await engine.dispose()


async def _entry(engine: AsyncEngine, update_id: int) -> tuple[str, int] | None:
    query = select(claims.c.state, claims.c.expires_at - epoch_ms()).where(
        claims.c.bot_id == BOT_ID, claims.c.update_id == update_id
    )
    async with engine.connect() as connection:
        row = (await connection.execute(query)).one_or_none()
    return None if row is None else (row[0], row[1])


async def _post(bot: BotProcess, body: dict[str, Any]) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": TEST_SECRET}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{bot.url}/webhook", json=body, headers=headers) as response,
    ):
        return response.status


async def test_a_process_killed_between_claim_and_reply_leaves_the_update_unfinished(
    make_bot_process: Callable[..., BotProcess],
    fake_telegram: FakeTelegram,
    pg_migrated_url: str,
) -> None:
    engine = create_async_engine(pg_migrated_url)
    try:
        hold = asyncio.Event()  # never set: the reply hangs until the process dies
        fake_telegram.script("sendMessage", Scripted(hold=hold))
        body = message_update(user(next_update_id(), "Kim"), "are you there?")
        update_id = body["update_id"]
        first = make_bot_process()
        await first.start()
        delivery = asyncio.create_task(_post(first, body))
        for _ in range(600):  # claimed, and its reply under way
            if fake_telegram.calls_to("sendMessage"):
                break
            await asyncio.sleep(0.05)
        entry = await _entry(engine, update_id)
        assert entry is not None
        assert entry[0] == PROCESSING  # visible as claimed, not answered
        # ...and lapsing by itself soon: the update's whole budget at the default 25 s, + 30 s.
        assert 0 < entry[1] <= (update_budget(25) + 30) * 1000

        first.signal(signal.SIGKILL)
        assert await first.wait(10) == -signal.SIGKILL
        with pytest.raises(aiohttp.ClientError):  # the connection died with the process
            await delivery
        entry = await _entry(engine, update_id)
        assert entry is not None
        assert entry[0] == PROCESSING  # never marked done: Telegram's redelivery must run

        # The claim's expiry, passed at once rather than waited for.
        async with engine.begin() as connection:
            await connection.execute(
                update(claims)
                .where(claims.c.bot_id == BOT_ID, claims.c.update_id == update_id)
                .values(expires_at=epoch_ms() - 1)
            )
        second = make_bot_process()
        await second.start()
        assert await _post(second, body) == 200
        assert await _post(second, body) == 200  # and once more: now a duplicate
        sent = [c for c in fake_telegram.calls_to("sendMessage") if c.status == 200]
        assert len(sent) == 1
        entry = await _entry(engine, update_id)
        assert entry is not None
        assert entry[0] == DONE
    finally:
        await engine.dispose()
