"""The `bot` image, run as the chart runs it (read-only, uid 10001, no capabilities, the chart's
memory limit): configuration errors, migrations against the machine's PostgreSQL, the webhook
server behind its secret, draining on SIGTERM, memory after 1,000 updates, and nothing written
outside /tmp; the token appears in no output."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.db.schema import SCHEMA_REVISION
from tests.conftest import REDIS_URL, TEST_SECRET, TEST_TOKEN
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.updates import message_update, start_update, user

from .conftest import VALUES, ContainerProcess, Containers, chart_memory_limit

MEMORY_LIMIT = chart_memory_limit("bot")
GRACE_SECONDS = int(VALUES["bot"]["terminationGracePeriodSeconds"])
# What the engine itself creates in a container's root file system to mount its files on.
ENGINE_MOUNT_POINTS = {
    "/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
    "/run", "/run/.containerenv", "/run/secrets", "/tmp", "/dev",
}  # fmt: skip


@pytest.fixture(scope="module")
def bot_image(image: Callable[[str], str]) -> str:
    return image("bot")


@pytest.fixture
def make_container_bot(
    make_container: Callable[..., ContainerProcess],
    bot_image: str,
    fake_telegram: FakeTelegram,
    project_name: str,
    redis_cleanup: None,
) -> Callable[..., ContainerProcess]:
    """`serve` containers against the fake Bot API, the machine's Redis and the given database,
    read-only with the chart's memory limit unless told otherwise."""

    def make(database_url: str, *, read_only: bool = True, keep: bool = False) -> ContainerProcess:
        env = {
            "BOT_TOKEN": TEST_TOKEN,
            "WEBHOOK_SECRET": TEST_SECRET,
            "TELEGRAM_API_URL": fake_telegram.url,
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "PROJECT_NAME": project_name,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
            # Telegram's flood limits pace replies in real time; the tests measure the bot.
            "TELEGRAM_RATE_LIMIT": "0",
            "TELEGRAM_CHAT_RATE_LIMIT": "0",
        }
        return make_container(
            bot_image, ["serve"], env=env, read_only=read_only, memory=MEMORY_LIMIT, keep=keep
        )

    return make


async def post(url: str, update: dict[str, Any] | None, secret: str | None = TEST_SECRET) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/webhook", data=json.dumps(update), headers=headers) as response,
    ):
        return response.status


async def get_status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


def uid() -> int:
    return random.randint(10**9, 2 * 10**9)


def assert_no_token(*outputs: str) -> None:
    text = "\n".join(outputs)
    assert TEST_TOKEN not in text
    assert TEST_TOKEN.split(":", 1)[1] not in text


def test_check_config_with_a_bad_setting_exits_2_with_one_clear_line(
    containers: Containers, bot_image: str
) -> None:
    bad = containers.run(bot_image, "check-config", env={"BOT_TOKEN": TEST_TOKEN, "PORT": "x"})
    assert bad.returncode == 2, bad.stdout + bad.stderr
    [line] = bad.stderr.strip().splitlines()
    assert line.startswith("error:")
    assert "PORT" in line
    good = containers.run(bot_image, "check-config", env={"BOT_TOKEN": TEST_TOKEN})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "bot_token" in good.stdout.lower()  # printed, masked: the check below is not vacuous
    assert_no_token(bad.stdout, bad.stderr, good.stdout, good.stderr)


async def _alembic_version(url: str) -> str | None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await connection.fetchval("SELECT version_num FROM alembic_version")
    finally:
        await connection.close()


async def test_serve_is_ready_once_the_images_migrate_brought_a_fresh_database_to_head(
    containers: Containers,
    bot_image: str,
    make_pg_database: Callable[[], str],
    make_container_bot: Callable[..., ContainerProcess],
    fake_telegram: FakeTelegram,
) -> None:
    database = make_pg_database()
    bot = make_container_bot(database)
    await bot.start(wait_ready=False)
    assert await get_status(bot.url + "/healthz") == 200
    assert await get_status(bot.url + "/readyz") == 503  # no schema yet

    migrate = containers.run(bot_image, "migrate", env={"DATABASE_URL": database})
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert await _alembic_version(database) == SCHEMA_REVISION
    await bot.wait_for_status("/readyz", 200, timeout=30)

    assert await post(bot.url, start_update(user(uid(), "Img"))) == 200
    assert fake_telegram.sent_texts()[0].startswith("Hello, Img!")
    # The secret is enforced: nothing is processed without it.
    assert await post(bot.url, start_update(user(uid())), secret="wrong") == 401
    assert await post(bot.url, start_update(user(uid())), secret=None) == 401
    assert len(fake_telegram.calls_to("sendMessage")) == 1

    assert await bot.stop() == 0
    assert_no_token(bot.text, migrate.stdout, migrate.stderr)


