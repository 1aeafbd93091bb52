"""/start: greet the user by name and remember them."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import CommandStart
from aiogram.types import Message
from aiogram.types import User as TelegramUser
from aiogram.utils.formatting import Bold, Text

from bot.services.users import UserProfile, UserService
from bot.tenant import Tenant


def profile_of(user: TelegramUser) -> UserProfile:
    return UserProfile(
        telegram_id=user.id,
        first_name=user.first_name,
        username=user.username,
        last_name=user.last_name,
        language_code=user.language_code,
        is_premium=bool(user.is_premium),
    )


def greeting(first_name: str, *, is_new: bool) -> Text:
    # Entities, not HTML: a name like "<b>&amp;" must arrive exactly as the user wrote it.
    if is_new:
        return Text("Hello, ", Bold(first_name), "! Nice to meet you. Send me anything, or /help.")
    return Text("Welcome back, ", Bold(first_name), "!")


async def start_handler(message: Message, user_service: UserService, tenant: Tenant) -> None:
    """Registers the sender (or refreshes their profile) and greets them."""
    if message.from_user is None:
        await message.answer("Hello! Send /start from a personal account to get acquainted.")
        return
    registered = await user_service.register(profile_of(message.from_user), tenant=tenant)
    await message.answer(
        **greeting(message.from_user.first_name, is_new=registered.is_new).as_kwargs()
    )


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(start_handler, CommandStart())
    return router
