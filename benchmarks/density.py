"""Bot density: many bots in one `python -m bot host` process against one `serve` process each.

    python -m benchmarks.density [--bots 1,10,50,100] [--updates-per-bot 5] [--spread-bots 50]

Prints one table, with the targets of issue 12 beside the measured values:
- RSS of one host serving 1, 10, 50 and 100 bots after the same traffic to every bot (new users'
  /start through real HTTP, so every bot has touched its schema, its cache keys and its Bot),
  next to N times the RSS of one `serve` process after that traffic, and the RSS each added bot
  costs. These hosts run as the chart deploys them (its pool, flood control on, JSON logs).
- updates/s of one host with the traffic spread over 50 bots vs all of it to one bot: same
  process, same total and concurrency (the per-bot in-flight cap, so the one-bot run is not
  answered 503), rounds alternated so the machine's drift hits both alike.
- p99 latency of quiet bots at a gentle rate while one bot is flooded (Telegram's 40
  connections, each waiting the host's Retry-After after a 503), vs their p99 unflooded.
  The flooded bot's 503s are the fairness design (Telegram redelivers them): counted apart.
Throughput and flood run with flood control off (it paces replies to Telegram's limits by
design, 30/s per bot, which a throughput test would only measure as sleep).

PostgreSQL and Redis are this machine's: a database named for the run, dropped at the end with
the per-bot roles the host made; a PROJECT_NAME of the run's own, its keys dropped at the end.
The Bot API is benchmarks.fake_api in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.flood import CONNECTIONS as FLOOD_CONNECTIONS
from benchmarks.harness import (
    CHART_POOL,
    REDIS_URL,
    ROOT,
    Child,
    LoadResult,
    Post,
    create_database,
    drive_posts,
    drop_database,
    drop_keys_after,
    free_port,
    pace,
    posts,
    running,
    start_updates,
    table,
)
from bot.hosting.fair_share import ACTIVE_WINDOW_SECONDS

MIB = 2**20
# Targets of issue 12 (the memory limit one bot has today, charts/hello-bot/values.yaml).
MAX_HOST_MIB = 256.0
MAX_MIB_PER_BOT = 0.5
MIN_SPREAD_RATIO = 0.9
MAX_P99_RATIO = 2.0
# bot.hosting.host.BotHost.max_in_flight with the chart's pool.
IN_FLIGHT_CAP = max(2, (int(CHART_POOL["DB_POOL_SIZE"]) + int(CHART_POOL["DB_MAX_OVERFLOW"])) // 2)
# A host with 100 bots migrates (checks) each before it serves; the loaded machine is slow.
READY_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class BotFile:
    name: str
    bot_id: int
    token: str
    secret: str

    def env(self) -> str:
        return f"BOT_TOKEN={self.token}\nWEBHOOK_SECRET={self.secret}\n"


def fleet(count: int) -> list[BotFile]:
    """`count` bots with tokens of the real shape (nothing real: the Bot API is fake)."""
    ids = [7_100_000 + i for i in range(count)]
    return [
        BotFile(f"b{i:03d}", bot_id, f"{bot_id}:AAdensity{i:04d}_0123456789abcdefghij", f"s-{i}")
        for i, bot_id in enumerate(ids)
    ]


_update_ids = itertools.count(1)
_user_ids = itertools.count(50_000_000)


def new_starts(url: str, bot: BotFile, count: int) -> list[Post]:
    """/start from `count` users the bot has never seen: each one a row, a cache entry, a reply."""
    users = [next(_user_ids) for _ in range(count)]
    return posts(url, bot.secret, start_updates(_take_ids(count), users))


def spread_over(url: Callable[[BotFile], str], bots: list[BotFile], per_bot: int) -> list[Post]:
    """New users' /start to every bot, interleaved as many bots' traffic arrives (not bot
    after bot)."""
    lists = [new_starts(url(bot), bot, per_bot) for bot in bots]
    return [post for group in zip(*lists, strict=True) for post in group]


def _take_ids(count: int) -> int:
    """The first of `count` fresh update ids (unique per run, so dedup never skips one)."""
    first = next(_update_ids)
    for _ in range(count - 1):
        next(_update_ids)
    return first


@dataclass
class Run:
    """What every process of the run shares."""

    api: str
    database: str
    database_url: str
    project: str
    workdir: Path
    non_200: dict[str, int] = field(default_factory=dict)

    def env(self, port: int, *, flood_control: bool) -> dict[str, str]:
        env = {
            "TELEGRAM_API_URL": self.api,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "PROJECT_NAME": self.project,
            "ENVIRONMENT": "production",
            "LOG_FORMAT": "json",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            **CHART_POOL,
        }
        if not flood_control:
            env |= {"TELEGRAM_RATE_LIMIT": "0", "TELEGRAM_CHAT_RATE_LIMIT": "0"}
        return env

    def bots_dir(self, bots: list[BotFile]) -> Path:
        directory = self.workdir / f"bots-{len(bots)}"
        directory.mkdir(exist_ok=True)
        for bot in bots:
            (directory / f"{bot.name}.env").write_text(bot.env())
        return directory

    def count(self, what: str, result: LoadResult) -> None:
        """Non-200 answers where every answer should be 200."""
        bad = sum(n for status, n in result.statuses.items() if status != 200)
        self.non_200[what] = self.non_200.get(what, 0) + bad


@dataclass
class Served:
    """A started `host` or `serve` process and its webhook routes."""

    label: str
    child: Child
    port: int
    single: bool = False

    def url(self, bot: BotFile) -> str:
        base = f"http://127.0.0.1:{self.port}/webhook"
        return base if self.single else f"{base}/{bot.bot_id}"

    async def ready(self) -> None:
        # /readyz answers once every bot of the directory was added (bot.hosting.host.run_host).
        url = f"http://127.0.0.1:{self.port}/readyz"
        seconds = await self.child.wait_http(url, timeout=READY_TIMEOUT)
        progress(f"{self.label} ready after {seconds:.0f} s")


async def launch(
    stack: AsyncExitStack, run: Run, bots: list[BotFile], *, single: bool, flood_control: bool
) -> Served:
    """Started and stopped with the stack (stopped early too, where a phase is done with it)."""
    port = free_port()
    env = run.env(port, flood_control=flood_control)
    if single:
        env |= {"BOT_TOKEN": bots[0].token, "WEBHOOK_SECRET": bots[0].secret}
        label, command = "serve", "serve"
    else:
        env |= {"BOTS_DIR": str(run.bots_dir(bots))}
        label, command = f"host with {len(bots)} bot{'s' * (len(bots) > 1)}", "host"
    child = await stack.enter_async_context(running(Child(["-m", "bot", command], env)))
    return Served(label, child, port, single)


@dataclass
class Memory:
    rss: int
    peak: int


async def memory_after_traffic(
    run: Run, served: Served, bots: list[BotFile], updates_per_bot: int
) -> Memory:
    deliveries = [p for bot in bots for p in new_starts(served.url(bot), bot, updates_per_bot)]
    run.count("traffic to every bot", await drive_posts(deliveries, concurrency=8))
    # Once the last replies and log lines are done.
    await asyncio.sleep(1.0)
    memory = Memory(served.child.rss(), served.child.peak_rss)
    await served.child.stop()
    progress(f"{served.label}: {memory.rss / MIB:.1f} MiB")
    return memory


@dataclass
class Throughput:
    one_bot: list[LoadResult]
    spread: list[LoadResult]

    @property
    def ratio(self) -> float:
        """Median of each round's spread/one-bot ratio: a round's two runs are seconds apart, so
        the machine's drift (other jobs come and go) cancels within a round, not across them."""
        return statistics.median(
            many.rate / one.rate for one, many in zip(self.one_bot, self.spread, strict=True)
        )


