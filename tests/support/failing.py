"""A bug in a handler, as the error handling sees one: a real handler on the real Dispatcher."""

from __future__ import annotations

from aiogram import Dispatcher, F
from aiogram.types import Message


async def exploding_handler(message: Message) -> None:
    msg = f"boom in {message.text}"
    raise ZeroDivisionError(msg)


def add_failing_handler(dp: Dispatcher, text: str = "/explode") -> str:
    """Registers, on the Dispatcher's own message observer (tried before any of its routers),
    a handler that raises ZeroDivisionError for `text`; returns `text`, to be sent."""
    dp.message.register(exploding_handler, F.text == text)
    return text
