"""`python -m bot serve` as production runs it: webhook registration, graceful drain on SIGTERM,
and a token that never reaches the output, whatever happens."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import TEST_SECRET, TEST_TOKEN
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.servers import free_port
from tests.support.updates import message_update, start_update, user


async def post(
    url: str, body: Any, secret: str | None = TEST_SECRET, raw: bytes | None = None
) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    data = io.BytesIO(raw if raw is not None else json.dumps(body).encode())
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/webhook", data=data, headers=headers) as r,
    ):
        return r.status


def uid() -> int:
    return random.randint(10**9, 2 * 10**9)


async def test_serve_registers_the_webhook_and_answers_updates(
    make_bot_process: Callable[..., BotProcess], fake_telegram: FakeTelegram
) -> None:
    bot = make_bot_process(WEBHOOK_URL="https://bot.example.com", WEBHOOK_MAX_CONNECTIONS="17")
    await bot.start()
    [register] = await fake_telegram.wait_for("setWebhook")
    assert register.params["url"] == "https://bot.example.com/webhook"
    assert register.params["secret_token"] == TEST_SECRET
    assert set(register.params["allowed_updates"]) == {
        "message",
        "edited_message",
        "callback_query",  # /language's keyboard
    }
    assert int(register.params["max_connections"]) == 17

    assert await post(bot.url, start_update(user(uid(), "Srv"))) == 200
    assert fake_telegram.sent_texts()[0].startswith("Hello, Srv!")
    assert await bot.stop() == 0
    assert fake_telegram.calls_to("deleteWebhook") == []  # never deleted on shutdown


async def test_sigterm_mid_update_still_sends_the_reply_and_exits_cleanly(
    make_bot_process: Callable[..., BotProcess], fake_telegram: FakeTelegram
) -> None:
    bot = make_bot_process(SHUTDOWN_GRACE_SECONDS="10")
    await bot.start()
    fake_telegram.script("sendMessage", Scripted(delay=2.0))
    slow = asyncio.create_task(post(bot.url, message_update(user(uid()), "slow one")))
    await fake_telegram.wait_for("sendMessage")  # the update is in flight, its reply pending

    bot.signal()
    await bot.wait_for_status("/readyz", 503, timeout=5)  # readiness flips at once
    assert await post(bot.url, message_update(user(uid()), "too late")) == 503
    assert await slow == 200  # the in-flight update finished and was acknowledged
    assert await bot.wait() == 0
    assert len(fake_telegram.calls_to("sendMessage")) == 1
    events = [json.loads(line)["event"] for line in bot.text.splitlines() if line.startswith("{")]
    assert "shutdown_started" in events
    assert "shutdown_drained" in events


async def test_token_never_appears_in_output(
    make_bot_process: Callable[..., BotProcess], fake_telegram: FakeTelegram
) -> None:
    bot = make_bot_process(LOG_LEVEL="DEBUG", WEBHOOK_URL="https://bot.example.com")
    fake_telegram.script(
        "setWebhook", Scripted(500, {"ok": False, "error_code": 500, "description": "boom"})
    )
    await bot.start()
    who = uid()
    down = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    flood = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
             "parameters": {"retry_after": 1}}  # fmt: skip
    blocked = {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    fake_telegram.script(
        "sendMessage", Scripted(429, flood), Scripted(502, down), Scripted(403, blocked)
    )
    assert await post(bot.url, start_update(user(who, "Tok"))) == 200
    assert await post(bot.url, start_update(user(who, "Tok"))) == 200
    assert await post(bot.url, None, raw=b"{broken") == 400
    assert await post(bot.url, start_update(user(who)), secret="nope") == 401
    assert await post(bot.url, message_update(user(who), TEST_TOKEN)) == 200  # a user pastes it
    # A proxy in front of the Bot API (TELEGRAM_API_URL) answers with an error page quoting the
    # request's URL, token included: aiogram's error carries the page, the traceback logs it.
    quoted = f"<p>The requested URL /bot{TEST_TOKEN}/sendMessage was not found here.</p>"
    fake_telegram.script("sendMessage", Scripted(404, html=quoted))
    assert await post(bot.url, message_update(user(who), "hi")) == 200  # a bug: apologised
    await fake_telegram.wait_for("setWebhook", count=2, timeout=10)
    async with aiohttp.ClientSession() as http, http.get(bot.url + "/metrics") as metrics:
        exposition = await metrics.text()
    assert await bot.stop() == 0

    output = bot.text + exposition
    # The check below is not vacuous: the token reached a log line, and redaction removed it.
    assert "update_handled" in output
    assert "/bot[REDACTED]/sendMessage was not found" in output
    assert TEST_TOKEN not in output
    assert TEST_TOKEN.split(":", 1)[1] not in output


async def test_serve_without_a_reachable_database_is_live_but_not_ready(
    make_bot_process: Callable[..., BotProcess],
) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    bot = make_bot_process(DATABASE_URL=dead)
    await bot.start(wait_ready=False)
    async with aiohttp.ClientSession() as http, http.get(bot.url + "/readyz") as response:
        assert response.status == 503
        body = await response.json()
    assert body["checks"]["database"]["status"] == "error"
    assert await bot.stop() == 0


async def test_a_client_hanging_up_mid_body_is_no_server_error(
    make_bot_process: Callable[..., BotProcess],
) -> None:
    # Found by tests/e2e: aiohttp logged each such request as an error, with a traceback.
    bot = make_bot_process()
    await bot.start()
    _, writer = await asyncio.open_connection("127.0.0.1", bot.port)
    writer.write(
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Telegram-Bot-Api-Secret-Token: " + TEST_SECRET.encode() + b"\r\n"
        b"Content-Length: 5000\r\n\r\n" + b'{"update_id": 1'
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        # Bounded polling until the request was answered (to nobody) and counted.
        while True:
            async with http.get(bot.url + "/metrics") as response:
                if 'hello_bot_webhook_requests_total{status="400"}' in await response.text():
                    break
            await asyncio.sleep(0.05)
    assert await bot.stop() == 0
    assert '"level": "error"' not in bot.text


async def test_the_garbage_collector_runs_again_once_serve_is_up(
    make_bot_process: Callable[..., BotProcess],
) -> None:
    # Start-up turns the collector off (and settle_heap() back on): a process left without it
    # would grow with every reference cycle it ever made.
    bot = make_bot_process()
    await bot.start()

    async def collections() -> float:
        async with aiohttp.ClientSession() as http, http.get(bot.url + "/metrics") as r:
            text = await r.text()
        line = next(x for x in text.splitlines() if x.startswith("python_gc_collections_total"))
        return float(line.rsplit(" ", 1)[1])  # the youngest generation comes first

    # The youngest generation is collected after 10,000 net allocations (settle_heap): some
    # dozens of updates. Bounded: a process without a collector fails after 2,000.
    before = await collections()
    for _ in range(40):
        batch = [post(bot.url, start_update(user(uid(), "Gc"))) for _ in range(50)]
        assert set(await asyncio.gather(*batch)) == {200}
        if await collections() > before:
            break
    else:
        pytest.fail("no collection in 2,000 updates: the collector is off")


async def _metrics_once(bot: BotProcess, line: str, timeout: float = 10) -> str:
    """/metrics once it holds `line` (bounded polling: the watch runs every 0.1 s here)."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            async with http.get(bot.url + "/metrics") as response:
                text = await response.text()
            if line in text.splitlines():
                return text
            await asyncio.sleep(0.05)


