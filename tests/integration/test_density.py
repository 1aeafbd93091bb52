"""`benchmarks.density` end to end at a tiny size: every row of its table, and nothing left behind
(database, bot roles, Redis keys). Timings are printed by the benchmark, never asserted here."""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio import Redis

from benchmarks.density import measure, parse, report
from bot.db.bot_stores import role_name
from tests.conftest import POSTGRES_ADMIN_DSN, REDIS_URL


@pytest.mark.slow
# Six interpreters start in it (imports alone take ~20 s each on a loaded 2-core machine).
@pytest.mark.timeout(600)
async def test_density_benchmark_runs_end_to_end_and_cleans_up() -> None:
    sizes = parse(
        ["--bots", "1,3", "--updates-per-bot", "2", "--spread-bots", "3",
         "--throughput-updates", "12", "--rounds", "1", "--quiet-bots", "2",
         "--quiet-rate", "10", "--quiet-seconds", "1"]
    )  # fmt: skip
    results = await measure(sizes)
    lines = report(results).splitlines()
    labels = [line.split("  ")[0] for line in lines[5:]]
    assert labels == [
        "host RSS, 1 bot",
        "host RSS, 3 bots",
        "host RSS, 3 bots, after the upd/s and flood runs",
        "1 x serve RSS",
        "3 x serve RSS",
        "RSS per added bot, 1 -> 3",
        "upd/s, all to 1 bot (concurrency 7)",
        "upd/s, spread over 3 bots",
        "upd/s spread / 1 bot (median of 1 rounds)",
        "p99, 2 quiet bots, 10 upd/s, unflooded",
        "p99, 2 quiet bots, 10 upd/s, 1 bot flooded",
        "quiet p99 flooded / unflooded",
        "flooded bot (40 connections, answers)",
        "non-200 (all but the flooded bot)",
    ]
    # Every update but the flooded bot's was answered 200; the flood got its share answered.
    assert lines[-1].split()[-1] == "0", lines[-1]
    assert results.fairness.flood_statuses.get(200, 0) > 0
    memories = (*results.hosts.values(), results.serve, results.loaded)
    assert all(memory.rss > 0 and memory.peak > 0 for memory in memories)
    # The counts each figure rests on, not its value.
    assert results.fairness.quiet.count == results.fairness.flooded_quiet.count == 10

    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        database = results.database
        assert not await connection.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", database
        )
        suffix = role_name(database, "x").rsplit("@", 1)[1]
        assert not await connection.fetchval(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", f"%@{suffix}"
        )
    finally:
        await connection.close()
    redis = Redis.from_url(REDIS_URL)
    try:
        assert [key async for key in redis.scan_iter(match=f"{results.project}:*")] == []
    finally:
        await redis.aclose()