async def test_sigterm_during_a_slow_update_still_sends_the_reply_and_exits_0_in_the_grace_period(
    make_container_bot: Callable[..., ContainerProcess],
    pg_migrated_url: str,
    fake_telegram: FakeTelegram,
) -> None:
    bot = make_container_bot(pg_migrated_url)
    await bot.start()
    fake_telegram.script("sendMessage", Scripted(delay=3.0))
    slow = asyncio.create_task(post(bot.url, message_update(user(uid()), "slow one")))
    await fake_telegram.wait_for("sendMessage")  # in flight: the reply is being sent

    signalled = time.monotonic()
    bot.signal()
    assert await slow == 200
    assert await bot.wait(timeout=GRACE_SECONDS) == 0
    took = time.monotonic() - signalled
    assert took < GRACE_SECONDS
    [reply] = fake_telegram.calls_to("sendMessage")
    assert reply.status == 200
    events = [json.loads(line)["event"] for line in bot.text.splitlines() if line.startswith("{")]
    assert "shutdown_drained" in events
    assert_no_token(bot.text)


async def test_rss_after_1000_updates_stays_under_the_charts_memory_limit(
    make_container_bot: Callable[..., ContainerProcess],
    pg_migrated_url: str,
    fake_telegram: FakeTelegram,
    figures: list[str],
) -> None:
    bot = make_container_bot(pg_migrated_url)
    await bot.start()
    users = [user(uid(), f"Mem{i}") for i in range(200)]
    updates = [
        start_update(u) if n % 5 == 0 else message_update(u, f"message {n}")
        for n, u in enumerate(users * 5)
    ]
    gate = asyncio.Semaphore(16)

    async def send(http: aiohttp.ClientSession, update: dict[str, Any]) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": TEST_SECRET}
        async with gate, http.post(bot.url + "/webhook", json=update, headers=headers) as r:
            return r.status

    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(send(http, u) for u in updates))
    took = time.monotonic() - started
    assert statuses == [200] * 1000
    assert len(fake_telegram.calls_to("sendMessage")) == 1000
    memory = bot.status()
    figures.append(
        f"bot container after 1000 updates: VmRSS {memory['VmRSS'] / 1024:.0f} MiB, peak "
        f"(VmHWM) {memory['VmHWM'] / 1024:.0f} MiB, chart limit {MEMORY_LIMIT / 2**20:.0f} MiB; "
        f"{1000 / took:.0f} updates/s"
    )
    assert memory["VmHWM"] * 1024 < MEMORY_LIMIT
    assert await bot.stop() == 0
    assert_no_token(bot.text)


async def test_serve_writes_nothing_outside_tmp(
    containers: Containers,
    make_container_bot: Callable[..., ContainerProcess],
    pg_migrated_url: str,
) -> None:
    # A writable root file system this time: whatever the bot writes shows in the diff, where a
    # read-only one would have failed the write (and a bot that swallows the error would pass).
    bot = make_container_bot(pg_migrated_url, read_only=False, keep=True)
    await bot.start()
    for text in ("/start", "hello", "/help"):
        assert await post(bot.url, message_update(user(uid()), text)) == 200
    assert await get_status(bot.url + "/metrics") == 200
    assert await bot.stop() == 0
    lines = containers.engine.run("diff", bot.name).stdout.splitlines()
    changed = {line.split(maxsplit=1)[1] for line in lines if line.strip()}
    assert changed <= ENGINE_MOUNT_POINTS, sorted(changed - ENGINE_MOUNT_POINTS)
    assert_no_token(bot.text)
