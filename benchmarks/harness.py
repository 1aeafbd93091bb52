"""Shared benchmark plumbing: child processes, a load generator, RSS sampling, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from redis.asyncio import Redis

from bot.db.bot_stores import role_name

ROOT = Path(__file__).resolve().parents[1]
# The machine's services (trust auth), as the test suite uses them; override to point elsewhere.
ADMIN_DSN = os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# charts/hello-bot/values.yaml (bot.dbPoolSize, bot.dbMaxOverflow); tests/chart holds them equal.
CHART_POOL = {"DB_POOL_SIZE": "10", "DB_MAX_OVERFLOW": "5"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A child process whose peak RSS is sampled from start to stop."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Another checkout of the bot (benchmarks.webhook --against) runs from its own tree.
    cwd: Path = ROOT
    # Runs the interpreter under another program (benchmarks.tracing_cost: valgrind).
    prefix: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    peak_rss: int = 0
    started_at: float = 0.0
    _sampler: asyncio.Task[None] | None = None
    _log: Any = None

    async def start(self) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, *self.args],
            cwd=self.cwd,
            env={**os.environ, "PYTHONPATH": str(self.cwd), **self.env},
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: an unread pipe fills up and blocks the child's logging.
            stderr=self._log,
        )
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        assert self.process is not None
        proc = psutil.Process(self.process.pid)
        with contextlib.suppress(psutil.Error):
            while self.process.poll() is None:
                self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
                await asyncio.sleep(0.02)

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far: less noisy than wall time on a shared machine."""
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        """Resident set size now (bytes)."""
        assert self.process is not None
        return int(psutil.Process(self.process.pid).memory_info().rss)

    async def wait_http(self, url: str, timeout: float = 90.0) -> float:
        """Seconds from process start until `url` answers 200."""
        deadline = time.perf_counter() + timeout
        async with aiohttp.ClientSession() as http:
            while time.perf_counter() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    self._log.seek(0)
                    code = self.process.returncode
                    log = self._log.read().decode()[-3000:]
                    msg = f"{self.args} exited early (code {code}):\n{log}"
                    raise RuntimeError(msg)
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return time.perf_counter() - self.started_at
                await asyncio.sleep(0.01)
        msg = f"{url} not ready after {timeout}s"
        raise TimeoutError(msg)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                await asyncio.to_thread(self.process.wait, 60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self._sampler is not None:
            await self._sampler
        self._log.close()


@contextlib.asynccontextmanager
async def running(child: Child) -> AsyncIterator[Child]:
    await child.start()
    try:
        yield child
    finally:
        await child.stop()


async def drop_keys(redis_url: str, prefix: str) -> None:
    """Deletes `prefix:*` from Redis. COUNT 1000: the machine's Redis is shared, and SCAN walks
    every key in it."""
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def drop_keys_after(redis_url: str, prefix: str) -> AsyncIterator[None]:
    """Dedup keys live 25 h: a run that left them made every later SCAN of that Redis slower."""
    try:
        yield
    finally:
        await drop_keys(redis_url, prefix)


async def create_database(prefix: str = "hb_bench") -> tuple[str, str]:
    """A fresh database named for this run: (name, SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{base}/{name}"


async def drop_database(name: str) -> None:
    """Drops the database, then the bot roles a host made for it: roles belong to the whole
    cluster and outlive the database (bot.db.bot_stores.role_name ties them to its name)."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = role_name(name, "x").rsplit("@", 1)[1]
        roles = await connection.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1", f"bot\\_%@{suffix}"
        )
        for (role,) in roles:
            await connection.execute(f'DROP ROLE "{role}"')
    finally:
        await connection.close()


@dataclass
class LoadResult:
    count: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


@dataclass(frozen=True, slots=True)
class Post:
    """One webhook delivery: where, with which secret, what."""

    url: str
    secret: str
    body: bytes


def posts(url: str, secret: str, updates: Iterable[dict[str, Any]]) -> list[Post]:
    return [Post(url, secret, json.dumps(update).encode()) for update in updates]


async def deliver(http: aiohttp.ClientSession, post: Post) -> tuple[int, float]:
    """POSTs one update as Telegram does; returns (status, seconds)."""
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": post.secret}
    started = time.perf_counter()
    async with http.post(post.url, data=io.BytesIO(post.body), headers=headers) as response:
        await response.read()
    return response.status, time.perf_counter() - started


async def drive(
    url: str, updates: Iterable[dict[str, Any]], *, concurrency: int, secret: str
) -> LoadResult:
    """POSTs every update with `concurrency` connections; latency per request, wall time total."""
    return await drive_posts(posts(url, secret, updates), concurrency=concurrency)


async def drive_posts(deliveries: Iterable[Post], *, concurrency: int) -> LoadResult:
    """`drive` for deliveries that may go to several bots (routes and secrets)."""
    queue: asyncio.Queue[Post] = asyncio.Queue()
    for post in deliveries:
        queue.put_nowait(post)
    count = queue.qsize()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            while not queue.empty():
                status, seconds = await deliver(http, queue.get_nowait())
                latencies.append(seconds)
                statuses[status] = statuses.get(status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return LoadResult(count, seconds, latencies, statuses)


async def pace(deliveries: Iterable[Post], *, rate: float) -> LoadResult:
    """Open loop: one delivery every 1/rate s whatever the answers, as quiet traffic arrives;
    a slow server shows as latency, not as a lower rate."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(post: Post) -> None:
            status, seconds = await deliver(http, post)
            latencies.append(seconds)
            statuses[status] = statuses.get(status, 0) + 1

        began = time.perf_counter()
        tasks = []
        for i, post in enumerate(deliveries):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(post)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - began
    return LoadResult(len(tasks), seconds, latencies, statuses)


def start_updates(first_id: int, user_ids: Iterable[int]) -> list[dict[str, Any]]:
    """/start from each user in turn, with unique update_ids."""
    now = int(time.time())
    return [
        {
            "update_id": first_id + i,
            "message": {
                "message_id": i + 1,
                "date": now,
                "chat": {"id": uid, "type": "private", "first_name": f"User{uid}"},
                "from": {
                    "id": uid,
                    "is_bot": False,
                    "first_name": f"User{uid}",
                    "language_code": "en",
                },
                "text": "/start",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
            },
        }
        for i, uid in enumerate(user_ids)
    ]


def import_seconds(module: str, runs: int = 3) -> float:
    """Fastest of `runs` cold imports in a fresh interpreter."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT)
        best = min(best, time.perf_counter() - started)
    return best


def table(headers: list[str], rows: list[list[str]], *, left: int = 0) -> str:
    """Columns right-aligned, but the first `left` ones (labels read better flush left)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    align = lambda i, c, w: c.ljust(w) if i < left else c.rjust(w)  # noqa: E731
    line = lambda cells: "  ".join(  # noqa: E731
        align(i, c, w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