async def throughput(
    run: Run, url: Callable[[BotFile], str], bots: list[BotFile], total: int, rounds: int
) -> Throughput:
    """Rounds of: all to the first bot, and spread over every bot; same totals."""
    share = max(1, total // len(bots))

    def one_bot(count: int) -> list[Post]:
        return new_starts(url(bots[0]), bots[0], count)

    def spread(per_bot: int) -> list[Post]:
        return spread_over(url, bots, per_bot)

    per_round = share * len(bots)
    # Warm-up: pools, caches and each bot's first statements; not measured.
    await drive_posts(spread(1), concurrency=IN_FLIGHT_CAP)
    await drive_posts(one_bot(len(bots)), concurrency=IN_FLIGHT_CAP)
    result = Throughput([], [])
    for n in range(rounds):
        # Which goes first alternates, so neither always follows the other's leftovers.
        for mode in (0, 1) if n % 2 == 0 else (1, 0):
            # The host shares its budget among the bots active in the last window: a round
            # starting within it would pay for the previous round's bots.
            await asyncio.sleep(ACTIVE_WINDOW_SECONDS)
            if mode == 0:
                result.one_bot.append(
                    await drive_posts(one_bot(per_round), concurrency=IN_FLIGHT_CAP)
                )
            else:
                result.spread.append(await drive_posts(spread(share), concurrency=IN_FLIGHT_CAP))
    for load in (*result.one_bot, *result.spread):
        run.count("throughput runs", load)
    # Round by round, so a reader can tell a trend from the machine's noise.
    progress(f"upd/s by round: 1 bot {_rates(result.one_bot)}, spread {_rates(result.spread)}")
    return result


def _rates(results: list[LoadResult]) -> str:
    return " ".join(f"{r.rate:.0f}" for r in results)


def _rate(results: list[LoadResult]) -> float:
    return sum(r.count for r in results) / sum(r.seconds for r in results)


@dataclass
class Fairness:
    quiet: LoadResult
    flooded_quiet: LoadResult
    flood_statuses: dict[int, int]
    rate: float


async def fairness(
    run: Run,
    url: Callable[[BotFile], str],
    flooded: BotFile,
    quiet: list[BotFile],
    *,
    rate: float,
    seconds: float,
    rounds: int,
) -> Fairness:
    """Quiet bots' latencies without and with a flood on another bot, alternated."""

    def quiet_traffic() -> list[Post]:
        per_bot = max(1, round(rate * seconds / len(quiet)))
        lists = [new_starts(url(bot), bot, per_bot) for bot in quiet]
        return [p for group in zip(*lists, strict=True) for p in group]

    calm: list[LoadResult] = []
    stormy: list[LoadResult] = []
    flood_statuses: dict[int, int] = {}
    for n in range(rounds):
        calm.append(await pace(quiet_traffic(), rate=rate))
        out = run.workdir / f"flood-{n}.json"
        # Update ids (and users) of their own: the flood never repeats one of ours.
        args = ["--url", url(flooded), "--first-update-id", str(10**9 * (n + 1)), "--out", str(out)]
        env = {"FLOOD_SECRET": flooded.secret}
        async with running(Child(["-m", "benchmarks.flood", *args], env)):
            await _until(out.with_suffix(".started").exists, READY_TIMEOUT)
            await asyncio.sleep(1.0)  # the flood holds its whole share before we measure
            stormy.append(await pace(quiet_traffic(), rate=rate))
        for status, count in json.loads(out.read_text()).items():
            flood_statuses[int(status)] = flood_statuses.get(int(status), 0) + count
    merged = _merge(calm), _merge(stormy)
    for result in merged:
        run.count("quiet bots", result)
    return Fairness(*merged, flood_statuses, rate)


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            msg = f"not started after {timeout} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.05)


def _merge(results: list[LoadResult]) -> LoadResult:
    statuses: dict[int, int] = {}
    for result in results:
        for status, n in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + n
    return LoadResult(
        sum(r.count for r in results),
        sum(r.seconds for r in results),
        [x for r in results for x in r.latencies],
        statuses,
    )


@dataclass
class Sizes:
    bots: list[int]
    updates_per_bot: int
    spread_bots: int
    throughput_updates: int
    rounds: int
    quiet_bots: int
    quiet_rate: float
    quiet_seconds: float


@dataclass
class Results:
    sizes: Sizes
    hosts: dict[int, Memory]
    serve: Memory
    loaded: Memory
    """The throughput and flood host, after all of it."""
    throughput: Throughput
    fairness: Fairness
    non_200: dict[str, int]
    seconds: float
    database: str
    """Dropped by now, with the bots' roles; named so a caller can check."""
    project: str
    """PROJECT_NAME, the Redis key prefix dropped by now."""


async def measure(sizes: Sizes) -> Results:
    started = time.perf_counter()
    bots = fleet(max(*sizes.bots, sizes.spread_bots, sizes.quiet_bots + 1))
    busy_bots = bots[: max(sizes.spread_bots, sizes.quiet_bots + 1)]
    async with prepared("density", bots) as (run, stack):
        # Started together: each start is mostly imports (~20 s of a loaded machine's
        # CPU), and RSS does not depend on what the neighbours do meanwhile.
        hosts = {
            n: await launch(stack, run, bots[:n], single=False, flood_control=True)
            for n in sizes.bots
        }
        serve = await launch(stack, run, bots[:1], single=True, flood_control=True)
        busy = await launch(stack, run, busy_bots, single=False, flood_control=False)
        busy.label += " (flood control off)"
        async with asyncio.TaskGroup() as group:
            for served in (*hosts.values(), serve, busy):
                group.create_task(served.ready())
        # One process at a time from here: the others are idle or stopped.
        upb = sizes.updates_per_bot
        memory = {n: await memory_after_traffic(run, hosts[n], bots[:n], upb) for n in sizes.bots}
        serve_memory = await memory_after_traffic(run, serve, bots[:1], upb)
        progress(f"throughput, {busy.label}")
        rates = await throughput(
            run, busy.url, busy_bots[: sizes.spread_bots], sizes.throughput_updates,
            sizes.rounds,
        )  # fmt: skip
        progress(f"fairness, {busy.label}")
        fair = await fairness(
            run, busy.url, busy_bots[0], busy_bots[1 : sizes.quiet_bots + 1],
            rate=sizes.quiet_rate, seconds=sizes.quiet_seconds, rounds=sizes.rounds,
        )  # fmt: skip
        # What a memory limit must hold under load, beside the figures after light use.
        loaded = Memory(busy.child.rss(), busy.child.peak_rss)
    seconds = time.perf_counter() - started
    return Results(
        sizes,
        memory,
        serve_memory,
        loaded,
        rates,
        fair,
        run.non_200,
        seconds,
        run.database,
        run.project,
    )


@contextlib.asynccontextmanager
async def prepared(kind: str, bots: list[BotFile]) -> AsyncIterator[tuple[Run, AsyncExitStack]]:
    """A run of its own: a database (dropped after, with the bots' roles the host made) with
    every bot's schema migrated, a PROJECT_NAME (its Redis keys dropped after), and the fake
    Bot API; what the caller starts in the stack stops first."""
    api_port = free_port()
    database, database_url = await create_database(f"hb_{kind}")
    project = f"{kind}-{uuid.uuid4().hex[:8]}"
    try:
        with tempfile.TemporaryDirectory() as workdir:
            run = Run(
                f"http://127.0.0.1:{api_port}", database, database_url, project, Path(workdir)
            )
            async with (
                drop_keys_after(REDIS_URL, project),
                running(Child(["-m", "benchmarks.fake_api", "--port", str(api_port)])) as fake,
                AsyncExitStack() as stack,
            ):
                await fake.wait_http(f"{run.api}/stats")
                progress("migrate")
                await migrate(run, bots)
                yield run, stack
    finally:
        await drop_database(database)


async def migrate(run: Run, bots: list[BotFile]) -> None:
    """What the chart's migration Job does before the bots serve: every bot's schema and role
    (with BOTS_DIR), and the single-bot schema `serve` uses; both at once."""
    base = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": run.database_url}
    jobs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "migrate",
            cwd=ROOT,
            env=base | extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for extra in ({"BOTS_DIR": str(run.bots_dir(bots))}, {})
    ]
    for job in jobs:
        output = (await job.communicate())[0].decode()
        if job.returncode != 0:
            msg = f"migrate failed:\n{output[-3000:]}"
            raise RuntimeError(msg)


