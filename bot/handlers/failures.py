"""Errors: bugs are logged and apologised for; outages propagate so the update is retried."""

from __future__ import annotations

from typing import Any

import structlog
from aiogram import Router
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ErrorEvent
from aiogram.utils.i18n import gettext as _

from bot.middlewares.locale import LANGUAGE_FROM_CACHE
from bot.retry_policy import is_retryable

log = structlog.get_logger(__name__)


async def error_handler(event: ErrorEvent) -> Any:
    """Receives every exception a handler raised."""
    if is_retryable(event.exception):
        # Let it reach the webhook, which answers 5xx so Telegram redelivers the update.
        log.warning("update_retryable_failure", error=type(event.exception).__name__)
        return UNHANDLED
    if isinstance(event.exception, TelegramAPIError):
        # Telegram refused a call (bot blocked, chat gone, bad request): retrying or apologising
        # would be refused the same way.
        log.warning("telegram_refused", error=type(event.exception).__name__)
        return True
    log.error("update_failed", exc_info=event.exception)
    message = event.update.message or event.update.edited_message
    if message is not None and message.chat.type == "private":
        try:
            await message.answer(
                _("Sorry, something went wrong on my side. Please try again later.")
            )
        except Exception as exc:  # the apology is best effort; the error is already logged
            log.warning("apology_failed", error=type(exc).__name__)
    return True


def create_router() -> Router:
    router = Router(name=__name__)
    # In the user's language as far as the cache knows it: the database may be what failed.
    router.errors.register(error_handler, flags={LANGUAGE_FROM_CACHE: True})
    return router
