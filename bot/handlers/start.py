"""/start: greet the user by name and remember them."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from aiogram import Router
from aiogram.filters import CommandStart
from aiogram.types import Message
from aiogram.types import User as TelegramUser
from aiogram.utils.formatting import Bold, Text
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _

from bot.i18n import choose_locale, render
from bot.middlewares.locale import LANGUAGE_FROM_CACHE
from bot.services.users import CachedUser, UserProfile, UserService
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
        template = _("Hello, {name}! Nice to meet you. Send me anything, or /help.")
    else:
        template = _("Welcome back, {name}!")
    return render(template, name=Bold(first_name))


async def start_handler(
    message: Message,
    user_service: UserService,
    tenant: Tenant,
    i18n: I18n,
    cached_user: CachedUser | None = None,
) -> None:
    """Registers the sender (or refreshes their profile) and greets them."""
    if message.from_user is None:
        await message.answer(_("Hello! Send /start from a personal account to get acquainted."))
        return
    profile = profile_of(message.from_user)
    registered = await user_service.register(profile, tenant=tenant, cached=cached_user)
    scope: AbstractContextManager[None] = nullcontext()
    if cached_user is None:
        # Without a cache entry the locale came from Telegram's language_code alone; the upsert
        # has just returned the stored choice, which wins.
        chosen = registered.chosen_language
        scope = i18n.use_locale(
            choose_locale(i18n, chosen=chosen, language_code=profile.language_code)
        )
    with scope:
        text = greeting(message.from_user.first_name, is_new=registered.is_new)
    await message.answer(**text.as_kwargs())


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(start_handler, CommandStart(), flags={LANGUAGE_FROM_CACHE: True})
    return router
