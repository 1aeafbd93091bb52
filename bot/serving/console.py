"""Console chat: you type as a Telegram user, the bot's replies print. No token, no network.

The same dispatcher, middlewares, services and database as production; only the Bot's session
(the HTTP seam) is replaced by one that prints what the bot sends. Inline keyboards print as
`[button]` rows; typing a button's text presses it.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any, TextIO

from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageText,
    GetMe,
    SendMessage,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiogram.types import (
    CallbackQuery,
    Chat,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    Update,
    User,
)

from bot.app import assemble
from bot.config import Settings
from bot.lifecycle import settle_heap
from bot.tenant import working_for

CONSOLE_TOKEN = "1:console"  # noqa: S105 - never sent anywhere; aiogram only needs a well-formed token
BOT_USER = User(id=1, is_bot=True, first_name="hello-bot", username="hello_bot")


class ConsoleSession(BaseSession):
    """A Bot API session that prints messages instead of sending them."""

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out
        self._message_ids = itertools.count(1_000_000)
        # The last keyboard's buttons (text -> callback data) and the message that carries it.
        self.buttons: dict[str, str] = {}
        self.last_message: Message | None = None

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - aiogram's signature
    ) -> TelegramType:
        if isinstance(method, GetMe):
            return BOT_USER  # type: ignore[return-value]
        if isinstance(method, SendMessage | EditMessageText):
            self._print(method.text, method.reply_markup)
            edited = method.message_id if isinstance(method, EditMessageText) else None
            self.last_message = Message(
                message_id=edited or next(self._message_ids),
                date=datetime.now(UTC),
                chat=Chat(id=int(method.chat_id or 0), type="private"),
                from_user=BOT_USER,
                text=method.text,
            )
            return self.last_message  # type: ignore[return-value]
        if isinstance(method, AnswerCallbackQuery):
            if method.text:
                print(f"bot> ({method.text})", file=self.out, flush=True)
            return True  # type: ignore[return-value]
        msg = f"the console chat does not emulate {type(method).__name__}"
        raise NotImplementedError(msg)

    def _print(self, text: str, markup: object) -> None:
        print(f"bot> {text}", file=self.out, flush=True)
        self.buttons = {}
        if isinstance(markup, InlineKeyboardMarkup):
            for row in markup.inline_keyboard:
                self.buttons.update({b.text: b.callback_data or "" for b in row})
                print("bot> " + " ".join(f"[{b.text}]" for b in row), file=self.out, flush=True)

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - aiogram's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        msg = "the console chat has no files to download"
        raise NotImplementedError(msg)
        yield b""  # pragma: no cover - makes this an async generator, as the base declares

    async def close(self) -> None:
        return None


def console_update(update_id: int, text: str, user: User) -> Update:
    entities = None
    if text.startswith("/"):
        command_length = len(text.split(maxsplit=1)[0])
        entities = [MessageEntity(type="bot_command", offset=0, length=command_length)]
    message = Message(
        message_id=update_id,
        date=datetime.now(UTC),
        chat=Chat(id=user.id, type="private", first_name=user.first_name, username=user.username),
        from_user=user,
        text=text,
        entities=entities,
    )
    return Update(update_id=update_id, message=message)


def button_press(update_id: int, data: str, user: User, message: Message | None) -> Update:
    query = CallbackQuery(
        id=str(update_id), from_user=user, chat_instance=str(user.id), data=data, message=message
    )
    return Update(update_id=update_id, callback_query=query)


async def run_console(
    settings: Settings,
    *,
    user: User,
    bot_name: str | None = None,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> None:
    interactive = stdin.isatty()
    session = ConsoleSession(stdout)
    bot = Bot(token=CONSOLE_TOKEN, session=session)
    async with assemble(settings, bot=bot, bot_name=bot_name, deduplicate=False) as app:
        working_for.set(app.tenant.name)
        app.schema.require_open()  # nobody migrates PostgreSQL while we wait: say so and stop
        settle_heap()
        if interactive:
            print("Console chat. Type /start, anything else, or Ctrl-D to quit.", file=stdout)
        loop = asyncio.get_running_loop()
        for update_id in itertools.count(1):
            if interactive:
                print("you> ", end="", file=stdout, flush=True)
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            text = line.strip()
            if (button := text.strip("[]")) in session.buttons:
                press = button_press(update_id, session.buttons[button], user, session.last_message)
                await app.dp.feed_update(bot, press, tenant=app.tenant)
            elif text:
                update = console_update(update_id, text, user)
                await app.dp.feed_update(bot, update, tenant=app.tenant)
