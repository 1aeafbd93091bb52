"""The chart's dashboard against the real thing: a real Prometheus scrapes a real `serve` under a
little traffic (a 429 and a 502 from the fake Bot API among it), and every panel's query
returns at least one series."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.chart.helpers import CHART_DIR, FULLNAME, NAMESPACE
from tests.conftest import TEST_SECRET
from tests.support.bot_process import BotProcess
from tests.support.fake_telegram import FakeTelegram, Scripted
from tests.support.prometheus_server import PrometheusServer
from tests.support.updates import message_update, start_update, user

DASHBOARD = CHART_DIR / "files" / "dashboard.json"
RATE_WINDOW = "20s"  # $__rate_interval for a 1 s scrape: several samples per window


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", RATE_WINDOW)
                .replace("$namespace", NAMESPACE)
                .replace("$job", FULLNAME)
            )
            queries.append((f"{panel['title']} ({target['refId']})", expr))
    return queries


@pytest.fixture
async def serve(make_bot_process: Callable[..., BotProcess]) -> BotProcess:
    bot = make_bot_process(
        WEBHOOK_URL="https://bot.example.com", WEBHOOK_INFO_INTERVAL_SECONDS="0.5"
    )
    await bot.start()
    return bot


@pytest.fixture
async def prometheus(serve: BotProcess, tmp_path: Path) -> AsyncIterator[PrometheusServer]:
    # Labelled as the chart's monitors label the bot's series: job = fullname, the namespace.
    server = PrometheusServer(
        tmp_path,
        job=FULLNAME,
        target=f"127.0.0.1:{serve.port}",
        labels={"namespace": NAMESPACE, "pod": "bot-1"},
    )
    await server.start()
    yield server
    await server.stop()


async def _post(bot: BotProcess, update: dict[str, object]) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": TEST_SECRET}
    async with (
        aiohttp.ClientSession() as http,
        http.post(bot.url + "/webhook", json=update, headers=headers) as response,
    ):
        return response.status


async def _until_scraped(prometheus: PrometheusServer, expr: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await prometheus.query(expr):
        assert time.monotonic() < deadline, f"never scraped: {expr}"
        await asyncio.sleep(0.2)


async def test_every_panel_query_returns_a_series_from_a_real_scrape(
    serve: BotProcess, prometheus: PrometheusServer, fake_telegram: FakeTelegram
) -> None:
    # Telegram reports a failed delivery a minute ago, with two updates waiting.
    fake_telegram.webhook = {
        **fake_telegram.webhook,
        "pending_update_count": 2,
        "last_error_date": int(time.time()) - 60,
        "last_error_message": "Connection timed out",
    }
    flood = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
             "parameters": {"retry_after": 1}}  # fmt: skip
    down = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
    fake_telegram.script("sendMessage", Scripted(429, flood), Scripted(502, down))
    await _until_scraped(prometheus, f'up{{job="{FULLNAME}"}} == 1')

    who = random.randint(10**9, 2 * 10**9)
    statuses = [await _post(serve, start_update(user(who, "Dash")))]
    statuses += [await _post(serve, message_update(user(who), f"hi {n}")) for n in range(3)]
    statuses.append(await _post(serve, {"not": "an update"}))
    assert statuses == [200, 200, 200, 200, 400]
    # Scrapes that saw the traffic, and the watch's view of Telegram.
    await _until_scraped(
        prometheus, f'hello_bot_bot_api_retries_total{{reason="flood_wait", job="{FULLNAME}"}}'
    )
    await _until_scraped(
        prometheus, f'hello_bot_webhook_last_error_age_seconds{{job="{FULLNAME}"}}'
    )
    await asyncio.sleep(2)  # two more scrapes, so every rate window holds the increase

    empty = []
    for where, expr in _panel_queries():
        if not await prometheus.query(expr):
            empty.append(where)
    assert empty == [], f"panels with no series: {empty}"


async def test_a_query_for_a_metric_nobody_exports_returns_nothing(
    serve: BotProcess, prometheus: PrometheusServer
) -> None:
    """The check above can fail: a misspelt metric yields no series, it does not error."""
    await _until_scraped(prometheus, f'up{{job="{FULLNAME}"}} == 1')
    assert (
        await prometheus.query(f'sum(rate(hello_bot_update_total{{job="{FULLNAME}"}}[20s]))') == []
    )
