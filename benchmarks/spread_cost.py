"""What spreading traffic over many bots costs the bot host, in instructions per update.

    python -m benchmarks.spread_cost [--bots 50] [--updates 400] [--rounds 2]

benchmarks.density measures issue 12's throughput target (traffic over 50 bots at least 0.9x
all of it to one bot) as updates/s, whose median ratio moved between 0.85 and 1.13 from run to
run on this machine. Here one host with `--bots` bots runs under callgrind (benchmarks.callgrind)
and the same new users' /start load is sent to its first bot alone and spread over all of them,
in alternating rounds, with the host's own in-flight cap as concurrency (as density does).
Instructions per update do not move with the machine's load; where the host's CPU is what
limits throughput, one-bot instructions / spread instructions is the throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from benchmarks.callgrind import Callgrind, require_valgrind
from benchmarks.density import (
    IN_FLIGHT_CAP,
    MIN_SPREAD_RATIO,
    BotFile,
    Served,
    fleet,
    new_starts,
    prepared,
    spread_over,
)
from benchmarks.harness import (
    Child,
    Post,
    drive_posts,
    free_port,
    running,
    table,
)
from bot.hosting.fair_share import ACTIVE_WINDOW_SECONDS


def one_bot(served: Served, bots: list[BotFile], count: int) -> list[Post]:
    return new_starts(served.url(bots[0]), bots[0], count)


async def measure(bot_count: int, updates: int, rounds: int, out: Path) -> dict[str, int]:
    """Instructions per phase label (`1 bot, round 1`, `spread, round 1`, ...)."""
    bots = fleet(bot_count)
    per_bot = max(1, updates // bot_count)
    async with prepared("spread", bots) as (run, stack):
        port = free_port()
        env = run.env(port, flood_control=False) | {"BOTS_DIR": str(run.bots_dir(bots))}
        callgrind = Callgrind(out, host=env["HOST"])
        child = Child(["-m", "bot", "host"], env, prefix=callgrind.prefix())
        await stack.enter_async_context(running(child))
        await child.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=1200)
        served = Served("host", child, port)
        # Warm-up: each bot's pools, caches and first statements; not counted.
        await drive_posts(spread_over(served.url, bots, 1), concurrency=IN_FLIGHT_CAP)
        await drive_posts(one_bot(served, bots, bot_count), concurrency=IN_FLIGHT_CAP)
        for n in range(1, rounds + 1):
            for label in ("1 bot", "spread"):
                # The host shares its budget among the bots active in the last window.
                await asyncio.sleep(ACTIVE_WINDOW_SECONDS)
                load = (
                    one_bot(served, bots, per_bot * bot_count)
                    if label == "1 bot"
                    else spread_over(served.url, bots, per_bot)
                )
                async with callgrind.counting(child, f"{label}, round {n}"):
                    result = await drive_posts(load, concurrency=IN_FLIGHT_CAP)
                if bad := sum(c for s, c in result.statuses.items() if s != 200):
                    msg = f"{label}, round {n}: {bad} answers were not 200"
                    raise RuntimeError(msg)
        return callgrind.dumped()


def report(bot_count: int, updates: int, counts: dict[str, int]) -> str:
    per_update = {label: total / updates for label, total in sorted(counts.items())}
    one = [v for label, v in per_update.items() if label.startswith("1 bot")]
    many = [v for label, v in per_update.items() if label.startswith("spread")]
    ratio = sum(many) / sum(one)
    rows = [[label, f"{v / 1e6:.2f} M"] for label, v in per_update.items()]
    verdict = "met" if 1 / ratio >= MIN_SPREAD_RATIO else "MISSED"
    return (
        f"\nhost with {bot_count} bots, {updates} new users' /start per phase\n\n"
        + table(["phase", "instructions/update"], rows)
        + f"\n\nspread / 1 bot: {ratio:.3f}x instructions per update, i.e. "
        f"{1 / ratio:.3f}x the one-bot throughput where the host's CPU limits it "
        f"(target >= {MIN_SPREAD_RATIO}x: {verdict})"
    )


async def main(bot_count: int, updates: int, rounds: int) -> None:
    require_valgrind()
    with tempfile.TemporaryDirectory(prefix="hb-callgrind-") as tmp:
        counts = await measure(bot_count, updates, rounds, Path(tmp) / "callgrind.host.out")
    print(report(bot_count, (updates // bot_count) * bot_count, counts))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bots", type=int, default=50)
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.bots, args.updates, args.rounds))
