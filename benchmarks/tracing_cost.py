"""What tracing costs `serve`, in instructions per update: repeatable on a busy machine.

    python -m benchmarks.tracing_cost [--updates 600] [--ratios 0.1 1.0]

benchmarks.webhook measures the same thing as CPU time and throughput, and on a shared 2-core
machine those move by 10-30% between identical runs, more than the 5% being measured.
callgrind counts the instructions the process executes instead, which another process on the
machine does not change. Each variant runs `serve` under `valgrind --tool=callgrind` with
collection off; it is switched on (`callgrind_control -i on`) only for the measured updates,
after start-up and a warm-up, and off again once the batch span processor has exported what
they produced. Both the event loop and the exporter's thread are counted. Under valgrind the bot
runs ~20x slower, so keep `--updates` in the hundreds: at ratio 0.1, 600 updates sample ~60.
Off and 1.0 repeat within 1% between runs; how many updates a sampled run traces moves (8.7% to
11.8% at 0.1), so read the line "at exactly" (the split), and compare several runs
(docs/observability.md). `--ratios 0` measures what an unsampled update pays on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.callgrind import Callgrind, require_valgrind
from benchmarks.harness import (
    CHART_POOL,
    REDIS_URL,
    Child,
    create_database,
    drive,
    drop_database,
    drop_keys_after,
    free_port,
    running,
    start_updates,
    table,
)
from benchmarks.webhook import SECRET, USERS, _users, migrate, serve_env

# The batch processor exports on a timer (OTEL_BSP_SCHEDULE_DELAY, 5 s by default) or at 512
# spans. At full speed 5 s is ~2,000 updates; under valgrind (~20x slower) it would be ~100, and
# each export's fixed cost (an HTTP request, the resource) would weigh 20x more per update than
# in production. 30 s keeps that within a fraction of a percent. After the last update the
# measured window stays open one delay more, so that update's spans are exported inside it.
EXPORT_DELAY_SECONDS = 30.0
EXPORT_SETTLE_SECONDS = EXPORT_DELAY_SECONDS + 1.0


async def traced_so_far(api: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{api}/stats") as response:
        return int((await response.json()).get("otlp_traces", 0))


async def instructions_per_update(
    api: str, database_url: str, updates: int, *, ratio: float | None, out: Path, first_id: int
) -> tuple[float, int]:
    """Instructions per measured update, and how many of those updates were traced."""
    port = free_port()
    env = serve_env(api, database_url, port, ratio=ratio, pool=CHART_POOL)
    env["OTEL_BSP_SCHEDULE_DELAY"] = str(int(EXPORT_DELAY_SECONDS * 1000))
    callgrind = Callgrind(out, host=env["HOST"])
    child = Child(["-m", "bot", "serve"], env, prefix=callgrind.prefix())
    async with drop_keys_after(REDIS_URL, env["PROJECT_NAME"]), running(child):
        await child.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=600)
        url = f"http://127.0.0.1:{port}/webhook"
        # Registers the returning users, fills the cache and the pools, and exports a first
        # batch of spans (lazy imports and first-call costs stay out of the count).
        await drive(url, start_updates(first_id, _users(USERS)), concurrency=32, secret=SECRET)
        await asyncio.sleep(EXPORT_SETTLE_SECONDS)
        traced_before = await traced_so_far(api)
        async with callgrind.counting(child, "measured"):
            await drive(
                url,
                start_updates(first_id + 100_000, _users(updates)),
                concurrency=32,
                secret=SECRET,
            )
            await asyncio.sleep(EXPORT_SETTLE_SECONDS)
        traced = await traced_so_far(api) - traced_before
    return callgrind.dumped()["measured"] / updates, traced


async def main(updates: int, ratios: list[float], keep: Path | None) -> None:
    require_valgrind()
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    name, database_url = await create_database()
    results: list[tuple[float | None, float, int, float]] = []
    try:
        migrate(database_url)
        async with running(Child(["-m", "benchmarks.fake_api", "--port", str(api_port)])) as fake:
            await fake.wait_http(f"{api}/stats")
            with tempfile.TemporaryDirectory(prefix="hb-callgrind-") as tmp:
                out_dir = keep or Path(tmp)
                for index, ratio in enumerate([None, *ratios]):
                    started = time.perf_counter()
                    per_update, traced = await instructions_per_update(
                        api,
                        database_url,
                        updates,
                        ratio=ratio,
                        out=out_dir / f"callgrind.{'off' if ratio is None else ratio}.out",
                        first_id=1 + index * 1_000_000,
                    )
                    results.append((ratio, per_update, traced, time.perf_counter() - started))
    finally:
        await drop_database(name)
    report(updates, results)


def report(updates: int, results: list[tuple[float | None, float, int, float]]) -> None:
    base = results[0][1]
    print(f"\ntracing cost: {updates} /start updates from returning users, concurrency 32\n")
    rows = [
        [
            "tracing off" if ratio is None else f"tracing {ratio:g}",
            f"{ir / 1e6:.2f} M",
            f"{ir / base:.3f}",
            f"{traced} ({traced / updates:.1%})",
            f"{seconds:.0f}",
        ]
        for ratio, ir, traced, seconds in results
    ]
    headers = ["variant", "instructions/update", "x off", "traced", "wall s (valgrind)"]
    print(table(headers, rows))
    # A ratio's cost = what every update pays + what each traced one adds, times the share
    # traced. The run at 1.0 and a sampled run, each with its own count of traces, give both
    # terms; the figure at exactly the ratio is then free of how many updates this run sampled.
    full = [(ir, traced / updates) for ratio, ir, traced, _ in results if ratio == 1.0]
    if not full:
        return
    full_ir, full_share = full[0]
    for ratio, ir, traced, _ in results:
        share = traced / updates
        if ratio is None or ratio == 1.0 or share >= full_share:
            continue
        per_trace = (full_ir - ir) / (full_share - share)
        every_update = ir - base - per_trace * share
        exact = (base + every_update + per_trace * ratio) / base
        print(
            f"tracing {ratio:g} at exactly {ratio:.0%} traced: {exact:.3f}x off "
            f"(every update pays {every_update / base:+.1%}, each traced one "
            f"{per_trace / base:+.0%})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the callgrind files here (callgrind_annotate)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.updates, args.ratios, args.keep))
