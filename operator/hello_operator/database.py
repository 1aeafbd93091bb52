"""Per-project databases and roles in the shared PostgreSQL, each owned by one TelegramBot.

Names come from `naming` (injective); who owns each name is recorded in a registry, and every
CREATE, ALTER ROLE, GRANT and DROP here first checks that the name is the caller's. A name that
exists but is not the caller's is `NotOwned` (a False condition upstream), never touched.

The registry is a table in a database of its own (`hello_operator`), not a COMMENT on each role
and database: a database's owner (the bot's own role, which runs tenant code) may rewrite the
comment on it, and the admin's own database may not accept tables from an admin that is only
CREATEDB and CREATEROLE. The operator creates that database, so it owns it, and nobody else may
connect to it. Claims run one at a time under an advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import asyncpg

from hello_operator import naming

REGISTRY_DATABASE = "hello_operator"
REGISTRY_LOCK = 0x68656C6C6F  # pg_advisory_xact_lock key: "hello"
OWNED_BY_ANOTHER = "DatabaseOwnedByAnother"
ADOPTION_AMBIGUOUS = "DatabaseAdoptionAmbiguous"
TENANT_NAME = re.compile(r"[a-z0-9-]{1,40}")  # bot/hosting/bots_dir.py's NAME_RE
# Kinds of registry rows; each owner holds at most one of each.
BOT, HOSTS, TENANT = "bot", "hosts", "tenant"

REGISTRY_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS owners (
        name text PRIMARY KEY,
        kind text NOT NULL,
        namespace text NOT NULL,
        bot text NOT NULL,
        uid text NOT NULL,
        adopted boolean NOT NULL DEFAULT false,
        since timestamptz NOT NULL DEFAULT now(),
        UNIQUE (kind, namespace, bot))""",
    # When this operator first ran: only what existed before then can have a legacy name.
    "CREATE TABLE IF NOT EXISTS epoch (started timestamptz NOT NULL)",
)


@dataclass(frozen=True)
class Owner:
    """A TelegramBot, or (name "") a namespace: the owner of its hosts database."""

    namespace: str
    name: str = ""
    uid: str = ""
    created: datetime | None = None

    @classmethod
    def of(cls, body: Any) -> Owner:
        meta = body["metadata"]
        stamp = meta.get("creationTimestamp")
        created = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
        return cls(meta["namespace"], meta["name"], meta.get("uid", ""), created)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.name else f"namespace {self.namespace}"


class Refused(Exception):
    """Nothing done, for a reason a condition names."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class NotOwned(Refused):
    """The name exists, or is registered, but not as the caller's."""


@dataclass(frozen=True)
class Legacy:
    """The name the previous operator gave the owner's database, and who may adopt it:
    `adoptable(epoch)` says whether the owner can be the one that name was made for."""

    name: str
    adoptable: Callable[[datetime], Awaitable[bool]]


@dataclass(frozen=True)
class DatabaseTarget:
    """The database and role of one TelegramBot (or hosts); the role owns the database."""

    database: str
    role: str

    @classmethod
    def named(cls, name: str) -> DatabaseTarget:
        return cls(database=name, role=name)

    @classmethod
    def for_bot(cls, namespace: str, name: str) -> DatabaseTarget:
        """The name a bot's database gets now (one adopted from the previous operator keeps
        its own: `adoption.bot_target`)."""
        return cls.named(naming.bot_database(namespace, name))

    @classmethod
    def for_hosts(cls, namespace: str) -> DatabaseTarget:
        """The name a namespace's hosts database gets now (`adoption.hosts_target`)."""
        return cls.named(naming.hosts_database(namespace))

    def url(self, *, password: str, host: str, port: int) -> str:
        """The bot's DATABASE_URL (contract: postgresql+asyncpg://user:pass@host:5432/db)."""
        user = quote(self.role, safe="")
        return (
            f"postgresql+asyncpg://{user}:{quote(password, safe='')}@{host}:{port}/{self.database}"
        )


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _registry_connection(admin_url: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(admin_url, database=REGISTRY_DATABASE)
    except asyncpg.InvalidCatalogNameError:
        return await _create_registry(admin_url)
    # Made by anyone but an admin (a CREATEDB role a CREATEROLE tenant made on PostgreSQL 15),
    # its rows could claim anything: not trusted.
    owner = await conn.fetchval(
        "SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
        " WHERE d.datname = current_database()"
        " AND r.rolname <> current_user AND NOT r.rolsuper"
    )
    if owner is not None:
        await conn.close()
        msg = f"the registry database {REGISTRY_DATABASE} belongs to {owner}: not trusted"
        raise Refused("DatabaseUnavailable", msg)
    return conn


async def _create_registry(admin_url: str) -> asyncpg.Connection:
    """The registry's database, the admin's own; only the admin may connect to it."""
    admin = await asyncpg.connect(admin_url)
    try:
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):
            await admin.execute(f"CREATE DATABASE {quote_ident(REGISTRY_DATABASE)}")
        await admin.execute(f"REVOKE ALL ON DATABASE {quote_ident(REGISTRY_DATABASE)} FROM PUBLIC")
    finally:
        await admin.close()
    return await _registry_connection(admin_url)


