"""End-to-end resilience harness: the real `python -m bot serve`, driven the way Telegram does.

A simulated Telegram delivers updates over HTTP (secret header, up to 100 parallel connections,
redelivering every non-2xx answer, connection error or timeout with the same update_id, with a
bounded backoff until a per-scenario deadline). The fake Bot API server records every call, so a
scenario can count, per update, how many replies took effect at "Telegram".

Attribution: every update is a private-chat topic message whose ``message_thread_id`` is its
update_id; the bot's ``message.answer`` carries the thread id back, so each recorded
``sendMessage`` names the update it answers. Per update:
- lost: acknowledged with 200 but never answered, or never acknowledged before the deadline;
- duplicates: replies beyond the first, less those explained by a send that took effect while
  its answer was lost (the fake's ``delivered`` fault; counted apart as ``ack-lost dups``).

Both `tests/e2e/test_resilience.py` (small counts) and `benchmarks/resilience.py` (full size)
run the scenarios below.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import json
import random
import signal
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.harness import drop_keys
from bot.db.migrations import upgrade_to_head
from bot.db.models import User
from tests.conftest import TEST_SECRET, TEST_TOKEN
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import Call, FakeTelegram, Scripted
from tests.support.servers import ThrowawayPostgres, ThrowawayRedis
from tests.support.updates import message_update, user

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MiB = 1024 * 1024


# --------------------------------------------------------------------------- sizes and results


@dataclass(frozen=True)
class Sizes:
    """How much traffic each scenario sends; `fast` for the test suite, `full` for the note."""

    burst_updates: int
    burst_users: int
    updates: int  # per fault scenario
    rate: float  # updates released per second in the fault scenarios
    hostile_rounds: int
    # Flood-control scenarios: updates from one chat at once (paced at 1/s), and distinct users
    # at once (paced at 30/s).
    chat_burst: int = 30
    global_burst_users: int = 300
    # Soak: updates at a steady rate through one process, RSS sampled as they go.
    soak_updates: int = 6000
    soak_rate: float = 250

    @classmethod
    def fast(cls) -> Sizes:
        return cls(burst_updates=400, burst_users=40, updates=240, rate=80, hostile_rounds=3)

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            burst_updates=5000, burst_users=500, updates=2000, rate=200, hostile_rounds=40,
            global_burst_users=900, soak_updates=50_000, soak_rate=300,
        )  # fmt: skip


@dataclass
class Row:
    scenario: str
    sent: int = 0
    deliveries: int = 0
    replied: int = 0
    duplicates: int = 0
    ack_lost_duplicates: int = 0
    ack_lost_sends: int = 0
    lost: int = 0
    answered_5xx: int = 0
    p99_ms: float = 0.0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicates == 0 and not self.failures


COLUMNS = (
    ("scenario", 50), ("sent", 6), ("posts", 6), ("replied", 7), ("dups", 5),
    ("ack-lost dups", 13), ("lost", 5), ("5xx", 5), ("p99 ms", 7), ("secs", 5), ("verdict", 7),
)  # fmt: skip


def format_table(rows: list[Row]) -> str:
    lines = ["  ".join(name.ljust(width) for name, width in COLUMNS)]
    lines.append("  ".join("-" * width for _, width in COLUMNS))
    for row in rows:
        cells = (
            row.scenario, row.sent, row.deliveries, row.replied, row.duplicates,
            f"{row.ack_lost_duplicates}/{row.ack_lost_sends}", row.lost, row.answered_5xx,
            f"{row.p99_ms:.0f}", f"{row.seconds:.0f}", "PASS" if row.passed else "FAIL",
        )  # fmt: skip
        lines.append("  ".join(str(c).ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    for row in rows:
        lines.extend(f"  {row.scenario}: FAIL {failure}" for failure in row.failures)
        lines.extend(f"  {row.scenario}: {note}" for note in row.notes)
    return "\n".join(lines)


# --------------------------------------------------------------------------- updates


@dataclass
class Tracked:
    """One update as the simulated Telegram sees it."""

    update_id: int
    chat_id: int
    body: bytes
    statuses: list[int] = field(default_factory=list)
    acked: bool = False
    gave_up: bool = False


_update_ids = itertools.count(random.randint(10**8, 9 * 10**8) * 100)


class Traffic:
    """Realistic updates from a fixed set of users, each carrying its attribution marker."""

    def __init__(self, users: int, *, start_share: float = 0.3) -> None:
        base = random.randint(10**9, 5 * 10**9)
        self.users = [user(base + i, f"U{i}", language_code="en") for i in range(users)]
        self.start_share = start_share
        self.rng = random.Random(base)

    def make(self, count: int) -> list[Tracked]:
        return [self.one(self.users[i % len(self.users)]) for i in range(count)]

    def one(self, sender: dict[str, Any]) -> Tracked:
        update_id = next(_update_ids)
        roll = self.rng.random()
        if roll < self.start_share:
            text, kind = "/start", "message"
        elif roll < self.start_share + 0.1:
            text, kind = "/help", "message"
        elif roll < self.start_share + 0.15:
            text, kind = f"edited {update_id}", "edited_message"
        else:
            text, kind = f"hello {update_id}", "message"
        update = message_update(
            sender, text, update_id=update_id, kind=kind,
            message_thread_id=update_id, is_topic_message=True,
        )  # fmt: skip
        return Tracked(update_id, sender["id"], json.dumps(update).encode())


# --------------------------------------------------------------------------- simulated Telegram


class SimulatedTelegram:
    """Delivers updates to the webhook and redelivers each until it is acknowledged with 2xx."""

    def __init__(
        self,
        target: str,
        *,
        connections: int = 100,
        attempt_timeout: float = 30.0,
        max_backoff: float = 1.0,
    ) -> None:
        self.target = target
        # Set: each POST goes to one of these at random, as a Service spreads Telegram's
        # deliveries (and its retries) over the replicas behind it.
        self.replicas: list[str] = []
        self.connections = connections
        self.attempt_timeout = attempt_timeout
        self.max_backoff = max_backoff
        self.deadline = float("inf")
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.acked = 0
        self._slots = asyncio.Semaphore(connections)
        self._http: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SimulatedTelegram]:
        connector = aiohttp.TCPConnector(limit=self.connections)
        timeout = aiohttp.ClientTimeout(total=self.attempt_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            self._http = http
            yield self

    async def deliver(self, item: Tracked) -> None:
        """One delivery of `item`: retried until 2xx or the deadline (then Telegram gives up)."""
        attempt = 0
        while True:
            status = await self.post(item.body)
            item.statuses.append(status)
            if 200 <= status < 300:
                if not item.acked:
                    self.acked += 1
                item.acked = True
                return
            if time.monotonic() >= self.deadline:
                item.gave_up = True
                return
            attempt += 1
            backoff = min(self.max_backoff, 0.02 * 2**attempt)
            await asyncio.sleep(backoff * (0.5 + random.random()))

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> int:
        """One POST; 0 stands for a connection error or timeout."""
        assert self._http is not None
        sent_headers = {"Content-Type": "application/json", SECRET_HEADER: TEST_SECRET}
        if headers is not None:
            sent_headers = headers
        target = random.choice(self.replicas) if self.replicas else self.target
        async with self._slots:
            started = time.perf_counter()
            try:
                async with self._http.post(
                    target + "/webhook", data=io.BytesIO(body), headers=sent_headers
                ) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            else:
                self.latencies.append(time.perf_counter() - started)
        self.statuses[status] += 1
        return status

    async def run(
        self,
        items: list[Tracked],
        *,
        rate: float | None = None,
        give_up_after: float = 60.0,
        copies: Callable[[int], int] | None = None,
    ) -> None:
        """Deliver every item, released at `rate` per second (None: all at once); `copies(i)`
        says how many concurrent deliveries item i gets (Telegram redelivering concurrently)."""
        self.deadline = time.monotonic() + give_up_after + (len(items) / rate if rate else 0)
        started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        for index, item in enumerate(items):
            if rate:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the load schedule, not synchronisation
            for _ in range(copies(index) if copies else 1):
                tasks.append(asyncio.create_task(self.deliver(item)))
        await asyncio.gather(*tasks)

    def p99_ms(self) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, row: Row | None = None
) -> bool:
    """Bounded polling for a condition; on time-out, raises (or records a failure in `row`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if row is None:
                raise TimeoutError(msg)
            row.failures.append(msg)
            return False
        await asyncio.sleep(0.02)
    return True


# --------------------------------------------------------------------------- accounting


def account(row: Row, items: list[Tracked], fake: FakeTelegram, sim: SimulatedTelegram) -> Row:
    """Counts, per update, the replies that took effect at the fake Bot API."""
    delivered: dict[int, int] = defaultdict(int)
    ack_lost: dict[int, int] = defaultdict(int)
    chats: dict[int, set[int]] = defaultdict(set)
    unattributed = 0
    for call in fake.calls_to("sendMessage"):
        thread = call.params.get("message_thread_id")
        if thread is None:
            unattributed += 1
            continue
        thread = int(thread)
        chats[thread].add(int(call.params["chat_id"]))
        if call.delivered:
            delivered[thread] += 1
            if call.status != 200:
                ack_lost[thread] += 1
    row.sent = len(items)
    row.deliveries = sum(sim.statuses.values())
    row.answered_5xx = sum(n for status, n in sim.statuses.items() if status >= 500)
    row.p99_ms = sim.p99_ms()
    for item in items:
        replies = delivered.get(item.update_id, 0)
        if replies:
            row.replied += 1
        if not item.acked or replies == 0:
            row.lost += 1
        extra = max(0, replies - 1)
        explained = min(extra, ack_lost.get(item.update_id, 0))
        row.duplicates += extra - explained
        row.ack_lost_duplicates += explained
        if chats.get(item.update_id, {item.chat_id}) != {item.chat_id}:
            row.failures.append(f"update {item.update_id} answered in another chat")
    row.ack_lost_sends = sum(ack_lost.values())
    if unattributed:
        row.failures.append(f"{unattributed} sendMessage calls without a thread marker")
    gave_up = sum(item.gave_up for item in items)
    if gave_up:
        row.notes.append(f"simulated Telegram gave up on {gave_up} updates")
    unexpected = {s: n for s, n in sim.statuses.items() if 0 < s < 500 and s != 200}
    if unexpected:
        row.failures.append(f"unexpected answers to valid updates: {unexpected}")
    if sim.statuses.get(0):
        row.notes.append(f"{sim.statuses[0]} connection errors/timeouts (redelivered)")
    return row


# --------------------------------------------------------------------------- environment


@dataclass
class Environment:
    """Where the bot's shared services are (the machine's PostgreSQL database and Redis)."""

    database_url: str
    redis_url: str
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hb-e2e-")))
    quiet: bool = True
    keep_logs: bool = False  # write each bot's output to workdir/<project>.log


def bot_env(env: Environment, fake: FakeTelegram, project: str, **extra: str) -> dict[str, str]:
    return {
        "BOT_TOKEN": TEST_TOKEN,
        "WEBHOOK_SECRET": TEST_SECRET,
        "TELEGRAM_API_URL": fake.url,
        "DATABASE_URL": env.database_url,
        "REDIS_URL": env.redis_url,
        "PROJECT_NAME": project,
        "ENVIRONMENT": "production",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING" if env.quiet else "INFO",
        # Load scenarios measure exactly-once, not pacing: flood control off (its own tests
        # cover it); 10 messages per user would otherwise take 10 s per user by design.
        "TELEGRAM_RATE_LIMIT": "0",
        "TELEGRAM_CHAT_RATE_LIMIT": "0",
        "WEBHOOK_MAX_CONNECTIONS": "100",
        "DB_POOL_SIZE": "10",
        **extra,
    }


@contextlib.asynccontextmanager
async def scenario_setup(
    env: Environment, row: Row, **extra: str
) -> AsyncIterator[tuple[FakeTelegram, BotProcess, str]]:
    """A fresh fake Bot API, a key namespace and a running bot; cleaned up however it ends."""
    fake = FakeTelegram()
    await fake.start()
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    bot = BotProcess(bot_env(env, fake, project, **extra), cwd=env.workdir)
    started = time.monotonic()
    try:
        await bot.start()
        yield fake, bot, project
    finally:
        code = await bot.stop()
        if code != 0:
            row.failures.append(f"bot exited with {code}")
        await fake.stop()
        await drop_keys(env.redis_url, project)
        row.seconds = time.monotonic() - started
        row.notes.extend(_crash_lines(bot))
        if env.keep_logs:
            log_file = env.workdir / f"{project}.log"
            log_file.write_text(bot.text)
            row.notes.append(f"bot log in {log_file}")


def _crash_lines(bot: BotProcess) -> list[str]:
    marks = ("Traceback", "update_crashed", "update_failed")
    seen = [line for line in bot.text.splitlines() if any(m in line for m in marks)]
    return [f"bot log: {line[:200]}" for line in seen[:3]]


# --------------------------------------------------------------------------- scenarios


async def burst(env: Environment, sizes: Sizes) -> Row:
    """5,000 updates from 500 users at once over 100 connections (new and returning users)."""
    row = Row("1 burst")
    traffic = Traffic(sizes.burst_users)
    items = traffic.make(sizes.burst_updates)
    async with scenario_setup(env, row) as (fake, bot, _):
        sim = SimulatedTelegram(bot.url)
        async with sim.running():
            await sim.run(items)
    account(row, items, fake, sim)
    await check_registered(row, env.database_url, items)
    # Every user who sent /start was greeted as new exactly once (fresh users, concurrent firsts).
    starters = {i.chat_id for i in items if b'"text": "/start"' in i.body}
    greeted = Counter(
        int(c.params["chat_id"])
        for c in fake.calls_to("sendMessage")
        if c.delivered and "Nice to meet you" in c.params.get("text", "")
    )
    if set(greeted) != starters or any(n != 1 for n in greeted.values()):
        row.failures.append(f"{len(starters)} new users, {sum(greeted.values())} first greetings")
    row.notes.append(f"{len(starters)} users sent /start, each greeted as new once")
    return row


async def redelivery(env: Environment, sizes: Sizes) -> Row:
    """Telegram redelivers a share of updates: later (after the ack) and concurrently."""
    row = Row("2 redelivery")
    items = Traffic(max(10, sizes.updates // 10)).make(sizes.updates)
    async with scenario_setup(env, row) as (fake, bot, _):
        sim = SimulatedTelegram(bot.url)
        async with sim.running():
            # 20% arrive 2-3 times at once; then 30% arrive again after they were acknowledged.
            await sim.run(items, rate=sizes.rate, copies=lambda i: 1 + (i % 10 < 2) + (i % 10 < 1))
            again = [item for index, item in enumerate(items) if index % 10 in (2, 3, 4)]
            await asyncio.gather(*(sim.deliver(item) for item in again))
    account(row, items, fake, sim)
    extra = row.deliveries - row.sent
    row.notes.append(f"{extra} redeliveries of already-sent update_ids")
    return row


async def redis_outage(env: Environment, sizes: Sizes) -> Row:
    """A throwaway Redis (the dedup store) stopped mid-run and started again, empty."""
    row = Row("3 redis stop/start")
    redis = ThrowawayRedis()
    await asyncio.to_thread(redis.start)
    items = Traffic(max(10, sizes.updates // 10)).make(sizes.updates)
    local = dataclasses.replace(env, redis_url=redis.url)
    try:
        async with scenario_setup(local, row) as (fake, bot, _):
            sim = SimulatedTelegram(bot.url)
            async with sim.running():

                async def chaos() -> None:
                    await wait_until(lambda: sim.acked >= len(items) // 3, 120, "a third acked")
                    await asyncio.to_thread(redis.stop)
                    await wait_until(lambda: sim.acked >= 2 * len(items) // 3, 120, "2/3 acked")
                    await asyncio.to_thread(redis.start)
                    await _await_cache_back(bot)

                await asyncio.gather(sim.run(items, rate=sizes.rate), chaos())
                # Telegram redelivers some updates whose ack it missed, after Redis came back
                # (it restarted empty: the "done" marks it held are gone).
                again = items[:: max(1, len(items) // 50)]
                await asyncio.gather(*(sim.deliver(item) for item in again))
            account(row, items, fake, sim)
            row.notes.append(f"{len(again)} acknowledged updates redelivered after the restart")
    finally:
        await asyncio.to_thread(redis.stop)
    return row


async def _await_cache_back(bot: BotProcess) -> None:
    async def redis_ok() -> bool:
        async with aiohttp.ClientSession() as http, http.get(bot.url + "/readyz") as response:
            return (await response.json())["checks"]["redis"]["status"] == "ok"

    deadline = time.monotonic() + 30
    while not await redis_ok():
        if time.monotonic() > deadline:
            msg = "the bot never saw Redis again"
            raise TimeoutError(msg)
        await asyncio.sleep(0.1)


async def postgres_restart(env: Environment, sizes: Sizes) -> Row:
    """A throwaway PostgreSQL stopped and started mid-run: updates needing it get 5xx meanwhile
    and succeed when Telegram redelivers them."""
    row = Row("4 postgres restart")
    pg = await asyncio.to_thread(ThrowawayPostgres)
    await asyncio.to_thread(pg.start)
    try:
        engine = create_async_engine(pg.url())
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
        # Many users, mostly /start: first contacts write to the database (returning users with
        # an unchanged, cached profile would not notice the outage).
        items = Traffic(sizes.updates // 2, start_share=0.7).make(sizes.updates)
        local = dataclasses.replace(env, database_url=pg.url())
        async with scenario_setup(local, row) as (fake, bot, _):
            sim = SimulatedTelegram(bot.url)
            async with sim.running():

                async def chaos() -> None:
                    await wait_until(lambda: sim.acked >= len(items) // 3, 120, "a third acked")
                    five_xx = _count_5xx(sim)
                    await asyncio.to_thread(pg.stop, "fast")
                    # Down until Telegram has seen the outage on some updates, then back.
                    await wait_until(lambda: _count_5xx(sim) >= five_xx + 5, 30, "5xx answers", row)
                    await asyncio.to_thread(pg.start)

                await asyncio.gather(sim.run(items, rate=sizes.rate), chaos())
            account(row, items, fake, sim)
        await check_registered(row, pg.url(), items)
        if row.answered_5xx == 0:
            row.failures.append("the outage produced no 5xx: it was not exercised")
    finally:
        await asyncio.to_thread(pg.destroy)
    return row


async def check_registered(row: Row, database_url: str, items: list[Tracked]) -> None:
    """Every user whose /start was acknowledged is in the database (a reply is not enough)."""
    starters = {i.chat_id for i in items if i.acked and b'"text": "/start"' in i.body}
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            found = set(
                (
                    await connection.execute(
                        select(User.telegram_id).where(User.telegram_id.in_(starters))
                    )
                ).scalars()
            )
    finally:
        await engine.dispose()
    if missing := starters - found:
        row.failures.append(f"{len(missing)} of {len(starters)} registered users not stored")


def _count_5xx(sim: SimulatedTelegram) -> int:
    return sum(n for status, n in sim.statuses.items() if status >= 500)


async def sigterm_handover(env: Environment, sizes: Sizes) -> Row:
    """SIGTERM mid-run: the old process drains (in-flight updates answered, new ones 503), the
    simulated Telegram moves to a new process sharing PostgreSQL and Redis."""
    row = Row("5 sigterm + new process")
    items = Traffic(max(10, sizes.updates // 10)).make(sizes.updates)
    rng = random.Random(7)
    fake = FakeTelegram()
    # Replies take a while, so updates are in flight when the signal lands.
    fake.faults = lambda method, _p: (
        Scripted(delay=rng.uniform(0, 0.3)) if method == "sendMessage" else None
    )
    await fake.start()
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    old = BotProcess(bot_env(env, fake, project), cwd=env.workdir)
    new = BotProcess(bot_env(env, fake, project), cwd=env.workdir)
    started = time.monotonic()
    in_flight_at_signal = 0
    try:
        await asyncio.gather(old.start(), new.start())
        sim = SimulatedTelegram(old.url)
        async with sim.running():

            async def chaos() -> None:
                nonlocal in_flight_at_signal
                await wait_until(lambda: sim.acked >= len(items) // 3, 120, "a third acked")
                in_flight_at_signal = sum(1 for c in fake.calls_to("sendMessage") if not c.status)
                old.signal(signal.SIGTERM)
                code = await old.wait(60)
                if code != 0:
                    row.failures.append(f"old process exited with {code}")
                sim.target = new.url  # the Service now routes to the new Pod

            await asyncio.gather(sim.run(items, rate=sizes.rate), chaos())
        account(row, items, fake, sim)
        if in_flight_at_signal == 0:
            row.failures.append("no reply was in flight at SIGTERM: the drain went untested")
    finally:
        for process in (old, new):
            code = await process.stop()
            if code != 0:
                row.failures.append(f"a bot exited with {code}")
            row.notes.extend(_crash_lines(process))
        await fake.stop()
        await drop_keys(env.redis_url, project)
        row.seconds = time.monotonic() - started
    row.notes.append(
        f"{in_flight_at_signal} replies in flight at SIGTERM; {sim.statuses.get(503, 0)} answers "
        f"503 (draining), {sim.statuses.get(0, 0)} refused connections, all redelivered"
    )
    return row


async def sigkill_handover(env: Environment, sizes: Sizes) -> Row:
    """SIGKILL mid-run (the OOM killer, a lost node): nothing drains, claims stay in Redis. The
    simulated Telegram moves to a new process; the updates the dead one had claimed are answered
    503 ("in progress elsewhere") until their claims expire (UPDATE_TIMEOUT_SECONDS + 30 s),
    then processed once. A reply the dead process had sent for an update it had not yet
    acknowledged is Telegram's to keep (no transaction spans Telegram and Redis): it counts as
    an ack-lost duplicate, like a lost answer in scenario 6."""
    row = Row("8 sigkill + new process")
    items = Traffic(max(10, sizes.updates // 10)).make(sizes.updates)
    rng = random.Random(13)
    fake = FakeTelegram()
    # Slow replies that take effect when sent, so some are mid-flight when the process dies.
    fake.faults = lambda method, _p: (
        Scripted(delay=rng.uniform(0, 0.3), delivered=True) if method == "sendMessage" else None
    )
    await fake.start()
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    extra = {"UPDATE_TIMEOUT_SECONDS": "2"}  # claims of the dead process expire after 32 s
    # Its own token tells the dead process's calls apart, including requests it wrote just
    # before dying that the fake reads only afterwards.
    old_token = "987654321:AAHoldPROCESSthatGetsKilled_xyz1234"
    old = BotProcess(bot_env(env, fake, project, BOT_TOKEN=old_token, **extra), cwd=env.workdir)
    new = BotProcess(bot_env(env, fake, project, **extra), cwd=env.workdir)
    started = time.monotonic()
    in_flight: list[Call] = []
    unacknowledged: list[Call] = []
    acked_at_kill: set[int] = set()
    try:
        await asyncio.gather(old.start(), new.start())
        sim = SimulatedTelegram(old.url)
        async with sim.running():

            async def chaos() -> None:
                await wait_until(lambda: sim.acked >= len(items) // 3, 120, "a third acked")
                old.signal(signal.SIGKILL)
                acked_at_kill.update(item.update_id for item in items if item.acked)
                in_flight.extend(c for c in fake.calls_to("sendMessage") if c.status is None)
                code = await old.wait(10)
                if code != -signal.SIGKILL:
                    row.failures.append(f"old process exited with {code}, not SIGKILL")
                sim.target = new.url  # the Service now routes to the new Pod

            await asyncio.gather(sim.run(items, rate=sizes.rate, give_up_after=90), chaos())
        # Read after the run, not at the kill: on a loaded machine the fake reads some requests
        # the dead process wrote just before dying seconds later (counted as duplicates once).
        unacknowledged.extend(
            c
            for c in fake.calls_to("sendMessage")
            if c.token == old_token and int(c.params["message_thread_id"]) not in acked_at_kill
        )
        for call in unacknowledged:
            # Took effect at Telegram, but the update was never acknowledged, so Telegram
            # redelivers it: for the account, its answer was lost.
            call.status = 0
        account(row, items, fake, sim)
        if not in_flight:
            row.failures.append("no reply was in flight at SIGKILL: the crash went untested")
    finally:
        code = await new.stop()
        if code != 0:
            row.failures.append(f"the new process exited with {code}")
        await old.stop()  # already dead; reaps it if the kill never happened
        for process in (old, new):
            row.notes.extend(_crash_lines(process))
        await fake.stop()
        await drop_keys(env.redis_url, project)
        row.seconds = time.monotonic() - started
    row.notes.append(
        f"{len(unacknowledged)} replies sent for updates not yet acknowledged at SIGKILL "
        f"({len(in_flight)} of them in flight); {sim.statuses.get(503, 0)} answers 503 "
        f"(claimed by the dead process), {sim.statuses.get(0, 0)} connection errors, all "
        "redelivered"
    )
    return row


async def bot_api_faults(env: Environment, sizes: Sizes) -> Row:
    """The Bot API misbehaves: a 429 storm, then 5xx bursts, hangs, and sends that take effect
    while their answer is lost (the one case a retry can duplicate)."""
    row = Row("6 bot api 429/5xx")
    items = Traffic(max(10, sizes.updates // 10)).make(sizes.updates)
    rng = random.Random(11)
    clock = {"start": time.monotonic()}  # reset when the traffic starts
    window = len(items) / sizes.rate
    flood = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
             "parameters": {"retry_after": 1}}  # fmt: skip
    down = {"ok": False, "error_code": 502, "description": "Bad Gateway"}

    def faults(method: str, _params: dict[str, Any]) -> Scripted | None:
        if method != "sendMessage":
            return None
        phase = (time.monotonic() - clock["start"]) / window
        roll = rng.random()
        storm = (phase < 0.4 and roll < 0.3) or (0.4 <= phase < 0.8 and roll < 0.25)
        kinds = (
            (roll < 0.01, Scripted(502, down, delivered=True)),  # sent, the answer is lost
            (roll < 0.015, Scripted(502, down, delay=8.0, delivered=True)),  # sent, then hangs
            (roll < 0.02, Scripted(502, down, delay=8.0)),  # hangs past the deadline, unsent
            (storm and phase < 0.4, Scripted(429, flood)),
            (storm, Scripted(502, down)),
        )
        return next((answer for applies, answer in kinds if applies), None)

    async with scenario_setup(env, row, UPDATE_TIMEOUT_SECONDS="4") as (fake, bot, _):
        fake.faults = faults
        sim = SimulatedTelegram(bot.url)
        async with sim.running():
            clock["start"] = time.monotonic()
            await sim.run(items, rate=sizes.rate, give_up_after=90)
        statuses = Counter(c.status for c in fake.calls_to("sendMessage"))
        row.notes.append(f"Bot API answers to sendMessage: {dict(statuses)}")
    account(row, items, fake, sim)
    return row


async def hostile(env: Environment, sizes: Sizes) -> Row:
    """Hostile and broken input; the contract's 4xx/200 every time, no crash, bounded memory."""
    row = Row("7 hostile input")
    traffic = Traffic(20)
    async with scenario_setup(env, row) as (fake, bot, _):
        sim, abuser = SimulatedTelegram(bot.url), SimulatedTelegram(bot.url)
        async with sim.running(), abuser.running():
            warm_up = traffic.make(50)
            await sim.run(warm_up)  # the steady state is the memory baseline
            assert bot.process is not None
            proc = psutil.Process(bot.process.pid)
            rss_before = proc.memory_info().rss
            valid: list[Tracked] = list(warm_up)
            mismatches: Counter[str] = Counter()
            sent = 0
            for _ in range(sizes.hostile_rounds):
                cases, processable = hostile_cases(traffic)
                posts = (abuser.post(body, headers) for _, body, headers, _ in cases)
                answers = await asyncio.gather(*posts)
                sent += len(cases)
                for (name, _, _, expected), status in zip(cases, answers, strict=True):
                    if status not in expected:
                        mismatches[f"{name}: {status} not in {sorted(expected)}"] += 1
                    if name in processable and status == 200:
                        processable[name].acked = True  # processed: answered exactly once
                        valid.append(processable[name])
                await _raw_abuse(bot.port)
                # Normal traffic keeps flowing, and is answered exactly once.
                batch = traffic.make(10)
                valid.extend(batch)
                await asyncio.gather(*(sim.deliver(item) for item in batch))
            rss_after = proc.memory_info().rss
            alive = bot.process.returncode is None
            await bot.wait_for_status("/readyz", 200, timeout=10)
            await bot.wait_for_status("/healthz", 200, timeout=10)
        account(row, valid, fake, sim)
    row.sent = sent + sum(1 for item in valid if item.statuses)  # odd-but-valid ones: once
    row.deliveries += sum(abuser.statuses.values())
    row.answered_5xx += sum(n for status, n in abuser.statuses.items() if status >= 500)
    row.failures.extend(f"{name} x{n}" for name, n in mismatches.items())
    if not alive:
        row.failures.append("the bot process died")
    if errors := [line for line in bot.text.splitlines() if '"level": "error"' in line]:
        row.failures.append(f"{len(errors)} error-level log lines: {errors[0][:100]}")
    bound = max(2 * rss_before, rss_before + 100 * MiB)
    if rss_after > bound:
        row.failures.append(f"RSS grew from {rss_before // MiB} to {rss_after // MiB} MiB")
    row.notes.append(
        f"{sent} hostile requests; RSS {rss_before / MiB:.0f} -> {rss_after / MiB:.0f} MiB "
        f"(bound {bound / MiB:.0f})"
    )
    return row


Case = tuple[str, bytes, dict[str, str], set[int]]


def hostile_cases(traffic: Traffic) -> tuple[list[Case], dict[str, Tracked]]:
    """(name, body, headers, acceptable statuses) for one round of abuse, and the cases that are
    valid (if odd) updates: 200 means processed, and then it must be answered exactly once."""
    good = {"Content-Type": "application/json", SECRET_HEADER: TEST_SECRET}
    valid = traffic.one(traffic.users[0]).body
    plain = traffic.one(traffic.users[2])
    big = b'{"update_id": 1, "pad": "' + b"x" * (2 * MiB) + b'"}'
    deep_id = next(_update_ids)
    sender = traffic.users[1]
    nested_update = message_update(sender, "deep", update_id=deep_id, message_thread_id=deep_id,
                                   is_topic_message=True)  # fmt: skip
    reply: dict[str, Any] = nested_update["message"]
    for _ in range(200):
        reply["reply_to_message"] = {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "group"}}
        reply = reply["reply_to_message"]
    unknown = {"update_id": next(_update_ids), "brand_new_kind": {"id": "x", "data": [1, 2]}}
    no_chat = {"update_id": next(_update_ids), "message": {"message_id": 1, "date": 0}}
    nested = Tracked(deep_id, sender["id"], json.dumps(nested_update).encode())
    cases = [
        ("wrong secret", valid, {**good, SECRET_HEADER: "nope"}, {401}),
        ("missing secret", valid, {"Content-Type": "application/json"}, {401}),
        ("non-ascii secret", valid, {**good, SECRET_HEADER: "s\u00e9cret"}, {401}),
        ("wrong secret, 2 MiB", big, {**good, SECRET_HEADER: "nope"}, {401}),
        ("malformed json", b"{not json", good, {400}),
        ("truncated json", valid[: len(valid) // 2], good, {400}),
        ("empty body", b"", good, {400}),
        ("json array", b"[]", good, {400}),
        ("json null", b"null", good, {400}),
        ("json string", b'"update"', good, {400}),
        ("update_id not a number", b'{"update_id": "abc"}', good, {400}),
        ("message without chat", json.dumps(no_chat).encode(), good, {400}),
        ("text/plain garbage", b"hello there", {**good, "Content-Type": "text/plain"}, {400}),
        # Telegram always sends JSON; the body decides, not the label.
        ("text/plain update", plain.body, {**good, "Content-Type": "text/plain"}, {200}),
        ("form body", b"update_id=1&x=2",
         {**good, "Content-Type": "application/x-www-form-urlencoded"}, {400}),
        ("multipart body", b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b--\r\n",
         {**good, "Content-Type": "multipart/form-data; boundary=b"}, {400}),
        ("2 MiB body", big, good, {413}),
        ("nested arrays", b"[" * 100_000 + b"]" * 100_000, good, {400}),
        ("nested objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, good, {400}),
        ("nested replies", nested.body, good, {200, 400}),
        ("invalid utf-8", b'{"update_id": 1, "message": {"text": "\xff\xfe\xc3"}}', good, {400}),
        ("unknown update type", json.dumps(unknown).encode(), good, {200}),
    ]  # fmt: skip
    return cases, {"nested replies": nested, "text/plain update": plain}


async def _raw_abuse(port: int) -> None:
    """Requests no HTTP client would send: a body shorter than its Content-Length, garbage."""
    head = (
        f"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{SECRET_HEADER}: {TEST_SECRET}\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    for payload in (head + b'{"update_id": 1', b"GARBAGE \x00\xff\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(0.2):
                await reader.read(1024)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


# --------------------------------------------------------------------------- flood control


# Telegram's limits, as the bot keeps them by default (flood control on).
PACED = {"TELEGRAM_RATE_LIMIT": "30", "TELEGRAM_CHAT_RATE_LIMIT": "1"}


async def polling_burst(env: Environment, row: Row, items: list[Tracked]) -> Row:
    """`python -m bot poll` with flood control on; every update queued at "Telegram" at once.
    Polling confirms an update (getUpdates offset) once the bot has started it: an update is
    lost when it was never answered, a duplicate when answered twice."""
    fake = FakeTelegram()
    await fake.start()
    project = f"e2e-{uuid.uuid4().hex[:10]}"
    bot = BotProcess(bot_env(env, fake, project, **PACED), cwd=env.workdir, command="poll")
    started = time.monotonic()
    try:
        await bot.start()
        queued_at = time.monotonic()
        for item in items:
            fake.updates.put_nowait(json.loads(item.body))
        # Paced replies take about a second each per chat, plus 1/30 s each overall.
        expected = max(Counter(i.chat_id for i in items).values()) + len(items) / 30
        await wait_until(
            lambda: len(_replied(fake)) >= len(items), 2 * expected + 30, "every reply", row
        )
        await asyncio.sleep(2)  # a late duplicate would land now
        replies = [c for c in fake.calls_to("sendMessage") if c.delivered]
        first_reply: dict[int, float] = {}
        for call in replies:
            first_reply.setdefault(int(call.params["message_thread_id"]), call.at)
    finally:
        code = await bot.stop()
        if code != 0:
            row.failures.append(f"bot exited with {code}")
        row.notes.extend(_crash_lines(bot))
        await fake.stop()
        await drop_keys(env.redis_url, project)
        row.seconds = time.monotonic() - started
    sim = SimulatedTelegram(bot.url)  # for the account only: polling has no webhook answers
    sim.latencies = [
        first_reply[i.update_id] - queued_at for i in items if i.update_id in first_reply
    ]
    for item in items:
        item.acked = item.update_id < fake.confirmed_offset
    account(row, items, fake, sim)
    retried = bot.text.count("update_redelivered_in_process")
    row.notes.append(
        f"last reply {max(sim.latencies, default=0):.1f} s after the burst; "
        f"{retried} in-process redeliveries; p99 is time to reply"
    )
    return row


def _replied(fake: FakeTelegram) -> set[int]:
    return {int(c.params["message_thread_id"]) for c in fake.calls_to("sendMessage") if c.delivered}


async def polling_chat_burst(env: Environment, sizes: Sizes) -> Row:
    """30 updates from one chat at once: paced at 1 reply/s, the last ones wait past the update
    deadline (25 s); they must be answered, not dropped."""
    row = Row(f"polling burst {sizes.chat_burst} from one chat")
    return await polling_burst(env, row, Traffic(1).make(sizes.chat_burst))


async def polling_global_burst(env: Environment, sizes: Sizes) -> Row:
    """Distinct users at once, one update each: the global 30/s budget paces them."""
    users = sizes.global_burst_users
    row = Row(f"polling burst {users} users")
    return await polling_burst(env, row, Traffic(users).make(users))


async def webhook_chat_burst(env: Environment, sizes: Sizes) -> Row:
    """The same burst from one chat through the webhook, flood control on: answered in full,
    with a 503 only for a reply that would wait past the answer budget."""
    row = Row(f"webhook burst {sizes.chat_burst} from one chat")
    items = Traffic(1).make(sizes.chat_burst)
    async with scenario_setup(env, row, **PACED) as (fake, bot, _):
        sim = SimulatedTelegram(bot.url, attempt_timeout=60.0)
        async with sim.running():
            await sim.run(items, give_up_after=120)
    account(row, items, fake, sim)
    # The whole burst's pacing (about 1 s per reply) fits in an answer's budget (50 s): every
    # delivery is held until its reply went out, none is sent back to wait for a redelivery.
    if row.answered_5xx and sizes.chat_burst <= 45:
        row.failures.append(f"{row.answered_5xx} answers 503 for a burst that fits the budget")
    row.notes.append(f"{row.answered_5xx} answers 503 (replies that would wait past the budget)")
    return row


# --------------------------------------------------------------------------- soak

SOAK_SAMPLE_SECONDS = 3.0
# RSS settles in the first half: pools and interned strings early, and the cache's memory
# store (written through even with Redis up: bot.cache) fills to its 20,000 keys (an update's
# dedup claim is one) around update 19,000; a slope measured while it fills is no leak.
SOAK_WARM_UP_SHARE = 0.5
# Steady state: RSS may wander, but not climb. Allocator noise over a 2-minute run stays well
# under this; a leak of a few hundred bytes per update does not.
SOAK_MAX_SLOPE_MIB_PER_10K = 2.0


def rss_slope(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS (MiB) against updates acknowledged, per 10,000 updates."""
    n = len(samples)
    if n < 3:
        return 0.0
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((x - mean_x) ** 2 for x, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((x - mean_x) * (y - mean_y) for x, y in samples)
    return cov / var * 10_000


async def soak(env: Environment, sizes: Sizes) -> Row:
    """Updates at a steady rate from a fixed set of users through one `serve`; RSS sampled every
    few seconds. Fails when RSS keeps growing after the warm-up."""
    row = Row(f"soak {sizes.soak_updates} updates")
    items = Traffic(1000).make(sizes.soak_updates)
    samples: list[tuple[int, float]] = []
    async with scenario_setup(env, row) as (fake, bot, _):
        assert bot.process is not None
        proc = psutil.Process(bot.process.pid)
        sim = SimulatedTelegram(bot.url)

        async def sample() -> None:
            while True:
                samples.append((sim.acked, proc.memory_info().rss / MiB))
                await asyncio.sleep(SOAK_SAMPLE_SECONDS)  # the sampling period

        sampler = asyncio.create_task(sample())
        try:
            async with sim.running():
                await sim.run(items, rate=sizes.soak_rate)
        finally:
            sampler.cancel()
        samples.append((sim.acked, proc.memory_info().rss / MiB))
    account(row, items, fake, sim)
    steady = [s for s in samples if s[0] >= SOAK_WARM_UP_SHARE * len(items)]
    slope = rss_slope(steady)
    first, last = samples[0][1], samples[-1][1]
    row.notes.append(
        f"RSS {first:.0f} -> {last:.0f} MiB ({len(samples)} samples); after warm-up "
        f"{steady[0][1] if steady else 0:.0f} -> {last:.0f} MiB, slope {slope:+.2f} MiB per "
        f"10k updates (bound {SOAK_MAX_SLOPE_MIB_PER_10K})"
    )
    if len(steady) < 5:
        row.failures.append(f"only {len(steady)} RSS samples after warm-up")
    elif slope > SOAK_MAX_SLOPE_MIB_PER_10K:
        row.failures.append(f"RSS keeps growing: {slope:+.2f} MiB per 10k updates")
    return row


SCENARIOS: dict[str, Callable[[Environment, Sizes], Awaitable[Row]]] = {
    "burst": burst,
    "redelivery": redelivery,
    "redis": redis_outage,
    "postgres": postgres_restart,
    "sigterm": sigterm_handover,
    "bot_api": bot_api_faults,
    "hostile": hostile,
    "sigkill": sigkill_handover,
    "polling_chat_burst": polling_chat_burst,
    "polling_global_burst": polling_global_burst,
    "webhook_chat_burst": webhook_chat_burst,
}
# Minutes long: run by `python -m benchmarks.resilience`, not by the test suite.
LONG_SCENARIOS: dict[str, Callable[[Environment, Sizes], Awaitable[Row]]] = {"soak": soak}
