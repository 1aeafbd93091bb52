"""The catch-all: every other message gets a short note on what the bot can do."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import Message

router = Router(name=__name__)

HELP_TEXT = (
    "I am hello-bot. I know these commands:\n"
    "/start - introduce yourself, and I will remember you\n"
    "/help - this message"
)


@router.message(Command("help"))
async def help_handler(message: Message) -> None:
    """Lists the commands."""
    await message.answer(HELP_TEXT)


@router.message(F.chat.type == "private")
@router.edited_message(F.chat.type == "private")
async def fallback_handler(message: Message) -> None:
    """Answers any other private message (text, sticker, photo, unknown command, edit)."""
    await message.answer(HELP_TEXT)
