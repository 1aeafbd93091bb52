"""Per-project database and role in the shared PostgreSQL (asyncpg, idempotent)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg

MAX_IDENTIFIER = 63


@dataclass(frozen=True)
class DatabaseTarget:
    """The database and role of one TelegramBot; the role owns the database."""

    database: str
    role: str

    @classmethod
    def for_bot(cls, namespace: str, name: str) -> DatabaseTarget:
        ident = identifier(f"tgbot_{namespace}_{name}")
        return cls(database=ident, role=ident)

    def url(self, *, password: str, host: str, port: int) -> str:
        """The bot's DATABASE_URL (contract: postgresql+asyncpg://user:pass@host:5432/db)."""
        user = quote(self.role, safe="")
        return (
            f"postgresql+asyncpg://{user}:{quote(password, safe='')}@{host}:{port}/{self.database}"
        )


def identifier(raw: str) -> str:
    """A lowercase PostgreSQL identifier of at most 63 bytes; long names keep a hash suffix."""
    ident = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if len(ident) <= MAX_IDENTIFIER:
        return ident
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{ident[: MAX_IDENTIFIER - 9]}_{digest}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def ensure_database(
    admin_url: str, target: DatabaseTarget, password: str, *, create_roles: bool = False
) -> bool:
    """Create the role and database if missing and (re)set the role's password.

    `create_roles`: the role may create roles (a bot host's `migrate` makes one per bot).

    Returns True if the database was created by this call. Safe to run again: an existing role
    gets the password from the Secret, so a regenerated Secret converges too.
    """
    conn = await asyncpg.connect(admin_url)
    try:
        # DDL takes no bind parameters; identifiers and the literal are quoted instead.
        role_exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", target.role)
        verb = "ALTER" if role_exists else "CREATE"
        options = "LOGIN CREATEROLE" if create_roles else "LOGIN"
        await conn.execute(
            f"{verb} ROLE {quote_ident(target.role)} WITH {options} "
            f"PASSWORD {quote_literal(password)}"
        )
        db_exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", target.database
        )
        if not db_exists:
            # CREATE DATABASE cannot run in a transaction; asyncpg's execute runs it alone.
            await conn.execute(
                f"CREATE DATABASE {quote_ident(target.database)} OWNER {quote_ident(target.role)}"
            )
        return not db_exists
    finally:
        await conn.close()


async def drop_database(admin_url: str, target: DatabaseTarget) -> None:
    """Drop the database (closing its sessions) and its role; nothing to do if already gone."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(target.database)} WITH (FORCE)")
        await conn.execute(f"DROP ROLE IF EXISTS {quote_ident(target.role)}")
    finally:
        await conn.close()


async def database_exists(admin_url: str, target: DatabaseTarget) -> bool:
    conn = await asyncpg.connect(admin_url)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database)
        return bool(found)
    finally:
        await conn.close()


def tenant_schema(bot_name: str) -> str:
    """The bot's schema in a hosts' database: the same name as bot/db/tenants.py gives it."""
    return "bot_" + bot_name.replace("-", "_")


def tenant_role(database: str, bot_name: str) -> str:
    """The bot's role there, as bot/db/tenants.py names it (the database's hash: roles are
    cluster-wide, and another namespace's hosts may have a bot of the same name)."""
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    return f"bot_{bot_name}@{digest}"


async def drop_tenant(admin_url: str, database: str, bot_name: str) -> None:
    """Drop a Shared bot's schema (its rows) and role; nothing to do if already gone."""
    role = tenant_role(database, bot_name)
    admin = await asyncpg.connect(admin_url)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return
    finally:
        await admin.close()
    conn = await asyncpg.connect(admin_url, database=database)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(tenant_schema(bot_name))} CASCADE")
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            # Its grants in this database go first, else DROP ROLE refuses.
            await conn.execute(f"DROP OWNED BY {quote_ident(role)}")
            await conn.execute(f"DROP ROLE {quote_ident(role)}")
    finally:
        await conn.close()
