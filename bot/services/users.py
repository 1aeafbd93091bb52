"""Users: remember who talked to the bot, with a cache in front of the database."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import case, or_
from sqlalchemy.sql.dml import ReturningInsert

from bot.cache import Cache
from bot.db.models import User
from bot.tenant import Tenant

log = structlog.get_logger(__name__)

# A cached profile spares the database a write on every /start; last_seen_at is therefore
# refreshed at most once per this period for a user whose profile does not change.
PROFILE_TTL_SECONDS = 3600.0


class UserProfile(BaseModel):
    """What Telegram tells us about a user; cached as JSON, never pickled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    telegram_id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    is_premium: bool = False


@dataclass(frozen=True, slots=True)
class RegisteredUser:
    profile: UserProfile
    is_new: bool


_PROFILE_FIELDS = ("username", "first_name", "last_name", "language_code", "is_premium")


class UserService:
    """Registers users: one autocommitted upsert, with the cache in front of it.

    Registration is durable when `register` returns, whatever the rest of the update does with
    its own session: the reply announces it, so it must not roll back with a later failure.
    """

    def __init__(self, *, dialect: str, cache: Cache) -> None:
        self.upsert = _upsert_statement(dialect)
        self.cache = cache

    async def register(self, profile: UserProfile, *, tenant: Tenant) -> RegisteredUser:
        """Get or create the user and bring their profile up to date.

        A cache hit with an identical profile touches no database at all.
        """
        key = tenant.key("user", profile.telegram_id)
        if await self._cached(key) == profile:
            return RegisteredUser(profile=profile, is_new=False)
        # Stored before it is cached or announced: a write that failed after the greeting made
        # Telegram's redelivery greet twice, and a cached profile whose row was never stored
        # made the redelivery skip the write ("welcome back" to a user who does not exist).
        is_new = await self._upsert(profile, tenant)
        await self.cache.set(key, profile.model_dump_json(), PROFILE_TTL_SECONDS)
        return RegisteredUser(profile=profile, is_new=is_new)

    async def _cached(self, key: str) -> UserProfile | None:
        raw = await self.cache.get(key)
        if raw is None:
            return None
        try:
            return UserProfile.model_validate_json(raw)
        except ValidationError:
            log.warning("cache_entry_invalid")  # the key holds a user id: not logged
            await self.cache.delete(key)
            return None

    async def _upsert(self, profile: UserProfile, tenant: Tenant) -> bool:
        """True when the row is new: its created_at is the timestamp this call supplied."""
        now = datetime.now(UTC)
        values = {**profile.model_dump(), "created_at": now, "updated_at": now, "last_seen_at": now}
        # One statement: autocommitted where the process serves one bot (no BEGIN and COMMIT
        # holding a pooled connection: at concurrency 32 that overflowed the pool), in a
        # transaction under the bot's role in the host.
        async with tenant.data.statement() as connection:
            created_at = (await connection.execute(self.upsert, values)).scalar_one()
        return created_at == now


@functools.cache
def _upsert_statement(dialect: str) -> ReturningInsert[tuple[datetime]]:
    """INSERT ... ON CONFLICT DO UPDATE ... RETURNING created_at, built once per dialect.

    Race-free: concurrent first contacts from one user resolve to one row. Built once and
    compiled once (SQLAlchemy caches it by structure); values arrive as parameters. Against the
    Table, not the entity: the ORM's bulk-insert layer adds nothing to one upsert.
    """
    # Only the dialect in use is imported: each costs memory in every process.
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # noqa: PLC0415
    else:
        from sqlalchemy.dialects.sqlite import insert  # noqa: PLC0415
    users = User.__table__
    statement = insert(users)
    excluded = statement.excluded
    changed = or_(*(users.c[f].is_distinct_from(excluded[f]) for f in _PROFILE_FIELDS))
    return statement.on_conflict_do_update(
        index_elements=[users.c.telegram_id],
        set_={
            **{f: excluded[f] for f in _PROFILE_FIELDS},
            "updated_at": case((changed, excluded.updated_at), else_=users.c.updated_at),
            "last_seen_at": excluded.last_seen_at,
        },
    ).returning(users.c.created_at)
