"""Where each bot of the host keeps its rows.

On PostgreSQL a schema and a role per bot, made by `migrate` (idempotently; under the operator the
role is the operator's, made before the bot joins its host): the login role owns
each schema and its tables (it runs the migrations); the bot's role may only use its own schema
and read and write its rows. The login role is granted every bot role, which is what lets a unit
of work switch to one (`bot.db.scope`). On SQLite (local use) a database file per bot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.config import Settings
from bot.db.engine import create_engine
from bot.db.scope import DataScope


def schema_name(bot_name: str) -> str:
    return "bot_" + bot_name.replace("-", "_")


def role_name(database: str, bot_name: str) -> str:
    """Roles belong to the whole cluster, not to a database: two hosts (two databases) may have a
    bot of the same name, so the role names the database too (hashed: names stay short). One
    role per (database, bot): bot names ([a-z0-9-]{1,40}, bot/hosting/bots_dir.py) have no `@`
    and keep the name under PostgreSQL's 63 bytes, so it is never cut short."""
    digest = hashlib.sha256(database.encode()).hexdigest()[:8]
    return f"bot_{bot_name}@{digest}"


def bot_scope(settings: Settings, engine: AsyncEngine, bot_name: str) -> tuple[DataScope, bool]:
    """The scope of one bot of the host, and whether it has an engine of its own (SQLite) for
    its owner to dispose of."""
    if engine.dialect.name == "postgresql":
        return postgres_scope(engine, bot_name), False
    url = sqlite_url(settings.database_url.get_secret_value(), bot_name)
    return DataScope(create_engine(settings, url=url)), True


def bot_namespace(settings: Settings, bot_name: str) -> str:
    """Cache keys of a bot of the host: under the project's, apart from every other bot's."""
    return f"{settings.project_name}:{bot_name}"


def postgres_scope(engine: AsyncEngine, bot_name: str) -> DataScope:
    """The bot's schema and role in the shared database, over the shared pool."""
    database = str(engine.url.database)
    return DataScope(engine, schema=schema_name(bot_name), role=role_name(database, bot_name))


def sqlite_url(url: str, bot_name: str) -> str:
    """`./hello-bot.db` becomes `./hello-bot.<bot>.db`; an in-memory database stays in memory."""
    parsed = make_url(url)
    if not parsed.database or parsed.database == ":memory:":
        return url
    path = Path(parsed.database)
    return parsed.set(
        database=str(path.with_name(f"{path.stem}.{bot_name}{path.suffix}"))
    ).render_as_string(hide_password=False)


async def provision(connection: AsyncConnection, scope: DataScope) -> None:
    """Create the bot's role and schema and grant the role its rows; safe to repeat."""
    assert scope.schema is not None and scope.role is not None
    quote = connection.dialect.identifier_preparer.quote
    schema, role = quote(scope.schema), quote(scope.role)
    statements = [
        # CREATE ROLE has no IF NOT EXISTS; a concurrent migrate is serialised by the caller's
        # advisory lock, so checking first is enough.
        # Under the operator the role exists already, made and granted by the admin (the login
        # role runs tenant code, so it may not create or grant roles); GRANT would then need
        # the admin option. Without the operator (the chart's `bot.mode=host`) both happen here:
        # on PostgreSQL 16+ a CREATEROLE creator holds only the admin option, not SET ROLE.
        f"""DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(scope.role)}) THEN
                CREATE ROLE {role} NOLOGIN;
              END IF;
              IF NOT pg_has_role(CURRENT_USER, {_literal(scope.role)}, {_SET_ROLE}) THEN
                GRANT {role} TO CURRENT_USER;
              END IF;
            END $$""",
        f"CREATE SCHEMA IF NOT EXISTS {schema}",
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}",
    ]
    for statement in statements:
        await connection.execute(text(statement))


# The privilege that lets a role SET ROLE to another: `SET` from PostgreSQL 16 (where a
# membership may lack it), `MEMBER` before (which always carried it).
_SET_ROLE = (
    "CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END"
)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