async def test_serve_exports_telegrams_view_of_delivery(
    make_bot_process: Callable[..., BotProcess], fake_telegram: FakeTelegram, project_name: str
) -> None:
    bot = make_bot_process(
        WEBHOOK_URL="https://bot.example.com", WEBHOOK_INFO_INTERVAL_SECONDS="0.1"
    )
    await bot.start()
    await fake_telegram.wait_for("setWebhook")
    # Telegram has the URL serve registered (the fake keeps what setWebhook said).
    label = f'{{bot="{project_name}"}}'
    text = await _metrics_once(bot, f"hello_bot_webhook_url_expected{label} 1.0")
    assert f"hello_bot_webhook_pending_updates{label} 0.0" in text.splitlines()
    assert "hello_bot_webhook_last_error_age_seconds" not in text
    # Telegram starts failing to reach us: the backlog and the error show on the next scrape.
    fake_telegram.webhook = {
        **fake_telegram.webhook,
        "pending_update_count": 5,
        "last_error_date": int(time.time()) - 3,
        "last_error_message": "Connection refused",
    }
    text = await _metrics_once(bot, f"hello_bot_webhook_pending_updates{label} 5.0")
    (age,) = [x for x in text.splitlines() if x.startswith("hello_bot_webhook_last_error_age")]
    assert 2 <= float(age.rsplit(" ", 1)[1]) < 60
    assert await bot.stop() == 0  # the watch is cancelled on shutdown, not an error
    events = [json.loads(line) for line in bot.text.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "webhook_delivery_failed" in names
    # Watched only once registered: a normal start never reports a wrong URL, even briefly.
    assert "webhook_url_as_expected" in names
    assert "webhook_url_unexpected" not in names
    assert [e for e in events if e["level"] == "error"] == []


async def test_serve_without_a_webhook_url_asks_telegram_nothing(
    make_bot_process: Callable[..., BotProcess], fake_telegram: FakeTelegram
) -> None:
    bot = make_bot_process(WEBHOOK_INFO_INTERVAL_SECONDS="0.1")
    await bot.start()
    async with aiohttp.ClientSession() as http, http.get(bot.url + "/metrics") as response:
        text = await response.text()
    assert await bot.stop() == 0
    # No registered webhook to compare with: no gauges that would read as "wrong URL".
    assert "hello_bot_webhook_url_expected" not in text
    assert fake_telegram.calls_to("getWebhookInfo") == []
