"""A fake Telegram Bot API server on loopback: records every call, answers as scripted.

The bot reaches it through TELEGRAM_API_URL, so everything up to the HTTP wire is real. Besides
queued scripts, a ``faults`` hook can decide per call (for probabilistic storms: 429, 5xx, a
hang, or a send that took effect but whose answer is lost); each Call records what it was
answered and whether, at "Telegram", the send took effect.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 42, "is_bot": True, "first_name": "hello-bot", "username": "hello_bot"}


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    status: int | None = None  # None while unanswered (or hung up on)
    delivered: bool = False  # the call took effect at "Telegram" (whatever the bot was told)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Scripted:
    status: int = 200
    body: dict[str, Any] | None = None
    delay: float = 0.0
    # True: the call takes effect although its answer says otherwise (the ack is lost).
    delivered: bool = False
    # Set: the answer waits for this event (a Bot API that hangs until the test lets it go).
    hold: asyncio.Event | None = None
    # Set: answered with this HTML instead of JSON (a proxy's error page in front of the API).
    html: str | None = None


# (method, params) -> an answer to give instead of the default one, or None for the default.
FaultHook = Callable[[str, dict[str, Any]], Scripted | None]


class FakeTelegram:
    """Answers /bot<token>/<method>. Unscripted calls succeed with plausible results."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        # getUpdates: fetched but not yet confirmed by the offset of a later call.
        self._pending: list[dict[str, Any]] = []
        self.confirmed_offset = 0
        self._scripts: dict[str, deque[Scripted]] = {}
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.webhook: dict[str, Any] = {"url": "", "pending_update_count": 0}
        self.faults: FaultHook | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def script(self, method: str, *responses: Scripted) -> None:
        """Queue answers for the next calls to `method` (then back to the default answer)."""
        self._scripts.setdefault(method.lower(), deque()).extend(responses)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    def sent_texts(self) -> list[str]:
        return [c.params["text"] for c in self.calls_to("sendMessage")]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls_to(method)) < count:
            if time.monotonic() > deadline:
                msg = f"expected {count} {method} calls, got {len(self.calls_to(method))}"
                raise AssertionError(msg)
            await asyncio.sleep(0.01)
        return self.calls_to(method)

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        call = Call(
            token=request.match_info["token"],
            method=method,
            params=params,
            headers=dict(request.headers),
        )
        self.calls.append(call)
        queue = self._scripts.get(method.lower())
        scripted = queue.popleft() if queue else None
        if scripted is None and self.faults is not None:
            scripted = self.faults(method, params)
        if scripted is not None:
            call.delivered = scripted.delivered
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            if scripted.hold is not None:
                await scripted.hold.wait()
            if scripted.html is not None:
                call.status = scripted.status
                return web.Response(
                    text=scripted.html, status=scripted.status, content_type="text/html"
                )
            if scripted.body is not None:
                call.status = scripted.status
                return web.json_response(scripted.body, status=scripted.status)
        if method.lower() == "getupdates":
            return web.json_response({"ok": True, "result": await self._poll(params)})
        call.status, call.delivered = 200, True
        return web.json_response({"ok": True, "result": self._default_result(method, params)})

    async def _poll(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """getUpdates as Telegram answers it: every update not yet confirmed (by an `offset`
        above its id), oldest first, at most `limit`; waits up to `timeout` when there is none."""
        offset = int(params.get("offset") or 0)
        self.confirmed_offset = max(self.confirmed_offset, offset)
        self._pending = [u for u in self._pending if u["update_id"] >= self.confirmed_offset]
        if not self._pending and self.updates.empty():
            timeout = float(params.get("timeout") or 0)
            try:
                first = await asyncio.wait_for(self.updates.get(), timeout=max(timeout, 0.01))
            except TimeoutError:
                return []
            self._pending.append(first)
        while not self.updates.empty():
            self._pending.append(self.updates.get_nowait())
        return self._pending[: int(params.get("limit") or 100)]

    def _default_result(self, method: str, params: dict[str, Any]) -> Any:
        name = method.lower()
        if name == "getme":
            return BOT_USER
        if name == "sendmessage":
            chat_id = int(params["chat_id"])
            return {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": BOT_USER,
                "text": params.get("text", ""),
            }
        if name == "setwebhook":
            self.webhook = {"url": params.get("url", ""), "pending_update_count": 0}
            return True
        if name == "deletewebhook":
            self.webhook = {"url": "", "pending_update_count": 0}
            return True
        if name == "getwebhookinfo":
            # Telegram always sends has_custom_certificate; aiogram refuses an answer without it.
            return {"has_custom_certificate": False, **self.webhook}
        return True


async def _params(request: web.Request) -> dict[str, Any]:
    """aiogram sends multipart form fields whose values are JSON-encoded when not plain strings."""
    if request.content_type == "application/json":
        return dict(await request.json())
    params: dict[str, Any] = {}
    for key, value in (await request.post()).items():
        if isinstance(value, str):
            params[key] = _maybe_json(value)
    params.update({k: _maybe_json(v) for k, v in request.query.items()})
    return params


def _maybe_json(value: str) -> Any:
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
