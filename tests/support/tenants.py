"""A Tenant for tests that never touch its data (dedup, cache keys): its engine never connects."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import create_async_engine

from bot.db.scope import DataScope
from bot.tenant import Tenant


def keys_only_tenant(name: str, bot_id: int, namespace: str | None = None) -> Tenant:
    scope = DataScope(create_async_engine("sqlite+aiosqlite://"))
    return Tenant(name=name, bot_id=bot_id, namespace=namespace or name, data=scope)
