"""Webhook benchmark: N updates at concurrency C over real HTTP, full stack vs a bare aiogram bot.

    python -m benchmarks.webhook [--updates 3000] [--concurrency 32]

Every variant runs in this one invocation against the same fake Bot API process, so the ratios
are meaningful on a noisy machine. Ours runs with PostgreSQL and Redis (the machine's; its own
database and key prefix), dedup, metrics and JSON logs, and the database pool the chart deploys
(10 + 5); one more row shows new users with the settings' default pool (5 + 10), which
concurrency 32 overflows. Flood control is off in both (it paces replies to Telegram's limits by
design, which a throughput test would only measure as sleep).
Tracing variants send OTLP to the fake API's sink at sampling ratios 0.1 and 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

from benchmarks.bare_bot import SECRET as BARE_SECRET
from benchmarks.bare_bot import TOKEN
from benchmarks.harness import (
    CHART_POOL,
    REDIS_URL,
    ROOT,
    Child,
    LoadResult,
    create_database,
    drive,
    drop_database,
    drop_keys_after,
    free_port,
    import_seconds,
    running,
    start_updates,
    table,
)

SECRET = "bench-secret"
USERS = 500
DEFAULT_POOL = {"DB_POOL_SIZE": "5", "DB_MAX_OVERFLOW": "10"}


@dataclass
class Row:
    name: str
    result: LoadResult
    peak_rss: int
    startup: float


async def bare(api: str, updates: int, concurrency: int, *, freeze: bool) -> Row:
    port = free_port()
    args = ["-m", "benchmarks.bare_bot", "--port", str(port), "--api", api]
    async with running(Child([*args, *(["--freeze-gc"] if freeze else [])])) as child:
        startup = await child.wait_http(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/webhook"
        await drive(url, start_updates(1, _users(200)), concurrency=concurrency, secret=BARE_SECRET)
        result = await drive(
            url, start_updates(10_000, _users(updates)), concurrency=concurrency, secret=BARE_SECRET
        )
        name = "bare aiogram" + (" (frozen GC)" if freeze else "")
    return Row(name, result, child.peak_rss, startup)


_new_user_ids = itertools.count(10_000_000)
# Each run of ours gets update ids of its own: the runs share a database, and its ledger would
# acknowledge a repeated id as a redelivery without processing it.
_update_id_blocks = itertools.count(1, 1_000_000)


def _users(count: int, offset: int = 0) -> list[int]:
    return [1_000_000 + offset + (i % USERS) for i in range(count)]


async def ours(
    api: str,
    database_url: str,
    updates: int,
    concurrency: int,
    *,
    new_users: bool,
    ratio: float | None,
    pool: dict[str, str] = CHART_POOL,
) -> Row:
    port = free_port()
    env = {
        "BOT_TOKEN": TOKEN,
        "WEBHOOK_SECRET": SECRET,
        "TELEGRAM_API_URL": api,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "PROJECT_NAME": f"bench-{uuid.uuid4().hex[:8]}",
        "ENVIRONMENT": "production",
        "LOG_FORMAT": "json",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "TELEGRAM_RATE_LIMIT": "0",
        "TELEGRAM_CHAT_RATE_LIMIT": "0",
        **pool,
    }
    if ratio is not None:
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": api,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        }
    async with (
        drop_keys_after(REDIS_URL, env["PROJECT_NAME"]),
        running(Child(["-m", "bot", "serve"], env)) as child,
    ):
        startup = await child.wait_http(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/webhook"
        first_id = next(_update_id_blocks)
        # Warm-up registers the returning users (and warms pools and the cache); not measured.
        warm_up = start_updates(first_id, _users(USERS))
        await drive(url, warm_up, concurrency=concurrency, secret=SECRET)
        # New users: ids no earlier run in this database has seen.
        users = [next(_new_user_ids) for _ in range(updates)] if new_users else _users(updates)
        result = await drive(
            url, start_updates(first_id + 100_000, users), concurrency=concurrency, secret=SECRET
        )
    kind = "new users (insert)" if new_users else "returning users"
    tracing = "" if ratio is None else f", tracing {ratio:g}"
    if pool is not CHART_POOL:
        kind += f", pool {pool['DB_POOL_SIZE']}+{pool['DB_MAX_OVERFLOW']}"
    return Row(f"hello-bot {kind}{tracing}", result, child.peak_rss, startup)


async def main(updates: int, concurrency: int, tracing: bool) -> None:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    name, database_url = await create_database()
    try:
        subprocess.run(
            [sys.executable, "-m", "bot", "migrate"],
            cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url}, check=True,
            capture_output=True,
        )  # fmt: skip
        async with running(Child(["-m", "benchmarks.fake_api", "--port", str(api_port)])) as fake:
            await fake.wait_http(f"{api}/stats")
            rows = [
                await bare(api, updates, concurrency, freeze=False),
                await bare(api, updates, concurrency, freeze=True),
                await ours(api, database_url, updates, concurrency, new_users=False, ratio=None),
                await ours(api, database_url, updates, concurrency, new_users=True, ratio=None),
                await ours(
                    api, database_url, updates, concurrency, new_users=True, ratio=None,
                    pool=DEFAULT_POOL,
                ),
            ]  # fmt: skip
            if tracing:
                for ratio in (0.1, 1.0):
                    rows.append(
                        await ours(
                            api, database_url, updates, concurrency, new_users=False, ratio=ratio
                        )
                    )
    finally:
        await drop_database(name)
    report(rows, updates, concurrency, import_seconds("aiogram"))


def report(rows: list[Row], updates: int, concurrency: int, aiogram_import: float) -> None:
    bare, frozen = rows[0], rows[1]
    print(
        f"\nwebhook benchmark: {updates} updates, concurrency {concurrency}, 1 sendMessage each\n"
    )
    headers = ["variant", "upd/s", "x bare", "p50 ms", "p95 ms", "p99 ms", "p99 x frozen",
               "peak RSS MiB", "RSS x bare", "start s", "non-200"]  # fmt: skip
    lines = []
    for row in rows:
        r = row.result
        errors = sum(n for status, n in r.statuses.items() if status != 200)
        lines.append([
            row.name, f"{r.rate:.0f}", f"{r.rate / bare.result.rate:.2f}",
            f"{r.p50 * 1000:.1f}",
            f"{r.percentile(95) * 1000:.1f}",
            f"{r.percentile(99) * 1000:.1f}",
            f"{r.percentile(99) / frozen.result.percentile(99):.2f}",
            f"{row.peak_rss / 2**20:.0f}", f"{row.peak_rss / bare.peak_rss:.2f}",
            f"{row.startup:.2f}", str(errors),
        ])  # fmt: skip
    print(table(headers, lines))
    print(f"\n`import aiogram` alone: {aiogram_import:.2f} s (fastest of 3 cold starts)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-tracing", action="store_true", help="skip the tracing variants")
    args = parser.parse_args()
    asyncio.run(main(args.updates, args.concurrency, not args.no_tracing))
