"""Telegram's view of delivery (bot.observability.webhook_info): getWebhookInfo through the
fake Bot API, exported as gauges, with the interval shortened instead of sleeping a minute."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from bot.app import create_bot, create_session
from bot.config import Settings
from bot.observability.webhook_info import WebhookInfoCollector, watch_webhook
from tests.conftest import TEST_TOKEN
from tests.support.fake_telegram import FakeTelegram, Scripted

EXPECTED_URL = "https://bot.example.com/webhook"
NOW = 1_790_000_000.0
BOT = "shop"


def _samples(registry: CollectorRegistry, bot: str = BOT) -> dict[str, float]:
    """One bot's samples by name (every series carries the bot's name)."""
    text = generate_latest(registry).decode()
    assert TEST_TOKEN not in text
    assert TEST_TOKEN.split(":")[1] not in text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels == {"bot": bot}
    }


async def _exported(registry: CollectorRegistry, name: str, value: float) -> dict[str, float]:
    """The samples once `name` has `value` (the watch runs every 10 ms; 5 s at most)."""
    for _ in range(500):
        samples = _samples(registry)
        if samples.get(name) == value:
            return samples
        await asyncio.sleep(0.01)
    msg = f"{name} never became {value}: {samples}"
    raise AssertionError(msg)


@pytest.fixture
async def watching(
    fake_telegram: FakeTelegram, make_settings: Callable[..., Settings]
) -> AsyncIterator[CollectorRegistry]:
    """watch_webhook running every 10 ms into a registry of the test's own."""
    settings = make_settings()
    bot = create_bot(settings.require_token(), create_session(settings))
    registry = CollectorRegistry()
    collector = WebhookInfoCollector(clock=lambda: NOW)
    registry.register(collector)
    task = asyncio.create_task(
        watch_webhook(bot, name=BOT, expected_url=EXPECTED_URL, collector=collector, interval=0.01)
    )
    yield registry
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await bot.session.close()


async def test_pending_updates_error_age_and_url_are_exported(
    fake_telegram: FakeTelegram, watching: CollectorRegistry
) -> None:
    fake_telegram.webhook = {
        "url": EXPECTED_URL,
        "has_custom_certificate": False,
        "pending_update_count": 7,
        "last_error_date": int(NOW) - 90,
        "last_error_message": "Connection timed out",
    }
    samples = await _exported(watching, "hello_bot_webhook_pending_updates", 7)
    assert samples["hello_bot_webhook_last_error_age_seconds"] == 90
    assert samples["hello_bot_webhook_url_expected"] == 1

    # Someone registered another URL (a second deployment with the same token, say).
    fake_telegram.webhook = {**fake_telegram.webhook, "url": "https://old.example.com/webhook"}
    samples = await _exported(watching, "hello_bot_webhook_url_expected", 0)
    assert samples["hello_bot_webhook_pending_updates"] == 7


async def test_no_error_means_no_error_age(
    fake_telegram: FakeTelegram, watching: CollectorRegistry
) -> None:
    fake_telegram.webhook = {"url": EXPECTED_URL, "pending_update_count": 0}
    samples = await _exported(watching, "hello_bot_webhook_url_expected", 1)
    assert samples["hello_bot_webhook_pending_updates"] == 0
    assert "hello_bot_webhook_last_error_age_seconds" not in samples