def _local_lock() -> asyncio.Lock:
    """Claims of this process wait here, not each on a connection of its own (kopf resumes
    every bot at once on start-up); one per event loop, as an asyncio.Lock is bound to one."""
    return _LOCAL_LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())


_LOCAL_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _registry(admin_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on the registry holding its lock. The connection may also run DDL on
    roles (transactional); CREATE and DROP DATABASE run after it, outside any transaction."""
    async with _local_lock():
        conn = await _registry_connection(admin_url)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_LOCK)
                for statement in REGISTRY_SCHEMA:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO epoch SELECT now() WHERE NOT EXISTS (SELECT FROM epoch)"
                )
                yield conn
        finally:
            await conn.close()


async def _holder(conn: asyncpg.Connection, name: str) -> tuple[str, str] | None:
    row = await conn.fetchrow("SELECT namespace, bot FROM owners WHERE name = $1", name)
    return (row["namespace"], row["bot"]) if row else None


async def _exists(conn: asyncpg.Connection, name: str) -> bool:
    """A database or a role of that name: both are cluster-wide, seen from any database."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)"
            " OR EXISTS (SELECT FROM pg_roles WHERE rolname = $1)",
            name,
        )
    )


async def _register(
    conn: asyncpg.Connection, name: str, kind: str, owner: Owner, *, adopted: bool = False
) -> None:
    await conn.execute(
        "INSERT INTO owners (name, kind, namespace, bot, uid, adopted)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        name,
        kind,
        owner.namespace,
        owner.name,
        owner.uid,
        adopted,
    )


def _taken(name: str, owner: Owner, why: str) -> NotOwned:
    return NotOwned(OWNED_BY_ANOTHER, f"{name} {why}; it is not {owner}'s and stays untouched")


async def claim(
    admin_url: str, kind: str, owner: Owner, name: str, legacy: Legacy | None = None
) -> str:
    """The name `owner` owns for `kind`: the one registered to it; else the previous operator's
    `legacy` name if that database exists, is nobody's, and the owner may adopt it; else `name`,
    registered now if nobody holds it and it does not exist yet. Safe to repeat.

    The same namespace and name is the same owner even with another uid: a TelegramBot created
    again after a `Retain` deletion gets its database back (Kubernetes keeps one object per name).
    """
    async with _registry(admin_url) as conn:
        row = await conn.fetchrow(
            "SELECT name, uid FROM owners WHERE kind = $1 AND namespace = $2 AND bot = $3",
            kind,
            owner.namespace,
            owner.name,
        )
        if row is not None:
            if row["uid"] != owner.uid:
                await conn.execute(
                    "UPDATE owners SET uid = $1 WHERE name = $2", owner.uid, row["name"]
                )
            return str(row["name"])
        if await _holder(conn, name) is not None:
            raise _taken(name, owner, "is registered to another owner")
        if legacy is not None and await _adopt(conn, kind, owner, legacy):
            return legacy.name
        if await _exists(conn, name):
            raise _taken(name, owner, "exists but is registered to no owner")
        await _register(conn, name, kind, owner)
        return name


async def _adopt(conn: asyncpg.Connection, kind: str, owner: Owner, legacy: Legacy) -> bool:
    """Register `legacy` to `owner` if the previous operator made it for them (see Legacy)."""
    made = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", legacy.name
    )
    if not made or await _holder(conn, legacy.name) is not None:
        return False
    epoch = await conn.fetchval("SELECT min(started) FROM epoch")
    if not await legacy.adoptable(epoch):
        return False
    await _register(conn, legacy.name, kind, owner, adopted=True)
    return True


async def _check(conn: asyncpg.Connection, name: str, owner: Owner) -> None:
    holder = await _holder(conn, name)
    if holder != (owner.namespace, owner.name):
        why = "is registered to another owner" if holder else "is registered to no owner"
        raise _taken(name, owner, why)


async def ensure_database(
    admin_url: str, target: DatabaseTarget, password: str, *, owner: Owner
) -> bool:
    """Create the role and database if missing and (re)set the role's password; both must be
    `owner`'s (`claim` first). The role may not create roles (NOCREATEROLE also takes it from a
    hosts role the previous operator made): it runs tenant code.

    Returns True if the database was created by this call. Safe to run again: an existing role
    gets the password from the Secret, so a regenerated Secret converges too.
    """
    async with _registry(admin_url) as conn:
        await _check(conn, target.role, owner)
        await _check(conn, target.database, owner)
        role_exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", target.role)
        verb = "ALTER" if role_exists else "CREATE"
        # DDL takes no bind parameters; identifiers and the literal are quoted instead.
        await conn.execute(
            f"{verb} ROLE {quote_ident(target.role)} WITH LOGIN NOCREATEROLE "
            f"PASSWORD {quote_literal(password)}"
        )
        db_exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", target.database
        )
    if db_exists:
        return False
    admin = await asyncpg.connect(admin_url)
    try:
        # CREATE DATABASE cannot run in a transaction; asyncpg's execute runs it alone.
        await admin.execute(
            f"CREATE DATABASE {quote_ident(target.database)} OWNER {quote_ident(target.role)}"
        )
    finally:
        await admin.close()
    return True


