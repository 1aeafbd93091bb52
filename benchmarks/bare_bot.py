"""The baseline: a bare aiogram webhook bot that replies to every message, nothing else.

No database, cache, dedup, metrics or logging; it answers after processing, like ours
(`handle_in_background=False`), so latencies compare like for like.
    python -m benchmarks.bare_bot --port 18082 --api http://127.0.0.1:18081 [--freeze-gc]
"""

from __future__ import annotations

import argparse
import gc

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web

TOKEN = "123456:BENCHMARKbenchmarkBENCHMARKbench"
SECRET = "bench-secret"


async def reply(message: Message) -> None:
    await message.answer(f"Hello, {message.from_user.first_name if message.from_user else 'you'}!")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--freeze-gc", action="store_true")
    args = parser.parse_args()
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(args.api)))
    dp = Dispatcher()
    dp.message.register(reply)
    app = web.Application()
    SimpleRequestHandler(dp, bot, handle_in_background=False, secret_token=SECRET).register(
        app, path="/webhook"
    )

    async def ready(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app.router.add_get("/readyz", ready)
    setup_application(app, dp, bot=bot)
    if args.freeze_gc:
        gc.collect()
        gc.freeze()
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