_began = time.perf_counter()


def progress(what: str) -> None:
    print(f"{time.perf_counter() - _began:5.0f} s  {what} ...", file=sys.stderr, flush=True)


def report(results: Results) -> str:
    sizes = results.sizes
    rows: list[list[str]] = []

    def row(measure: str, value: str, target: str = "", met: bool | None = None) -> None:
        rows.append([measure, value, target, "" if met is None else ("met" if met else "MISSED")])

    counts = sorted(results.hosts)
    serve = results.serve.rss / MIB
    for n in counts:
        memory = results.hosts[n]
        rss = memory.rss / MIB
        largest = n == counts[-1] and n >= 100
        row(
            f"host RSS, {n} bot{'s' * (n > 1)}",
            f"{rss:.1f} MiB (peak {memory.peak / MIB:.1f})",
            f"<= {MAX_HOST_MIB:g} MiB" if largest else "",
            rss <= MAX_HOST_MIB if largest else None,
        )
    busy = max(sizes.spread_bots, sizes.quiet_bots + 1)
    row(
        f"host RSS, {busy} bots, after the upd/s and flood runs",
        f"{results.loaded.rss / MIB:.1f} MiB (peak {results.loaded.peak / MIB:.1f})",
    )
    for n in counts:
        row(
            f"{n} x serve RSS",
            f"{n * serve:,.1f} MiB (host: {results.hosts[n].rss / MIB / (n * serve):.2f}x)",
        )
    pairs = list(itertools.pairwise(counts))
    if len(counts) > 2:
        pairs.append((counts[0], counts[-1]))
    for a, b in pairs:
        per_bot = (results.hosts[b].rss - results.hosts[a].rss) / (b - a) / MIB
        whole = (a, b) == (counts[0], counts[-1])
        row(
            f"RSS per added bot, {a} -> {b}",
            f"{per_bot:.3f} MiB",
            f"<= {MAX_MIB_PER_BOT:g} MiB" if whole else "",
            per_bot <= MAX_MIB_PER_BOT if whole else None,
        )
    t = results.throughput
    row(f"upd/s, all to 1 bot (concurrency {IN_FLIGHT_CAP})", f"{_rate(t.one_bot):.0f}")
    row(f"upd/s, spread over {sizes.spread_bots} bots", f"{_rate(t.spread):.0f}")
    ratio = t.ratio
    row(
        f"upd/s spread / 1 bot (median of {len(t.spread)} rounds)",
        f"{ratio:.2f}x",
        f">= {MIN_SPREAD_RATIO:g}x",
        ratio >= MIN_SPREAD_RATIO,
    )
    f = results.fairness
    quiet = f"{sizes.quiet_bots} quiet bots, {f.rate:g} upd/s"
    calm, stormy = f.quiet.percentile(99), f.flooded_quiet.percentile(99)
    row(f"p99, {quiet}, unflooded", f"{calm * 1000:.1f} ms (p50 {f.quiet.p50 * 1000:.1f})")
    row(
        f"p99, {quiet}, 1 bot flooded",
        f"{stormy * 1000:.1f} ms (p50 {f.flooded_quiet.p50 * 1000:.1f})",
    )
    row(
        "quiet p99 flooded / unflooded",
        f"{stormy / calm:.2f}x",
        f"<= {MAX_P99_RATIO:g}x",
        stormy / calm <= MAX_P99_RATIO,
    )
    answered = ", ".join(f"{n} x {status}" for status, n in sorted(f.flood_statuses.items()))
    row(f"flooded bot ({FLOOD_CONNECTIONS} connections, answers)", answered or "none")
    errors = sum(results.non_200.values())
    detail = ", ".join(f"{what}: {n}" for what, n in results.non_200.items() if n)
    row("non-200 (all but the flooded bot)", f"{errors}" + (f" ({detail})" if detail else ""))
    title = (
        f"density benchmark: {sizes.updates_per_bot} new users' /start per bot before RSS; "
        f"{sizes.throughput_updates} updates x {sizes.rounds} rounds for upd/s; "
        f"quiet traffic {sizes.quiet_seconds:g} s x {sizes.rounds} rounds; "
        f"{results.seconds:.0f} s in all"
    )
    return f"\n{title}\n\n" + table(["measure", "measured", "target", ""], rows, left=1)


def parse(argv: list[str] | None = None) -> Sizes:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bots", default="1,10,50,100", help="host sizes for RSS, ascending")
    parser.add_argument("--updates-per-bot", type=int, default=5)
    parser.add_argument("--spread-bots", type=int, default=50)
    parser.add_argument("--throughput-updates", type=int, default=1000, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=5, help="of upd/s, and of quiet traffic")
    parser.add_argument("--quiet-bots", type=int, default=10)
    parser.add_argument("--quiet-rate", type=float, default=20.0, help="upd/s, all quiet bots")
    parser.add_argument("--quiet-seconds", type=float, default=6.0, help="per round and phase")
    args = parser.parse_args(argv)
    return Sizes(
        bots=sorted({int(n) for n in args.bots.split(",")}),
        updates_per_bot=args.updates_per_bot,
        spread_bots=args.spread_bots,
        throughput_updates=args.throughput_updates,
        rounds=args.rounds,
        quiet_bots=args.quiet_bots,
        quiet_rate=args.quiet_rate,
        quiet_seconds=args.quiet_seconds,
    )


if __name__ == "__main__":
    print(report(asyncio.run(measure(parse()))))