async def test_failures_are_logged_not_fatal_and_export_nothing_misleading(
    fake_telegram: FakeTelegram, make_settings: Callable[..., Settings]
) -> None:
    refused = Scripted(
        status=400, body={"ok": False, "error_code": 400, "description": "Bad Request: nope"}
    )
    fake_telegram.faults = lambda method, _params: refused if method == "getWebhookInfo" else None
    fake_telegram.webhook = {"url": EXPECTED_URL, "pending_update_count": 3}
    settings = make_settings()
    bot = create_bot(settings.require_token(), create_session(settings))
    registry = CollectorRegistry()
    collector = WebhookInfoCollector()
    registry.register(collector)
    with capture_logs() as logs:
        task = asyncio.create_task(
            watch_webhook(
                bot, name=BOT, expected_url=EXPECTED_URL, collector=collector, interval=0.01
            )
        )
        await fake_telegram.wait_for("getWebhookInfo", count=3, timeout=5)
        # Before any answer: no zeros that would read as "wrong URL" or "no backlog".
        assert not any(name.startswith("hello_bot_webhook") for name in _samples(registry))
        assert not task.done()  # the failures did not end the watch
        fake_telegram.faults = None
        await _exported(registry, "hello_bot_webhook_pending_updates", 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await bot.session.close()
    failures = [entry for entry in logs if entry["event"] == "webhook_info_failed"]
    assert len(failures) >= 3
    assert {entry["error"] for entry in failures} == {"TelegramBadRequest"}
    assert all(TEST_TOKEN not in str(entry) for entry in logs)


def test_a_new_delivery_error_and_a_url_change_are_logged_once() -> None:
    from bot.observability.webhook_info import WebhookView  # noqa: PLC0415 - the pure part, no server needed

    collector = WebhookInfoCollector(clock=lambda: NOW)
    failing = WebhookView(
        url=EXPECTED_URL,
        pending_update_count=12,
        last_error_at=NOW - 5,
        last_error_message="SSL error",
        url_expected=True,
    )
    with capture_logs() as logs:
        collector.observe(BOT, failing)
        collector.observe(BOT, failing)  # the same error again: no second line
        collector.observe(
            BOT,
            WebhookView(
                url="https://other.example.com/hook",
                pending_update_count=12,
                last_error_at=NOW - 5,
                last_error_message="SSL error",
                url_expected=False,
            ),
        )
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("webhook_delivery_failed", "warning"),
        ("webhook_url_as_expected", "info"),
        ("webhook_url_unexpected", "warning"),
    ]
    assert logs[0]["error"] == "SSL error"
    assert {e["bot"] for e in logs} == {BOT}
    assert logs[2]["registered"] == "https://other.example.com/hook"


def test_each_bot_has_its_own_series_until_it_leaves() -> None:
    from bot.observability.webhook_info import WebhookView  # noqa: PLC0415

    registry = CollectorRegistry()
    collector = WebhookInfoCollector(clock=lambda: NOW)
    registry.register(collector)

    def view(pending: int, *, expected: bool, error_at: float | None) -> WebhookView:
        return WebhookView(
            url=EXPECTED_URL,
            pending_update_count=pending,
            last_error_at=error_at,
            last_error_message="",
            url_expected=expected,
        )

    collector.observe("shop", view(4, expected=True, error_at=NOW - 30))
    collector.observe("news", view(0, expected=False, error_at=None))
    assert _samples(registry, "shop") == {
        "hello_bot_webhook_pending_updates": 4,
        "hello_bot_webhook_url_expected": 1,
        "hello_bot_webhook_last_error_age_seconds": 30,
    }
    assert _samples(registry, "news") == {
        "hello_bot_webhook_pending_updates": 0,
        "hello_bot_webhook_url_expected": 0,
    }
    collector.forget("shop")
    assert _samples(registry, "shop") == {}
    assert _samples(registry, "news")


def test_dates_come_from_telegram_as_unix_time() -> None:
    from aiogram.types import WebhookInfo  # noqa: PLC0415

    from bot.observability.webhook_info import WebhookView  # noqa: PLC0415

    info = WebhookInfo(
        url=EXPECTED_URL,
        has_custom_certificate=False,
        pending_update_count=1,
        last_error_date=datetime.fromtimestamp(NOW - 60, tz=UTC),
    )
    view = WebhookView.of(info, expected_url=EXPECTED_URL + "/")
    assert view.last_error_at == NOW - 60
    assert view.url_expected is False  # exact match: a trailing slash is another URL
