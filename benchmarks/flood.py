"""A flood on one bot's webhook, as Telegram delivers one: `connections` at once, each waiting
the host's Retry-After after a 503 before it delivers again. Runs until SIGTERM, then writes
the answers' statuses (JSON) to `--out`.

Its own process, so the flood's client work does not sit in the event loop that times the
quiet bots' requests (benchmarks.density). The secret comes from FLOOD_SECRET, not argv.
    FLOOD_SECRET=... python -m benchmarks.flood --url URL --first-update-id N --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
from pathlib import Path

import aiohttp

from benchmarks.harness import deliver, posts, start_updates

# Telegram's default max_connections towards one webhook.
CONNECTIONS = 40
# The host's Retry-After on a 503 (bot.hosting.host.BotHost.handle).
RETRY_AFTER = 1.0


async def flood(url: str, secret: str, first_update_id: int, started: Path) -> dict[int, int]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    ids = itertools.count(first_update_id)
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def connection() -> None:
            while not stop.is_set():
                # A new user each time: a row, a cache entry and a reply, as the quiet bots get.
                update_id = next(ids)
                post = posts(url, secret, start_updates(update_id, [update_id]))[0]
                status, _ = await deliver(http, post)
                statuses[status] = statuses.get(status, 0) + 1
                started.touch()
                if status == 503:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), RETRY_AFTER)

        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--first-update-id", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = args.out.with_suffix(".started")
    statuses = asyncio.run(
        flood(args.url, os.environ["FLOOD_SECRET"], args.first_update_id, started)
    )
    args.out.write_text(json.dumps(statuses))


if __name__ == "__main__":
    main()
