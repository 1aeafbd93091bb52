"""The catch-all: every other message gets a short note on what the bot can do."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import Message

HELP_TEXT = (
    "I am hello-bot. I know these commands:\n"
    "/start - introduce yourself, and I will remember you\n"
    "/help - this message"
)


async def help_handler(message: Message) -> None:
    """Lists the commands."""
    await message.answer(HELP_TEXT)


async def fallback_handler(message: Message) -> None:
    """Answers any other private message (text, sticker, photo, unknown command, edit)."""
    await message.answer(HELP_TEXT)


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(help_handler, Command("help"))
    # Private chats only: in a group, answering every message would be noise.
    router.message.register(fallback_handler, F.chat.type == "private")
    router.edited_message.register(fallback_handler, F.chat.type == "private")
    return router
