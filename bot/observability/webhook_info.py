"""Telegram's view of delivery, as metrics: in webhook mode (and in the host, for each bot) the
server asks `getWebhookInfo` every WEBHOOK_INFO_INTERVAL_SECONDS. Only Telegram sees deliveries
that never reached us (DNS, TLS, the Ingress, a NetworkPolicy): its pending count and last error
are the "Telegram cannot reach us" signal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from aiogram import Bot
from aiogram.types import WebhookInfo
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

PENDING = "hello_bot_webhook_pending_updates"
ERROR_AGE = "hello_bot_webhook_last_error_age_seconds"
URL_EXPECTED = "hello_bot_webhook_url_expected"


@dataclass(frozen=True, slots=True)
class WebhookView:
    """What one getWebhookInfo said, reduced to what the metrics need."""

    url: str
    pending_update_count: int
    last_error_at: float | None  # Unix time of Telegram's last failed delivery, if any
    last_error_message: str
    url_expected: bool

    @classmethod
    def of(cls, info: WebhookInfo, *, expected_url: str) -> WebhookView:
        error_at = info.last_error_date.timestamp() if info.last_error_date else None
        return cls(
            url=info.url,
            pending_update_count=info.pending_update_count,
            last_error_at=error_at,
            last_error_message=info.last_error_message or "",
            url_expected=info.url == expected_url,
        )


class WebhookInfoCollector(Collector):
    """Exports the latest view of each bot, labelled with the bot's name (one in `serve`, one per
    bot file in the host). A bot exports nothing before its first answer: a zero would read as
    "URL wrong" or "error just now"."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.views: dict[str, WebhookView] = {}
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry refuses a second collector of the same series.
        yield GaugeMetricFamily(PENDING, "")
        yield GaugeMetricFamily(ERROR_AGE, "")
        yield GaugeMetricFamily(URL_EXPECTED, "")

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            PENDING,
            "Updates Telegram holds for this webhook, not yet delivered (getWebhookInfo)",
            labels=["bot"],
        )
        expected = GaugeMetricFamily(
            URL_EXPECTED,
            "1 while the webhook Telegram has registered is the one this bot registered",
            labels=["bot"],
        )
        # Computed at scrape time, so the age keeps growing between two getWebhookInfo calls.
        error_age = GaugeMetricFamily(
            ERROR_AGE,
            "Seconds since Telegram last failed to deliver an update to this webhook",
            labels=["bot"],
        )
        now = self._clock()
        for bot, view in sorted(self.views.items()):
            pending.add_metric([bot], view.pending_update_count)
            expected.add_metric([bot], 1 if view.url_expected else 0)
            if view.last_error_at is not None:
                error_age.add_metric([bot], max(0.0, now - view.last_error_at))
        yield pending
        yield expected
        if error_age.samples:
            yield error_age

    def observe(self, bot: str, view: WebhookView) -> None:
        """Keep the bot's view; log what changed (a new delivery error, the URL going wrong or
        right)."""
        before = self.views.get(bot)
        self.views[bot] = view
        new_error = view.last_error_at is not None and (
            before is None or before.last_error_at != view.last_error_at
        )
        if new_error:
            log.warning(
                "webhook_delivery_failed",
                bot=bot,
                error=view.last_error_message,
                pending_update_count=view.pending_update_count,
            )
        if before is None or before.url_expected != view.url_expected:
            if view.url_expected:
                log.info("webhook_url_as_expected", bot=bot)
            else:
                log.warning("webhook_url_unexpected", bot=bot, registered=view.url)

    def forget(self, bot: str) -> None:
        """The bot left the host: its series go with it."""
        self.views.pop(bot, None)


async def watch_webhook(
    bot: Bot,
    *,
    name: str,
    expected_url: str,
    collector: WebhookInfoCollector,
    interval: float,
) -> None:
    """Ask getWebhookInfo every `interval` seconds until cancelled. A failed call is logged
    and the last view kept: the next round tries again, and serving never depends on it."""
    while True:
        try:
            info = await bot.get_webhook_info()
        except Exception as exc:  # any failure: logged, never fatal to the server
            log.warning("webhook_info_failed", bot=name, error=type(exc).__name__)
        else:
            collector.observe(name, WebhookView.of(info, expected_url=expected_url))
        await asyncio.sleep(interval)
