"""Users: remember who talked to the bot, with a cache in front of the database."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Select, bindparam, case, or_, select
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


class CachedUser(BaseModel):
    """A user as stored: their Telegram profile and their own language choice (None: follow
    Telegram's language_code). Cached as JSON under CACHE_NAMESPACE."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: UserProfile
    chosen_language: str | None = None


# Versioned with CachedUser's shape: during a rolling upgrade old and new Pods share Redis, and
# each would find the other's entries invalid and overwrite them.
CACHE_NAMESPACE = "user.v2"


class Unread(enum.Enum):
    """`register`'s default: the caller has not read the cache entry (LocaleMiddleware has)."""

    UNREAD = enum.auto()


@dataclass(frozen=True, slots=True)
class RegisteredUser:
    profile: UserProfile
    is_new: bool
    chosen_language: str | None = None


Upsert: TypeAlias = ReturningInsert[tuple[datetime, str | None]]

_PROFILE_FIELDS = ("username", "first_name", "last_name", "language_code", "is_premium")


class UserService:
    """Registers users and stores their language choice: one upsert each, in the bot's data
    scope (`bot.tenant.Tenant`), with the cache in front of them.

    Registration is durable when `register` returns, whatever the rest of the update does with
    its own session: the reply announces it, so it must not roll back with a later failure.
    """

    def __init__(self, *, dialect: str, cache: Cache) -> None:
        self.upsert = _upsert_statement(dialect)
        self.choose = _upsert_statement(dialect, choose=True)
        self.select_language = _select_language()
        self.cache = cache

    async def register(
        self,
        profile: UserProfile,
        *,
        tenant: Tenant,
        cached: CachedUser | Unread | None = Unread.UNREAD,
    ) -> RegisteredUser:
        """Get or create the user of `tenant` (the bot) and bring their profile up to date.

        A cache hit with an identical profile touches no database at all. `cached` is the cache
        entry when the caller has already read it (see `cached`).
        """
        if cached is Unread.UNREAD:
            cached = await self.cached(profile.telegram_id, tenant=tenant)
        if cached is not None and cached.profile == profile:
            return RegisteredUser(profile, is_new=False, chosen_language=cached.chosen_language)
        # Stored before it is cached or announced: a write that failed after the greeting made
        # Telegram's redelivery greet twice, and a cached profile whose row was never stored
        # made the redelivery skip the write ("welcome back" to a user who does not exist).
        created_at, now, chosen = await self._upsert(self.upsert, profile, tenant)
        await self._cache(CachedUser(profile=profile, chosen_language=chosen), tenant)
        return RegisteredUser(profile, is_new=created_at == now, chosen_language=chosen)

    async def choose_language(self, profile: UserProfile, language: str, *, tenant: Tenant) -> None:
        """Store the user's own language; registers them if they were not yet."""
        _, _, chosen = await self._upsert(self.choose, profile, tenant, chosen_language=language)
        await self._cache(CachedUser(profile=profile, chosen_language=chosen), tenant)

    async def chosen_language(self, telegram_id: int, *, tenant: Tenant) -> str | None:
        """The stored choice, from the database (for a user the cache does not hold)."""
        async with tenant.data.statement() as connection:
            return (await connection.execute(self.select_language, {"id": telegram_id})).scalar()

    async def cached(self, telegram_id: int, *, tenant: Tenant) -> CachedUser | None:
        """The user's cache entry: their stored profile and choice, as of at most a TTL ago."""
        key = tenant.key(CACHE_NAMESPACE, telegram_id)
        raw = await self.cache.get(key)
        if raw is None:
            return None
        try:
            return CachedUser.model_validate_json(raw)
        except ValidationError:
            log.warning("cache_entry_invalid")  # the key holds a user id: not logged
            await self.cache.delete(key)
            return None

    async def _cache(self, user: CachedUser, tenant: Tenant) -> None:
        key = tenant.key(CACHE_NAMESPACE, user.profile.telegram_id)
        await self.cache.set(key, user.model_dump_json(), PROFILE_TTL_SECONDS)

    async def _upsert(
        self, statement: Upsert, profile: UserProfile, tenant: Tenant, **extra: str
    ) -> tuple[datetime, datetime, str | None]:
        """(created_at, the timestamp this call supplied, chosen_language): equal timestamps
        mean the row is new."""
        now = datetime.now(UTC)
        values = {**profile.model_dump(), **extra, "created_at": now, "updated_at": now,
                  "last_seen_at": now}  # fmt: skip
        # One statement: autocommitted where the process serves one bot (no BEGIN and COMMIT
        # holding a pooled connection: at concurrency 32 that overflowed the pool), in a
        # transaction under the bot's role in the host.
        async with tenant.data.statement() as connection:
            created_at, chosen = (await connection.execute(statement, values)).one()
        return created_at, now, chosen


@functools.cache
def _upsert_statement(dialect: str, *, choose: bool = False) -> Upsert:
    """INSERT ... ON CONFLICT DO UPDATE ... RETURNING created_at, chosen_language, built once per
    dialect: `register`'s, or with `choose` the one that also stores the language choice.

    Race-free: concurrent first contacts from one user resolve to one row. Built once and
    compiled once (SQLAlchemy caches it by structure); values arrive as parameters. Against the
    Table, not the entity: the ORM's bulk-insert layer adds nothing to one upsert. `register`'s
    leaves chosen_language alone: Telegram's profile says nothing about it.
    """
    # Only the dialect in use is imported: each costs memory in every process.
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # noqa: PLC0415
    else:
        from sqlalchemy.dialects.sqlite import insert  # noqa: PLC0415
    users = User.__table__
    statement = insert(users)
    excluded = statement.excluded
    fields = (*_PROFILE_FIELDS, "chosen_language") if choose else _PROFILE_FIELDS
    changed = or_(*(users.c[f].is_distinct_from(excluded[f]) for f in fields))
    return statement.on_conflict_do_update(
        index_elements=[users.c.telegram_id],
        set_={
            **{f: excluded[f] for f in fields},
            "updated_at": case((changed, excluded.updated_at), else_=users.c.updated_at),
            "last_seen_at": excluded.last_seen_at,
        },
    ).returning(users.c.created_at, users.c.chosen_language)


def _select_language() -> Select[tuple[str | None]]:
    users = User.__table__
    return select(users.c.chosen_language).where(users.c.telegram_id == bindparam("id"))
