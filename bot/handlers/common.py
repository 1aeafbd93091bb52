"""The catch-all: every other message gets a short note on what the bot can do."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import Message
from aiogram.utils.i18n import gettext as _

from bot.i18n import N_

# The source text (English); each language's catalog translates it.
HELP_TEXT = N_(
    "I am hello-bot. I know these commands:\n"
    "/start - introduce yourself, and I will remember you\n"
    "/language - choose the language I speak\n"
    "/help - this message"
)


async def help_handler(message: Message) -> None:
    """Lists the commands."""
    await message.answer(_(HELP_TEXT))


async def fallback_handler(message: Message) -> None:
    """Answers any other private message (text, sticker, photo, unknown command, edit)."""
    await message.answer(_(HELP_TEXT))


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(help_handler, Command("help"))
    # Private chats only: in a group, answering every message would be noise.
    router.message.register(fallback_handler, F.chat.type == "private")
    router.edited_message.register(fallback_handler, F.chat.type == "private")
    return router
