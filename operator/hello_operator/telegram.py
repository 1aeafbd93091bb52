"""Bot API calls the operator makes: getWebhookInfo, setWebhook (Shared bots) and deleteWebhook.

The token is part of every Bot API URL, so no exception raised here carries a URL, a request or
aiohttp's own message: errors are rebuilt from the method name and the answer's description only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


class TelegramError(Exception):
    """A failed Bot API call; its message never contains the token."""


@dataclass(frozen=True)
class WebhookInfo:
    url: str
    pending_update_count: int
    last_error_message: str
    last_error_date: int

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> WebhookInfo:
        return cls(
            url=str(result.get("url", "")),
            pending_update_count=int(result.get("pending_update_count", 0)),
            last_error_message=str(result.get("last_error_message", "")),
            last_error_date=int(result.get("last_error_date", 0)),
        )


def redact(text: str, token: str) -> str:
    return text.replace(token, "<token>") if token else text


class TelegramClient:
    def __init__(self, *, session: aiohttp.ClientSession, api_url: str) -> None:
        self._session = session
        self._api_url = api_url.rstrip("/")

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, token: str, method: str, params: dict[str, Any]) -> Any:
        url = f"{self._api_url}/bot{token}/{method}"
        try:
            async with self._session.post(url, json=params) as response:
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # aiohttp's messages can include the URL, so only the exception type is kept.
            msg = f"{method} failed: {type(exc).__name__}"
            raise TelegramError(msg) from None
        if not isinstance(payload, dict) or not payload.get("ok"):
            description = payload.get("description", "") if isinstance(payload, dict) else ""
            msg = f"{method} failed: {redact(str(description), token) or response.status}"
            raise TelegramError(msg)
        return payload.get("result")

    async def get_webhook_info(self, token: str) -> WebhookInfo:
        result = await self._call(token, "getWebhookInfo", {})
        return WebhookInfo.from_result(result if isinstance(result, dict) else {})

    async def delete_webhook(self, token: str) -> None:
        await self._call(token, "deleteWebhook", {"drop_pending_updates": False})

    async def set_webhook(self, token: str, *, url: str, secret_token: str) -> None:
        """Point Telegram at `url`; what was not delivered yet goes there (nothing is dropped).

        `allowed_updates` is left out, so Telegram keeps the bot's previous choice (the bot
        process knows its handlers; the operator does not).
        """
        params = {"url": url, "secret_token": secret_token, "drop_pending_updates": False}
        await self._call(token, "setWebhook", params)
