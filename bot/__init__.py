"""hello-bot: a production Telegram bot template (aiogram 3, PostgreSQL, Redis, k3s)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hello-bot")
except PackageNotFoundError:  # run from a checkout, not installed (the normal case)
    __version__ = "0.1.0"
