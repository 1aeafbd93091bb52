"""aiogram middlewares; each does one job and puts what it provides into handler data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from aiogram.types import TelegramObject

# What aiogram hands a middleware as `handler`: the rest of the chain.
NextHandler: TypeAlias = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]
