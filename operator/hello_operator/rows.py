"""A bot's rows follow it between its stores: its own database (Dedicated) and its schema in the
hosts' database (Shared), both in the operator's PostgreSQL server.

The operator copies as the admin, table by table: the columns both stores have (by name, so
stores migrated by different images still copy), streamed from the source in batches into a
temporary table of the target and merged from there. A conflict keeps the newer row, so a copy
can run again (after a crash, or as the final sync once the old target let go) and changes
nothing that is already there. Only the bot's own schema is named in any statement, and only in
the databases the registry says are the bot's and its namespace's (`adoption`).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from hello_operator import database

BATCH_ROWS = 1000
EPOCH_MS = "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)"


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    """The target's unique key the merge resolves conflicts on."""
    newer: str
    """A conflict keeps the row with the greater value here."""
    skip: tuple[str, ...] = ()
    """Columns never copied (the target numbers its own rows)."""
    where: str = "TRUE"
    """Which source rows are worth copying."""


TABLES = (
    # `id` is each store's own serial: the same id may be another user there. A user is their
    # telegram_id; last_seen_at moves on every write the bot makes.
    Table("users", key=("telegram_id",), newer="last_seen_at", skip=("id",)),
    # The exactly-once ledger (bot.db.ledger) while Telegram may still redeliver: a done row
    # outlives a processing one (expires_at is later), so a finished update stays finished.
    Table(
        "update_claims",
        key=("bot_id", "update_id"),
        newer="expires_at",
        where=f"expires_at > {EPOCH_MS}",
    ),
)


@dataclass(frozen=True)
class Store:
    database: str
    schema: str


def store(runtime: str, name: str, *, own: str, hosts: str) -> Store:
    """Where `runtime` keeps the bot's rows, given the databases it owns (`adoption`): its own
    database `own` (Dedicated) or its schema of the namespace's hosts database `hosts`."""
    if runtime == "Shared":
        return Store(hosts, database.tenant_schema(name))
    return Store(own, "public")


class CopyError(Exception):
    """The target cannot take the rows (not migrated, no key to merge on)."""


async def copy_rows(admin_url: str, source: Store, target: Store) -> dict[str, int]:
    """Copy every table's rows from `source` into `target`; returns the rows each table gained
    or had replaced by newer ones (0 everywhere when run again). A source that does not exist
    (no database, schema or table: the bot never ran there) has nothing to copy."""
    try:
        src = await asyncpg.connect(admin_url, database=source.database)
    except asyncpg.InvalidCatalogNameError:
        return {table.name: 0 for table in TABLES}
    try:
        dst = await asyncpg.connect(admin_url, database=target.database)
        try:
            # One transaction per side: the target gets all of it or none, from one snapshot.
            async with (
                src.transaction(isolation="repeatable_read", readonly=True),
                dst.transaction(),
            ):
                return {t.name: await _copy(src, dst, source, target, t) for t in TABLES}
        finally:
            await dst.close()
    finally:
        await src.close()


async def _columns(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        schema,
        table,
    )
    return [row["column_name"] for row in rows]


async def _copy(
    src: asyncpg.Connection, dst: asyncpg.Connection, source: Store, target: Store, table: Table
) -> int:
    have = set(await _columns(src, source.schema, table.name))
    if not have:
        return 0
    wanted = await _columns(dst, target.schema, table.name)
    if not wanted:
        msg = f"{target.database}: {target.schema}.{table.name} is missing (not migrated)"
        raise CopyError(msg)
    columns = [c for c in wanted if c in have and c not in table.skip]
    if missing := [c for c in (*table.key, table.newer) if c not in columns]:
        msg = f"{table.name}: no column {', '.join(missing)} in both stores to merge on"
        raise CopyError(msg)
    names = ", ".join(map(database.quote_ident, columns))
    qualified = f"{database.quote_ident(target.schema)}.{database.quote_ident(table.name)}"
    staging = f"incoming_{table.name}"
    # Every name below is quoted or one of TABLES' constants.
    await dst.execute(
        f"CREATE TEMP TABLE {staging} ON COMMIT DROP"  # noqa: S608
        f" AS SELECT {names} FROM {qualified} WITH NO DATA"
    )
    merge = _merge_statement(qualified, staging, columns, table)
    query = (
        f"SELECT {names} FROM {database.quote_ident(source.schema)}."  # noqa: S608
        f"{database.quote_ident(table.name)} WHERE {table.where}"
    )
    changed = 0
    cursor = await src.cursor(query)
    # Batches bound the operator's memory whatever the number of rows.
    while batch := await cursor.fetch(BATCH_ROWS):
        await dst.copy_records_to_table(staging, records=batch, columns=columns)
        changed += int((await dst.execute(merge)).split()[-1])
        await dst.execute(f"TRUNCATE {staging}")
    return changed


def _merge_statement(qualified: str, staging: str, columns: list[str], table: Table) -> str:
    """INSERT ... ON CONFLICT that never replaces a row by an older one (nor by an equal one:
    running it again changes nothing)."""
    names = ", ".join(map(database.quote_ident, columns))
    key = ", ".join(map(database.quote_ident, table.key))
    newer = database.quote_ident(table.newer)
    updates = ", ".join(
        f"{database.quote_ident(c)} = EXCLUDED.{database.quote_ident(c)}"
        for c in columns
        if c not in table.key
    )
    return (
        f"INSERT INTO {qualified} AS target ({names}) SELECT {names} FROM {staging}"  # noqa: S608
        f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
        f" WHERE target.{newer} < EXCLUDED.{newer}"
    )
