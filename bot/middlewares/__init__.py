"""aiogram middlewares; each does one job and puts what it provides into handler data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from aiogram.dispatcher.middlewares.data import MiddlewareData
from aiogram.types import TelegramObject

if TYPE_CHECKING:
    from aiogram.utils.i18n import I18n
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.middlewares.observer import UpdateInfo
    from bot.services.users import CachedUser, UserService
    from bot.tenant import Tenant

# What aiogram hands a middleware as `handler`: the rest of the chain.
NextHandler: TypeAlias = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class HandlerData(MiddlewareData, total=False):
    """What a handler can ask for by parameter name: aiogram's keys plus ours.

    Services are workflow data, built once at start-up (`bot.app.create_dispatcher`), so every
    update type sees them; the rest is per update.
    """

    tenant: Tenant
    """The bot this update came to; every mode passes it with each update."""
    user_service: UserService
    """Registers users (workflow data)."""
    session: AsyncSession
    """The update's unit of work; opened only for a handler that names it (SessionMiddleware)."""
    update_info: UpdateInfo
    """Handler name and duplicate flag, shared by the observer's middlewares."""
    i18n: I18n
    """The catalogs; its current locale is the update's (LocaleMiddleware)."""
    cached_user: CachedUser | None
    """The sender's cache entry as LocaleMiddleware read it (None: not cached); absent when the
    update has no sender."""
