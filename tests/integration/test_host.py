"""The bot host over real HTTP: each bot at its own route with its own secret, its own data and
dedup records, bots following their files without a restart, and trouble kept to one bot."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from structlog.testing import capture_logs

from bot.app import create_session, open_runtime
from bot.config import Settings
from bot.db.bot_stores import sqlite_url
from bot.db.schema import SCHEMA_REVISION, schema_revision
from bot.hosting.bots_dir import BotsSnapshot, DirScanner, read_bots_dir
from bot.hosting.host import BotHost, create_host_app
from bot.lifecycle import ServerState
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.updates import next_update_id, start_update, user

# Shaped like real tokens (35 characters after the colon), so the log redaction sees them too.
SHOP = ("5550001", "5550001:AAshop_token_0123456789abcdefghijklmn", "shop-secret")
NEWS = ("5550002", "5550002:AAnews_token_0123456789abcdefghijklmn", "news-secret")
MAIL = ("5550003", "5550003:AAmail_token_0123456789abcdefghijklmn", "mail-secret")
TOKEN_4 = "5550004:AApost_token_0123456789abcdefghijklmn"


@dataclass
class Host:
    host: BotHost
    bots_dir: Path
    base: str
    http: aiohttp.ClientSession
    telegram: FakeTelegram

    def put(self, name: str, bot: tuple[str, str, str], secret: str | None = None) -> None:
        _, token, own_secret = bot
        text = f"BOT_TOKEN={token}\nWEBHOOK_SECRET={secret or own_secret}\n"
        (self.bots_dir / f"{name}.env").write_text(text)

    async def post(self, bot_id: str, body: Any, secret: str) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with self.http.post(f"{self.base}/webhook/{bot_id}", json=body, headers=headers) as r:
            return r.status

    async def metrics(self) -> str:
        async with self.http.get(f"{self.base}/metrics") as response:
            return await response.text()

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.base}/readyz") as response:
            return response.status, await response.json()

    def replies(self, bot: tuple[str, str, str]) -> list[str]:
        calls = self.telegram.calls_to("sendMessage")
        return [call.params["text"] for call in calls if call.token == bot[1]]


@pytest.fixture(params=["postgres", "sqlite"])
def host_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("host_database"))
    return f"sqlite+aiosqlite:///{tmp_path / 'host.db'}"


@pytest.fixture
async def make_host(
    make_settings: Callable[..., Settings],
    fake_telegram: FakeTelegram,
    host_database_url: str,
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Host]]]:
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def make(*files: tuple[str, tuple[str, str, str]], **overrides: Any) -> Host:
            bots_dir = tmp_path / "bots"
            bots_dir.mkdir()
            settings = make_settings(
                database_url=host_database_url, bots_dir=bots_dir, redis_url="", **overrides
            )
            runtime = await stack.enter_async_context(open_runtime(settings))
            session = create_session(settings)
            stack.push_async_callback(session.close)
            host = BotHost(runtime, session=session, state=ServerState())
            stack.push_async_callback(host.close)
            server = TestServer(create_host_app(host), host="127.0.0.1")
            await server.start_server()
            stack.push_async_callback(server.close)
            client = Host(host, bots_dir, str(server.make_url("")).rstrip("/"), http, fake_telegram)
            for name, bot in files:
                client.put(name, bot)
            await host.sync()
            return client

        yield make


async def test_each_bot_answers_at_its_own_route_with_its_own_secret(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(("shop", SHOP), ("news", NEWS))
    shop_id, _, shop_secret = SHOP
    assert await host.post(shop_id, start_update(user(42, "Ann")), shop_secret) == 200
    assert host.replies(SHOP) == ["Hello, Ann! Nice to meet you. Send me anything, or /help."]
    assert host.replies(NEWS) == []
    # Another bot's secret is a wrong secret here; an unknown bot is not found.
    assert await host.post(shop_id, start_update(user(43)), NEWS[2]) == 401
    assert await host.post("5559999", start_update(user(43)), shop_secret) == 404
    assert await host.post("not-a-number", start_update(user(43)), shop_secret) == 404
    assert len(host.telegram.calls_to("sendMessage")) == 1


async def test_update_ids_users_and_replies_are_per_bot(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(("shop", SHOP), ("news", NEWS))
    update = start_update(user(42, "Ann"), update_id=next_update_id())
    for bot in (SHOP, NEWS):
        assert await host.post(bot[0], update, bot[2]) == 200
        assert await host.post(bot[0], update, bot[2]) == 200  # Telegram's retry: done already
    # The same update_id and the same person, and still each bot's first meeting with them.
    greeting = "Hello, Ann! Nice to meet you. Send me anything, or /help."
    assert host.replies(SHOP) == [greeting]
    assert host.replies(NEWS) == [greeting]
    exposition = await host.metrics()
    for name in ("shop", "news"):  # each bot's updates are its own series, named by its file
        assert f'hello_bot_updates_total{{bot="{name}",handler="start_handler"' in exposition
        # So are its Bot API calls: one session for all, Telegram's limits per bot.
        api = f'hello_bot_bot_api_requests_total{{bot="{name}",method="SendMessage",outcome="ok"}}'
        assert api in exposition
    assert SHOP[1] not in exposition


async def test_bots_follow_their_files_without_a_restart(
    make_host: Callable[..., Awaitable[Host]], host_database_url: str
) -> None:
    host = await make_host(("shop", SHOP), ("news", NEWS))
    host.put("mail", MAIL)
    (host.bots_dir / "shop.env").unlink()
    host.put("news", NEWS, secret="rotated-secret")
    await host.host.sync()

    assert await host.post(MAIL[0], start_update(user(7, "Mo")), MAIL[2]) == 200
    assert host.replies(MAIL) == ["Hello, Mo! Nice to meet you. Send me anything, or /help."]
    assert await host.post(SHOP[0], start_update(user(7)), SHOP[2]) == 404
    assert await host.post(NEWS[0], start_update(user(7)), NEWS[2]) == 401
    assert await host.post(NEWS[0], start_update(user(7)), "rotated-secret") == 200
    if host_database_url.startswith("postgresql"):
        # The bot added later was migrated by the host before it was served.
        engine = create_async_engine(host_database_url)
        assert await schema_revision(engine, "bot_mail") == SCHEMA_REVISION
        await engine.dispose()


async def test_an_invalid_file_is_reported_and_the_others_serve(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    host = await make_host(("shop", SHOP))
    (host.bots_dir / "broken.env").write_text("BOT_TOKEN=not-a-token\nWEBHOOK_SECRET=s\n")
    await host.host.sync()
    status, body = await host.readyz()
    assert status == 200
    bots = body["checks"]["bots"]
    assert bots["shop"] == {"status": "serving", "id": int(SHOP[0])}
    assert bots["broken.env"]["status"] == "invalid"
    assert "BOT_TOKEN must look like" in bots["broken.env"]["error"]
    assert "not-a-token" not in json.dumps(body)
    assert await host.post(SHOP[0], start_update(user(8)), SHOP[2]) == 200


async def test_a_refused_token_is_reported_and_the_others_serve(
    make_host: Callable[..., Awaitable[Host]], fake_telegram: FakeTelegram
) -> None:
    refused = {"ok": False, "error_code": 401, "description": "Unauthorized"}
    fake_telegram.script("setWebhook", Scripted(401, refused))
    host = await make_host(("shop", SHOP), webhook_url="https://bots.example.com")
    await until(lambda: host.host.report()["shop"]["status"] == "token_refused")
    host.put("news", NEWS)
    await host.host.sync()
    await until(lambda: len(fake_telegram.calls_to("setWebhook")) == 2)
    news_call = fake_telegram.calls_to("setWebhook")[-1]
    assert news_call.token == NEWS[1]
    assert news_call.params["url"] == f"https://bots.example.com/webhook/{NEWS[0]}"
    assert news_call.params["secret_token"] == NEWS[2]
    status, body = await host.readyz()
    assert status == 200  # the host can serve: one bot's trouble is that bot's
    assert body["checks"]["bots"]["shop"]["status"] == "token_refused"
    assert body["checks"]["bots"]["news"]["status"] == "serving"


async def test_a_burst_over_the_share_waits_for_its_slots_instead_of_a_503(
    make_host: Callable[..., Awaitable[Host]], fake_telegram: FakeTelegram
) -> None:
    host = await make_host(("shop", SHOP), ("news", NEWS))
    release = asyncio.Event()
    fake_telegram.faults = lambda _method, _params: Scripted(hold=release)
    shares = host.host.fair_share
    host.host.admission_wait = 600.0  # however slow the machine: this test is about the order
    shop = int(SHOP[0])
    posts = [host.post(SHOP[0], start_update(user(3000 + i)), SHOP[2]) for i in range(12)]
    burst = asyncio.ensure_future(asyncio.gather(*posts))
    await until(lambda: shares.in_flight(shop) == shares.budget)
    assert not burst.done()  # the rest wait: nothing was refused
    release.set()
    assert await burst == [200] * 12
    assert len(host.replies(SHOP)) == 12


async def test_each_bots_webhook_is_watched_under_its_name(
    make_host: Callable[..., Awaitable[Host]], fake_telegram: FakeTelegram
) -> None:
    """getWebhookInfo per bot, with its own token, against its own URL; gone when it leaves."""
    host = await make_host(
        ("shop", SHOP),
        ("news", NEWS),
        webhook_url="https://bots.example.com",
        webhook_info_interval_seconds=0.05,
    )
    await until(lambda: len(fake_telegram.calls_to("setWebhook")) == 2)
    # The fake Bot API has one webhook for every token: now the shop's, with a backlog.
    fake_telegram.webhook = {
        "url": f"https://bots.example.com/webhook/{SHOP[0]}",
        "pending_update_count": 2,
    }
    views = host.host.webhook_info.views

    def seen() -> bool:
        shop, news = views.get("shop"), views.get("news")
        return bool(shop and shop.pending_update_count == 2 and news)

    await until(seen)
    await until(lambda: not views["news"].url_expected)
    assert views["shop"].url_expected
    assert {call.token for call in fake_telegram.calls_to("getWebhookInfo")} == {SHOP[1], NEWS[1]}
    (host.bots_dir / "news.env").unlink()
    await host.host.sync()
    assert set(views) == {"shop"}
    asked = len(fake_telegram.calls_to("getWebhookInfo"))
    await until(lambda: len(fake_telegram.calls_to("getWebhookInfo")) > asked + 2)
    assert NEWS[1] not in {call.token for call in fake_telegram.calls_to("getWebhookInfo")[asked:]}
    assert set(views) == {"shop"}


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_python_m_bot_host_serves_its_bots_and_stops_cleanly(
    tmp_path: Path, fake_telegram: FakeTelegram, host_database: str, project_name: str
) -> None:
    bots_dir = tmp_path / "bots"
    bots_dir.mkdir()
    for name, (_, token, secret) in (("shop", SHOP), ("news", NEWS)):
        (bots_dir / f"{name}.env").write_text(f"BOT_TOKEN={token}\nWEBHOOK_SECRET={secret}\n")
    env = {
        "BOTS_DIR": str(bots_dir),
        "DATABASE_URL": host_database,
        "TELEGRAM_API_URL": fake_telegram.url,
        "WEBHOOK_URL": "https://bots.example.com",
        "PROJECT_NAME": project_name,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "TELEGRAM_CHAT_RATE_LIMIT": "0",
    }
    process = BotProcess(env, cwd=tmp_path, command="host")
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "migrate", cwd=tmp_path, env=process.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    migrated = (await migrate.communicate())[0].decode()
    assert migrate.returncode == 0, migrated
    assert migrated.count('"event": "migrated"') == 2
    try:
        await process.start()
        await fake_telegram.wait_for("setWebhook", count=2, timeout=30)
        async with aiohttp.ClientSession() as http:
            headers = {"X-Telegram-Bot-Api-Secret-Token": NEWS[2]}
            update = start_update(user(9, "Cli"))
            url = f"{process.url}/webhook/{NEWS[0]}"
            async with http.post(url, json=update, headers=headers) as response:
                assert response.status == 200
    finally:
        code = await process.stop()
    assert code == 0, process.text
    assert [c.token for c in fake_telegram.calls_to("sendMessage")] == [NEWS[1]]
    events = [json.loads(line) for line in process.text.splitlines() if line.startswith("{")]
    assert {e.get("bot") for e in events if e["event"] == "update_handled"} == {"news"}
    output = migrated + process.text
    for _, token, secret in (SHOP, NEWS):
        assert token not in output
        assert token.split(":", 1)[1] not in output
        assert secret not in output


async def test_a_bot_whose_schema_is_ahead_of_the_code_is_served_and_says_so(
    make_host: Callable[..., Awaitable[Host]], host_database_url: str
) -> None:
    # A newer release's host migrated the bot's data, then the host was rolled back; the bot
    # file changing (here: its secret) makes the host take the bot in again on that schema.
    host = await make_host(("shop", SHOP), ("news", NEWS))
    if host_database_url.startswith("postgresql"):
        url, table = host_database_url, "bot_news.alembic_version"
    else:
        url, table = sqlite_url(host_database_url, "news"), "alembic_version"
    engine = create_async_engine(url, poolclass=NullPool)
    async with engine.begin() as connection:
        await connection.execute(text(f"UPDATE {table} SET version_num = '0099'"))  # noqa: S608
    await engine.dispose()
    host.put("news", NEWS, secret="news-secret-2")
    with capture_logs() as logs:
        await host.host.sync()

    news_id = int(NEWS[0])
    assert host.host.report()["news"] == {"status": "serving", "id": news_id, "schema": "ahead"}
    assert host.host.report()["shop"] == {"status": "serving", "id": int(SHOP[0])}
    status, body = await host.readyz()
    assert status == 200
    assert body["checks"]["bots"]["news"]["status"] == "serving"
    assert [(e["current"], e["head"]) for e in logs if e["event"] == "schema_ahead"] == [
        ("0099", SCHEMA_REVISION)
    ]
    assert await host.post(NEWS[0], start_update(user(12, "Ray")), "news-secret-2") == 200
    assert host.replies(NEWS) == ["Hello, Ray! Nice to meet you. Send me anything, or /help."]


@pytest.mark.parametrize("host_database_url", ["postgres"], indirect=True)
async def test_a_bot_whose_migration_fails_answers_503_until_it_succeeds(
    make_host: Callable[..., Awaitable[Host]], host_database_url: str
) -> None:
    # A stray `users` table in the bot's schema makes its first migration fail.
    engine = create_async_engine(host_database_url)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE SCHEMA bot_news"))
        await connection.execute(text("CREATE TABLE bot_news.users (stray int)"))
    host = await make_host(("shop", SHOP), ("news", NEWS))

    assert host.host.report()["news"]["status"] == "schema_behind"
    update = start_update(user(11, "Nia"))
    assert await host.post(NEWS[0], update, NEWS[2]) == 503  # Telegram redelivers it later
    assert await host.post(SHOP[0], start_update(user(11)), SHOP[2]) == 200
    assert (await host.readyz())[0] == 200

    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE bot_news.users"))
    await engine.dispose()
    await until(lambda: host.host.report()["news"]["status"] == "serving", timeout=20)
    assert await host.post(NEWS[0], update, NEWS[2]) == 200
    assert host.replies(NEWS) == ["Hello, Nia! Nice to meet you. Send me anything, or /help."]


async def test_one_bots_flood_cannot_starve_the_others(
    make_host: Callable[..., Awaitable[Host]], fake_telegram: FakeTelegram
) -> None:
    host = await make_host(("shop", SHOP), ("news", NEWS))
    # The flooded bot's replies hang until the test lets them go; the quiet bot's are prompt.
    release = asyncio.Event()
    hang = Scripted(hold=release)

    def hang_the_shop(_method: str, params: dict[str, Any]) -> Scripted | None:
        return None if str(params.get("chat_id")) == "99" else hang

    fake_telegram.faults = hang_the_shop
    shares = host.host.fair_share
    shares.window = 600.0  # both bots stay active for the whole test, however slow the machine
    host.host.admission_wait = 0.0  # over its share: refused at once (the waiting is below)
    shop = int(SHOP[0])

    async def burst(count: int, first_user: int) -> list[int]:
        posts = [
            host.post(SHOP[0], start_update(user(first_user + i)), SHOP[2]) for i in range(count)
        ]
        return list(await asyncio.gather(*posts))

    # Alone, the shop may use the host's whole budget (half the pool).
    flooding = asyncio.ensure_future(burst(20, 1000))
    await until(lambda: shares.in_flight(shop) == shares.budget)
    assert await host.post(NEWS[0], start_update(user(99, "Quiet")), NEWS[2]) == 200
    # The quiet bot was answered while the flood still held its whole share.
    assert not flooding.done()
    assert shares.in_flight(shop) == shares.budget
    release.set()
    statuses = await flooding
    # Telegram redelivers the rest (503).
    assert statuses.count(200) == shares.budget
    assert statuses.count(503) == 20 - shares.budget
    # With the news bot active too, the shop's next flood gets half the budget, not all of it.
    release.clear()
    flooding = asyncio.ensure_future(burst(20, 2000))
    await until(lambda: shares.in_flight(shop) == shares.budget // 2)
    assert await host.post(NEWS[0], start_update(user(99, "Quiet")), NEWS[2]) == 200
    release.set()
    statuses = await flooding
    assert statuses.count(200) == shares.budget // 2
    assert statuses.count(503) == 20 - shares.budget // 2


@pytest.mark.parametrize("host_database_url", ["postgres"], indirect=True)
async def test_connections_are_bounded_by_the_pool_whatever_the_number_of_bots(
    make_host: Callable[..., Awaitable[Host]], host_database_url: str, project_name: str
) -> None:
    tokens = [f"55510{i:02d}:AAbot{i:02d}_token_0123456789abcdefghij" for i in range(12)]
    bots = [(f"b{i}", (token.split(":")[0], token, f"s{i}")) for i, token in enumerate(tokens)]
    host = await make_host(*bots, db_pool_size=2, db_max_overflow=1)
    admin = create_async_engine(host_database_url, poolclass=NullPool)
    seen: list[int] = []

    async def sample() -> None:
        while True:
            async with admin.connect() as connection:
                count = await connection.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
                    {"name": project_name},
                )
                seen.append(int(count or 0))

    sampler = asyncio.create_task(sample())
    statuses: list[int] = []
    for n in range(3):  # 12 updates at once, one per bot: within each bot's share
        posts = [host.post(bot_id, start_update(user(2000 + n)), s) for _, (bot_id, _, s) in bots]
        statuses += await asyncio.gather(*posts)
    sampler.cancel()
    await admin.dispose()
    assert statuses == [200] * 36
    assert len(host.telegram.calls_to("sendMessage")) == 36
    assert 0 < max(seen) <= 3, seen  # pool 2 + overflow 1, for 12 bots


async def test_updates_without_the_secret_change_no_bots_share(
    make_host: Callable[..., Awaitable[Host]], fake_telegram: FakeTelegram
) -> None:
    """Strangers posting to every route (the busy bot's own included) take no slot and make no
    bot count as active: the busy bot keeps its whole share."""
    host = await make_host(("shop", SHOP), ("news", NEWS), ("mail", MAIL))
    release = asyncio.Event()
    fake_telegram.faults = lambda _method, _params: Scripted(hold=release)
    shares = host.host.fair_share
    shares.window = 600.0  # a bot counted active stays so for the whole test
    host.host.admission_wait = 0.0  # over the share: refused at once, so a cut share shows
    shop = int(SHOP[0])

    async def burst(first_user: int) -> list[int]:
        count = shares.budget
        posts = [
            host.post(SHOP[0], start_update(user(first_user + i)), SHOP[2]) for i in range(count)
        ]
        return list(await asyncio.gather(*posts))

    flooding = asyncio.ensure_future(burst(4000))
    await until(lambda: shares.in_flight(shop) == shares.budget)
    strangers = [
        host.post(bot_id, start_update(user(4100 + i)), secret)
        for i in range(30)
        for bot_id in (SHOP[0], NEWS[0], MAIL[0])
        for secret in ("", "wrong-secret", SHOP[2] if bot_id != SHOP[0] else NEWS[2])
    ]
    assert set(await asyncio.gather(*strangers)) == {401}
    assert shares.in_flight(shop) == shares.budget
    assert shares.share() == shares.budget  # still the only active bot
    release.set()
    assert await flooding == [200] * shares.budget
    # The next burst gets the whole share again: nothing was cut.
    release.clear()
    flooding = asyncio.ensure_future(burst(4200))
    await until(lambda: shares.in_flight(shop) == shares.budget)
    release.set()
    assert await flooding == [200] * shares.budget


@pytest.mark.parametrize("host_database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("newcomer", ["a-copy", "zz-copy"])
async def test_a_new_file_with_a_served_bots_token_does_not_take_it(
    make_host: Callable[..., Awaitable[Host]], newcomer: str
) -> None:
    host = await make_host(("shop", SHOP))
    host.put(newcomer, SHOP, secret="copy-secret")
    with capture_logs() as logs:
        await host.host.sync()
    assert await host.post(SHOP[0], start_update(user(21, "Sam")), SHOP[2]) == 200
    assert await host.post(SHOP[0], start_update(user(22)), "copy-secret") == 401
    report = host.host.report()
    assert report["shop"] == {"status": "serving", "id": int(SHOP[0])}
    reason = "the same bot (token) as shop.env"
    assert report[f"{newcomer}.env"] == {"status": "invalid", "error": reason}
    invalid = [e for e in logs if e["event"] == "bot_file_invalid"]
    assert [(e["file"], e["reason"]) for e in invalid] == [(f"{newcomer}.env", reason)]
    assert SHOP[1] not in repr(logs)
    assert [e["bot"] for e in logs if e["event"] in {"bot_added", "bot_removed"}] == []


def bot_files(bots_dir: Path, *bots: tuple[str, tuple[str, str, str]]) -> None:
    for name, (_, token, secret) in bots:
        (bots_dir / f"{name}.env").write_text(f"BOT_TOKEN={token}\nWEBHOOK_SECRET={secret}\n")


async def get_json(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def post_update(url: str, bot: tuple[str, str, str]) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": bot[2]}
    async with aiohttp.ClientSession() as http:
        update = start_update(user(31, "Fifo"))
        async with http.post(f"{url}/webhook/{bot[0]}", json=update, headers=headers) as response:
            return response.status


async def test_a_fifo_and_an_endless_link_in_bots_dir_leave_the_host_working(
    tmp_path: Path, fake_telegram: FakeTelegram, host_database: str, project_name: str
) -> None:
    """A FIFO is never opened (it would wait for a writer for good) and /dev/zero never read:
    new bots still come, removed ones go, /readyz names both files, and SIGTERM ends it."""
    bots_dir = tmp_path / "bots"
    bots_dir.mkdir()
    bot_files(bots_dir, ("shop", SHOP))
    env = {
        "BOTS_DIR": str(bots_dir),
        "DATABASE_URL": host_database,
        "TELEGRAM_API_URL": fake_telegram.url,
        "PROJECT_NAME": project_name,
        "LOG_FORMAT": "json",
        "TELEGRAM_CHAT_RATE_LIMIT": "0",
    }
    process = BotProcess(env, cwd=tmp_path, command="host")
    try:
        await process.start()
        os.mkfifo(bots_dir / "zzz.env")
        (bots_dir / "zero.env").symlink_to("/dev/zero")
        bot_files(bots_dir, ("news", NEWS))
        (bots_dir / "shop.env").unlink()

        async def rescanned() -> dict[str, Any]:
            deadline = time.monotonic() + 30  # a rescan every 5 s
            while True:
                status, body = await get_json(f"{process.url}/readyz")
                bots = body["checks"]["bots"]
                if "shop" not in bots and bots.get("news", {}).get("status") == "serving":
                    assert status == 200, body
                    return body["checks"]
                assert time.monotonic() < deadline, f"the host did not rescan: {body}"
                await asyncio.sleep(0.2)

        checks = await rescanned()
        assert checks["bots"]["zzz.env"] == {"status": "invalid", "error": "not a regular file"}
        leaves = "a symlink that leaves the directory"
        assert checks["bots"]["zero.env"] == {"status": "invalid", "error": leaves}
        assert checks["bots_dir"] == {"status": "ok"}
        assert await post_update(process.url, NEWS) == 200
        assert await post_update(process.url, SHOP) == 404
    finally:
        stopping = time.monotonic()
        code = await process.stop()
    stopped = time.monotonic() - stopping
    print(f"stopped {stopped:.1f} s after SIGTERM")  # noqa: T201 - the figure
    assert code == 0, process.text
    assert stopped < 30, process.text  # stop() kills after 60 s


async def test_the_host_listens_at_once_whatever_the_database_does(
    tmp_path: Path, fake_telegram: FakeTelegram, project_name: str
) -> None:
    """A database that accepts connections and never answers: /healthz answers within the
    startupProbe's budget (60 s), /readyz tells which bots are not loaded, SIGTERM ends it."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    bots_dir = tmp_path / "bots"
    bots_dir.mkdir()
    four = ("shop", SHOP), ("news", NEWS), ("mail", MAIL), ("post", ("5550004", TOKEN_4, "p-s"))
    bot_files(bots_dir, *four)
    env = {
        "BOTS_DIR": str(bots_dir),
        "DATABASE_URL": f"postgresql+asyncpg://bot:pw@127.0.0.1:{port}/bots",
        "TELEGRAM_API_URL": fake_telegram.url,
        "PROJECT_NAME": project_name,
        "LOG_FORMAT": "json",
    }
    process = BotProcess(env, cwd=tmp_path, command="host")
    try:
        seconds = await process.start(wait_ready=False, timeout=45)
        print(f"/healthz answered {seconds:.1f} s after the start")  # noqa: T201 - the figure
        status, body = await get_json(f"{process.url}/readyz")
        assert status == 503
        assert body["checks"]["database"]["status"] == "error"
        assert body["checks"]["bots_dir"] == {"status": "loading"}
        bots = body["checks"]["bots"]
        assert set(bots) <= {name for name, _ in four}
        assert {entry["status"] for entry in bots.values()} <= {"pending"}
        # Each bot's check ends (bounded), and each says why it is not served.
        deadline = time.monotonic() + 60
        while not (
            len(bots) == 4
            and all(e["status"] in {"failed", "schema_behind"} for e in bots.values())
        ):
            assert time.monotonic() < deadline, bots
            await asyncio.sleep(0.5)
            bots = (await get_json(f"{process.url}/readyz"))[1]["checks"]["bots"]
        assert (await get_json(f"{process.url}/healthz"))[0] == 200
    finally:
        stopping = time.monotonic()
        code = await process.stop()
        silent.close()
        for writer in held:
            writer.close()
    stopped = time.monotonic() - stopping
    print(f"stopped {stopped:.1f} s after SIGTERM")  # noqa: T201 - the figure
    assert code == 0, process.text
    assert stopped < 30, process.text


@pytest.mark.parametrize("host_database_url", ["sqlite"], indirect=True)
async def test_a_stalled_scan_shows_in_readyz_and_the_bots_keep_serving(
    make_host: Callable[..., Awaitable[Host]],
) -> None:
    """A directory whose read never returns (a hung network mount: here a read that waits for
    the test) leaves the bots as they were, makes /readyz not ready, and holds no exit."""
    host = await make_host(("shop", SHOP))
    unstuck = threading.Event()

    def hung_read(directory: Path, owners: dict[int, str]) -> BotsSnapshot:
        unstuck.wait(60)
        return read_bots_dir(directory, owners)

    host.host.scanner = DirScanner(host.bots_dir, read=hung_read)
    host.host.scan_timeout = 0.2
    host.put("news", NEWS)
    assert await host.host.sync() is False
    await until(lambda: host.host.scan_report()["status"] == "stalled")
    status, body = await host.readyz()
    assert status == 503
    assert body["checks"]["bots_dir"]["status"] == "stalled"
    assert list(body["checks"]["bots"]) == ["shop"]
    assert await host.post(SHOP[0], start_update(user(41)), SHOP[2]) == 200
    # The scan runs in a daemon thread: the interpreter's exit does not wait for it.
    assert [t.daemon for t in threading.enumerate() if t.name == "bots-dir-scan"] == [True]
    assert await host.host.sync() is False  # still the same scan: no second thread
    assert len([t for t in threading.enumerate() if t.name == "bots-dir-scan"]) == 1
    unstuck.set()
    await until(lambda: host.host.scanner.running_for() == 0)
    assert await host.host.sync() is True
    status, body = await host.readyz()
    assert status == 200
    assert body["checks"]["bots_dir"] == {"status": "ok"}
    assert await host.post(NEWS[0], start_update(user(42)), NEWS[2]) == 200