async def drop_database(admin_url: str, target: DatabaseTarget, *, owner: Owner) -> None:
    """Drop `owner`'s database (closing its sessions) and role, and forget them; nothing to do if
    already gone. NotOwned if either is someone else's."""
    async with _registry(admin_url) as conn:
        if await _holder(conn, target.database) is None and not await _exists(
            conn, target.database
        ):
            return
        await _check(conn, target.database, owner)
        await _check(conn, target.role, owner)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(target.database)} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(target.role)}")
    finally:
        await admin.close()
    async with _registry(admin_url) as conn:
        await conn.execute(
            "DELETE FROM owners WHERE name = ANY($1::text[])", [target.database, target.role]
        )


async def database_exists(admin_url: str, target: DatabaseTarget) -> bool:
    conn = await asyncpg.connect(admin_url)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database)
        return bool(found)
    finally:
        await conn.close()


def tenant_schema(bot_name: str) -> str:
    """The bot's schema in a hosts' database: the same name as bot/db/bot_stores.py gives it."""
    return "bot_" + bot_name.replace("-", "_")


def tenant_role(database: str, bot_name: str) -> str:
    """The bot's role there, as bot/db/bot_stores.py names it (the database's hash: roles are
    cluster-wide, and another namespace's hosts may have a bot of the same name). Injective:
    bot names (bot/hosting/bots_dir.py, [a-z0-9-]{1,40}) have no `@` and leave the name under 63
    bytes."""
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    return f"bot_{bot_name}@{digest}"


async def ensure_tenant_role(admin_url: str, hosts: DatabaseTarget, owner: Owner) -> str:
    """The Shared bot's role in the hosts' database, made here by the admin (the hosts role may
    not create roles) and granted to the hosts role, which switches to it per unit of work.
    A role of that name made earlier (by a hosts role of the previous operator) is adopted only
    through the namespace's own hosts database, whose hash the name carries."""
    if not TENANT_NAME.fullmatch(owner.name):
        # Longer, and PostgreSQL would cut the role's name short: two bots could share one.
        msg = "runtime Shared: the name must be 1-40 of a-z, 0-9 and '-' (a bot host's bot names)"
        raise Refused("InvalidSpec", msg)
    role = tenant_role(hosts.database, owner.name)
    async with _registry(admin_url) as conn:
        await _check(conn, hosts.database, Owner(owner.namespace))
        holder = await _holder(conn, role)
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if holder is None:
            await _register(conn, role, TENANT, owner, adopted=bool(exists))
        elif holder != (owner.namespace, owner.name):
            raise _taken(role, owner, "is registered to another owner")
        if not exists:
            await conn.execute(f"CREATE ROLE {quote_ident(role)} NOLOGIN")
        # SET from PostgreSQL 16: a membership may lack it there (MEMBER always carried it).
        granted = await conn.fetchval(
            "SELECT pg_has_role($1, $2, CASE WHEN current_setting('server_version_num')::int"
            " >= 160000 THEN 'SET' ELSE 'MEMBER' END)",
            hosts.role,
            role,
        )
        if not granted:
            await conn.execute(f"GRANT {quote_ident(role)} TO {quote_ident(hosts.role)}")
    return role


async def drop_tenant(admin_url: str, database: str, owner: Owner) -> None:
    """Drop a Shared bot's schema (its rows) and role in its namespace's hosts database; nothing
    to do if already gone. NotOwned if the database or the role is someone else's."""
    role = tenant_role(database, owner.name)
    async with _registry(admin_url) as conn:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return
        await _check(conn, database, Owner(owner.namespace))
        if await _exists(conn, role):
            await _check(conn, role, owner)
    conn = await asyncpg.connect(admin_url, database=database)
    try:
        await conn.execute(
            f"DROP SCHEMA IF EXISTS {quote_ident(tenant_schema(owner.name))} CASCADE"
        )
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            # Its grants in this database go first, else DROP ROLE refuses.
            await conn.execute(f"DROP OWNED BY {quote_ident(role)}")
            await conn.execute(f"DROP ROLE {quote_ident(role)}")
    finally:
        await conn.close()
    async with _registry(admin_url) as conn:
        await conn.execute("DELETE FROM owners WHERE name = $1", role)
