"""A bot's rows follow it between runtimes (`hello_operator.rows`, called from `row_moves`).

Real PostgreSQL: each test's stores are the databases the operator would make, migrated by the
bot's own migrations as its `migrate` runs them, and read back the way the bot reads them (its
UserService, as its own role). Moves go through the real kopf loop against the emulator.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hello_operator import bot_manifests, database, host_manifests, rows
from operator_support import (
    PG_ADMIN_URL,
    Cluster,
    DeploymentController,
    FakeBotApi,
    JobController,
    condition,
    eventually,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from test_operator_integration import (
    BOTS,
    IMAGE_1,
    bot_manifest,
    create_token_secret,
    wait_condition,
)
from test_operator_runtime import BOT_ID, HOST_1, hosting_operator, served_by

__all__ = ["hosting_operator"]  # the fixture, shared with the runtime tests

from bot.cache import Cache
from bot.db.bot_stores import postgres_scope
from bot.db.migrations import upgrade_to_head
from bot.db.scope import DataScope
from bot.services.users import UserProfile, UserService
from bot.tenant import Tenant

PASSWORD = "rows-test-password"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
ANN = UserProfile(telegram_id=1001, first_name="Ann")
BOB = UserProfile(telegram_id=1002, first_name="Bob")


class Stores:
    """One bot's two stores, migrated; engines log in as production's roles do."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        self.engines: list[AsyncEngine] = []

    def engine(self, target: database.DatabaseTarget, password: str) -> AsyncEngine:
        url = target.url(password=password, host="127.0.0.1", port=5432)
        engine = create_async_engine(url, poolclass=NullPool)
        self.engines.append(engine)
        return engine

    def dedicated(self, password: str = PASSWORD) -> DataScope:
        """The bot's own database, as its own role (the role owns the tables)."""
        return DataScope(
            self.engine(database.DatabaseTarget.for_bot(self.namespace, self.name), password)
        )

    def shared(self, password: str = PASSWORD, name: str = "") -> DataScope:
        """Its schema in the hosts' database: the host's login role, SET LOCAL ROLE per unit."""
        engine = self.engine(database.DatabaseTarget.for_hosts(self.namespace), password)
        return postgres_scope(engine, name or self.name)

    async def provision(self, hosts_too: bool = True) -> None:
        """What the operator does: the bot's database, the hosts' one and the bot's role there."""
        bot = database.Owner(self.namespace, self.name, f"uid-{self.name}")
        await database.claim(PG_ADMIN_URL, database.BOT, bot, self.own.database)
        await database.ensure_database(PG_ADMIN_URL, self.own, PASSWORD, owner=bot)
        if not hosts_too:
            return
        hosts = database.Owner(self.namespace)
        await database.claim(PG_ADMIN_URL, database.HOSTS, hosts, self.hosts.database)
        await database.ensure_database(PG_ADMIN_URL, self.hosts, PASSWORD, owner=hosts)
        for name in (self.name, "other"):
            tenant = database.Owner(self.namespace, name, f"uid-{name}")
            await database.ensure_tenant_role(PG_ADMIN_URL, self.hosts, tenant)

    @property
    def own(self) -> database.DatabaseTarget:
        return database.DatabaseTarget.for_bot(self.namespace, self.name)

    @property
    def hosts(self) -> database.DatabaseTarget:
        return database.DatabaseTarget.for_hosts(self.namespace)

    async def create(self) -> tuple[DataScope, DataScope]:
        """Both databases made and migrated (what the operator and the Jobs do in a cluster)."""
        await self.provision()
        dedicated, shared = self.dedicated(), self.shared()
        await upgrade_to_head(dedicated.engine)
        await upgrade_to_head(shared.engine, shared)
        return dedicated, shared

    def store(self, runtime: str, name: str = "") -> rows.Store:
        name = name or self.name
        own = database.DatabaseTarget.for_bot(self.namespace, name).database
        return rows.store(runtime, name, own=own, hosts=self.hosts.database)

    async def close(self) -> None:
        for engine in self.engines:
            await engine.dispose()


@pytest.fixture
async def stores(namespace: str, pg_cleanup: None) -> AsyncIterator[Stores]:
    made = Stores(namespace, "mover")
    yield made
    await made.close()


async def welcomed_back(scope: DataScope, profile: UserProfile, name: str = "mover") -> bool:
    """What /start decides: the bot's UserService, in the bot's scope, past any cache."""
    tenant = Tenant(name=name, bot_id=int(BOT_ID), namespace=f"test:{name}", data=scope)
    service = UserService(dialect="postgresql", cache=Cache())
    return not (await service.register(profile, tenant=tenant, cached=None)).is_new


async def admin(store: rows.Store) -> asyncpg.Connection:
    """The admin in the store, its schema first: unqualified names are the bot's tables."""
    settings = {"search_path": store.schema}
    return await asyncpg.connect(PG_ADMIN_URL, database=store.database, server_settings=settings)


async def add_user(store: rows.Store, telegram_id: int, name: str, seen: datetime) -> None:
    conn = await admin(store)
    try:
        await conn.execute(
            "INSERT INTO users (telegram_id, first_name, created_at, updated_at, last_seen_at)"
            " VALUES ($1, $2, $3, $3, $3)",
            telegram_id,
            name,
            seen,
        )
    finally:
        await conn.close()


async def add_claim(store: rows.Store, update_id: int, state: str, expires_in_s: int) -> None:
    conn = await admin(store)
    try:
        await conn.execute(
            "INSERT INTO update_claims (bot_id, update_id, state, expires_at)"  # noqa: S608
            f" VALUES ($1, $2, $3, {rows.EPOCH_MS} + $4 * 1000)",
            int(BOT_ID),
            update_id,
            state,
            expires_in_s,
        )
    finally:
        await conn.close()


async def table(store: rows.Store, name: str, *columns: str) -> list[tuple[Any, ...]]:
    conn = await admin(store)
    try:
        found = await conn.fetch(
            f"SELECT {', '.join(columns)} FROM {name} ORDER BY 1, 2"  # noqa: S608 - test's own
        )
    finally:
        await conn.close()
    return [tuple(row) for row in found]


async def test_a_conflict_keeps_the_newer_row_and_the_target_numbers_its_own(
    stores: Stores,
) -> None:
    await stores.create()
    old, new = stores.store("Dedicated"), stores.store("Shared")
    await add_user(old, 1, "ann-older", T0)
    await add_user(old, 2, "bob-newer", T0 + timedelta(hours=2))
    await add_user(old, 3, "cy", T0)
    await add_user(new, 1, "ann-newer", T0 + timedelta(hours=1))  # the new target saw her since
    await add_user(new, 2, "bob-older", T0)
    await add_user(new, 4, "dee", T0)  # only here; its id is also one of the source's
    await add_claim(old, 10, "done", 3600)  # answered by the old target
    await add_claim(new, 10, "processing", 30)  # Telegram's retry, claimed by the new one
    await add_claim(old, 11, "processing", 30)
    await add_claim(new, 11, "done", 3600)
    await add_claim(old, 12, "done", -1)  # past the redelivery window: not copied

    copied = await rows.copy_rows(PG_ADMIN_URL, old, new)

    assert copied == {"users": 2, "update_claims": 1}  # bob replaced, cy added; claim 10
    assert await table(new, "users", "telegram_id", "first_name") == [
        (1, "ann-newer"),
        (2, "bob-newer"),
        (3, "cy"),
        (4, "dee"),
    ]
    ids = [row[0] for row in await table(new, "users", "id", "telegram_id")]
    assert len(set(ids)) == 4
    assert await table(new, "update_claims", "update_id", "state") == [
        (10, "done"),
        (11, "done"),
    ]


async def test_copying_again_changes_nothing(stores: Stores) -> None:
    await stores.create()
    old, new = stores.store("Shared"), stores.store("Dedicated")
    await add_user(old, 1, "ann", T0)
    await add_claim(old, 10, "done", 3600)
    assert await rows.copy_rows(PG_ADMIN_URL, old, new) == {"users": 1, "update_claims": 1}
    # xmin: the transaction that last wrote each row; an update of any kind would change it.
    before = await table(new, "users", "telegram_id", "xmin::text", "*")
    claims = await table(new, "update_claims", "update_id", "xmin::text", "*")

    assert await rows.copy_rows(PG_ADMIN_URL, old, new) == {"users": 0, "update_claims": 0}
    assert await table(new, "users", "telegram_id", "xmin::text", "*") == before
    assert await table(new, "update_claims", "update_id", "xmin::text", "*") == claims


async def test_other_tenants_schemas_are_untouched(stores: Stores) -> None:
    await stores.create()
    other = stores.shared(name="other")
    await upgrade_to_head(other.engine, other)
    other_store = stores.store("Shared", "other")
    await add_user(other_store, 1, "other's ann", T0 + timedelta(days=1))
    await add_user(stores.store("Dedicated"), 1, "ann", T0)
    await add_user(stores.store("Dedicated"), 2, "bob", T0)
    before = await table(other_store, "users", "telegram_id", "xmin::text", "*")

    await rows.copy_rows(PG_ADMIN_URL, stores.store("Dedicated"), stores.store("Shared"))
    # Back again, with the other tenant's newer row of the same user next door.
    await rows.copy_rows(PG_ADMIN_URL, stores.store("Shared"), stores.store("Dedicated"))

    assert await table(other_store, "users", "telegram_id", "xmin::text", "*") == before
    assert await table(stores.store("Dedicated"), "users", "telegram_id", "first_name") == [
        (1, "ann"),
        (2, "bob"),
    ]


async def test_the_columns_both_stores_have_are_copied(stores: Stores) -> None:
    """Stores migrated by different images: a column only the old one has is left behind, one
    only the new one has takes its default."""
    await stores.create()
    old, new = stores.store("Dedicated"), stores.store("Shared")
    conn = await admin(old)
    try:
        await conn.execute("ALTER TABLE users ADD COLUMN retired text DEFAULT 'old'")
    finally:
        await conn.close()
    conn = await admin(new)
    try:
        await conn.execute("ALTER TABLE users ADD COLUMN karma int DEFAULT 7")
    finally:
        await conn.close()
    await add_user(old, 1, "ann", T0)

    assert (await rows.copy_rows(PG_ADMIN_URL, old, new))["users"] == 1
    assert await table(new, "users", "telegram_id", "first_name", "karma") == [(1, "ann", 7)]


async def test_the_copied_rows_are_the_bots_own_in_either_store(stores: Stores) -> None:
    """Read back by the bot itself: as its own role in its database, with SET LOCAL ROLE in
    the hosts' one (`welcome back` is what /start then says)."""
    dedicated, shared = await stores.create()
    assert not await welcomed_back(dedicated, ANN)
    await rows.copy_rows(PG_ADMIN_URL, stores.store("Dedicated"), stores.store("Shared"))
    assert await welcomed_back(shared, ANN)

    assert not await welcomed_back(shared, BOB)
    await rows.copy_rows(PG_ADMIN_URL, stores.store("Shared"), stores.store("Dedicated"))
    assert await welcomed_back(dedicated, BOB)


async def test_a_target_not_migrated_is_an_error_a_missing_source_copies_nothing(
    stores: Stores,
) -> None:
    await stores.provision()
    await upgrade_to_head(stores.dedicated().engine)
    await add_user(stores.store("Dedicated"), 1, "ann", T0)
    with pytest.raises(rows.CopyError, match="not migrated"):
        await rows.copy_rows(PG_ADMIN_URL, stores.store("Dedicated"), stores.store("Shared"))
    # A bot with no database of its own (External before, or never Dedicated): nothing to copy.
    nowhere = stores.store("Dedicated", "never-dedicated")
    copied = await rows.copy_rows(PG_ADMIN_URL, nowhere, stores.store("Dedicated"))
    assert copied == {"users": 0, "update_claims": 0}


# --- moves through the operator -----------------------------------------------------------


async def secret_value(cluster: Cluster, secret: str, key: str) -> str:
    found = await cluster.get("v1", "secrets", secret) or {}
    return base64.b64decode(found["data"][key]).decode()


async def bot_scopes(cluster: Cluster, stores: Stores, *, shared: bool) -> DataScope:
    """The operator's store, migrated (the emulator runs no Job), with the operator's password."""
    if shared:
        password = await secret_value(cluster, host_manifests.DATABASE_SECRET, "DATABASE_PASSWORD")
        scope = stores.shared(password)
        await upgrade_to_head(scope.engine, scope)
        return scope
    generated = bot_manifests.generated_secret_name(stores.name)
    scope = stores.dedicated(await secret_value(cluster, generated, "DATABASE_PASSWORD"))
    await upgrade_to_head(scope.engine)
    return scope


async def rows_status(cluster: Cluster, name: str, stage: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        record = ((await cluster.bot(name) or {}).get("status") or {}).get("rows") or {}
        return record if record.get("stage") == stage else None

    return await eventually(probe, what=f"status.rows at {stage}")


async def start_dedicated(cluster: Cluster, stores: Stores) -> DataScope:
    name = stores.name
    await create_token_secret(cluster, name)
    manifest = bot_manifest(name, webhook={"host": f"{name}.example.com"})
    await cluster.create(BOTS, "telegrambots", manifest)
    await JobController(cluster).appeared(bot_manifests.job_name(name, IMAGE_1))
    dedicated = await bot_scopes(cluster, stores, shared=False)
    await JobController(cluster).succeed(bot_manifests.job_name(name, IMAGE_1))
    await DeploymentController(cluster).report(name)
    await served_by(cluster, name, None)
    return dedicated


@pytest.mark.usefixtures("hosting_operator")
async def test_users_follow_a_bot_to_a_host_and_back(cluster: Cluster, stores: Stores) -> None:
    dedicated = await start_dedicated(cluster, stores)
    assert not await welcomed_back(dedicated, ANN)

    await cluster.patch(BOTS, "telegrambots", "mover", {"spec": {"runtime": "Shared"}})
    await JobController(cluster).appeared(host_manifests.job_name("mover", IMAGE_1))
    shared = await bot_scopes(cluster, stores, shared=True)
    await JobController(cluster).succeed(host_manifests.job_name("mover", IMAGE_1))
    await DeploymentController(cluster).report(HOST_1)
    await served_by(cluster, "mover", HOST_1)
    record = await rows_status(cluster, "mover", "Final")
    assert (record["from"], record["to"]) == ("Dedicated", "Shared")
    assert await welcomed_back(shared, ANN)

    assert not await welcomed_back(shared, BOB)  # met on the host
    await cluster.patch(BOTS, "telegrambots", "mover", {"spec": {"runtime": "Dedicated"}})
    await wait_condition(cluster, "mover", "Ready", "DeploymentNotReady", generation=3)
    # Copied before the Deployment that takes over (its `serve` sets the webhook) rolled out.
    record = await rows_status(cluster, "mover", "Initial")
    # Bob, and Ann, whom the host saw since she came over (a newer row than her old one).
    assert (record["from"], record["to"], record["copied"]) == (
        "Shared",
        "Dedicated",
        {"users": 2, "update_claims": 0},
    )
    await DeploymentController(cluster).report("mover")
    await served_by(cluster, "mover", None)
    record = await rows_status(cluster, "mover", "Final")
    assert (record["from"], record["to"]) == ("Shared", "Dedicated")
    assert await welcomed_back(dedicated, BOB)
    assert await welcomed_back(dedicated, ANN)


@pytest.mark.usefixtures("hosting_operator")
async def test_the_final_sync_copies_what_the_old_target_wrote_after_the_first_copy(
    cluster: Cluster, stores: Stores, bot_api: FakeBotApi
) -> None:
    dedicated = await start_dedicated(cluster, stores)
    assert not await welcomed_back(dedicated, ANN)
    bot_api.failing.add("setWebhook")  # holds the move between its two copies

    await cluster.patch(BOTS, "telegrambots", "mover", {"spec": {"runtime": "Shared"}})
    await JobController(cluster).appeared(host_manifests.job_name("mover", IMAGE_1))
    shared = await bot_scopes(cluster, stores, shared=True)
    await JobController(cluster).succeed(host_manifests.job_name("mover", IMAGE_1))
    await DeploymentController(cluster).report(HOST_1)
    await wait_condition(cluster, "mover", "Ready", "SetWebhookFailed", generation=2)
    record = await rows_status(cluster, "mover", "Initial")
    assert record["copied"] == {"users": 1, "update_claims": 0}
    # Telegram still delivers to the bot's own Deployment: it meets Bob there.
    assert not await welcomed_back(dedicated, BOB)

    bot_api.failing.clear()
    await served_by(cluster, "mover", HOST_1)
    record = await rows_status(cluster, "mover", "Final")
    assert record["copied"] == {"users": 1, "update_claims": 0}
    assert await welcomed_back(shared, BOB)
    assert await welcomed_back(shared, ANN)


@pytest.mark.usefixtures("hosting_operator")
async def test_a_failed_copy_is_reported_and_retried(cluster: Cluster, stores: Stores) -> None:
    """Neither lost nor silent: the move waits with the old target serving, and says why."""
    dedicated = await start_dedicated(cluster, stores)
    assert not await welcomed_back(dedicated, ANN)

    # The tenant Job says it succeeded, but the schema is not there: nowhere to copy to. Made
    # beforehand, so few retries come before the copy and the retry after it is soon (backoff).
    job = host_manifests.job_name("mover", IMAGE_1)
    status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    await cluster.create("batch/v1", "jobs", {"metadata": {"name": job}, "status": status})
    await cluster.patch(BOTS, "telegrambots", "mover", {"spec": {"runtime": "Shared"}})
    await DeploymentController(cluster).report(HOST_1)
    bot = await wait_condition(cluster, "mover", "Ready", "RowCopyFailed", generation=2)
    assert "not migrated" in condition(bot, "Ready")["message"]
    assert bot["status"].get("host") is None
    assert await cluster.get("apps/v1", "deployments", "mover") is not None
    reasons = {event.get("reason") for event in await cluster.events()}
    assert "RowCopyFailed" in reasons

    shared = await bot_scopes(cluster, stores, shared=True)
    await served_by(cluster, "mover", HOST_1)
    assert await welcomed_back(shared, ANN)


@pytest.mark.usefixtures("hosting_operator")
async def test_a_move_onto_an_external_database_says_it_copied_nothing(
    cluster: Cluster, stores: Stores
) -> None:
    await create_token_secret(cluster, "mover")
    await cluster.create(
        BOTS,
        "telegrambots",
        bot_manifest("mover", runtime="Shared", webhook={"host": "m.example.com"}),
    )
    await JobController(cluster).succeed(host_manifests.job_name("mover", IMAGE_1))
    await DeploymentController(cluster).report(HOST_1)
    await served_by(cluster, "mover", HOST_1)
    url = base64.b64encode(b"postgresql+asyncpg://them@db.example/bot").decode()
    secret = {"metadata": {"name": "their-db"}, "data": {"DATABASE_URL": url}}
    await cluster.create("v1", "secrets", secret)

    spec = {
        "runtime": "Dedicated",
        "database": {"mode": "External", "external": {"secretName": "their-db"}},
    }
    await cluster.patch(BOTS, "telegrambots", "mover", {"spec": spec})
    await JobController(cluster).succeed(bot_manifests.job_name("mover", IMAGE_1))
    await DeploymentController(cluster).report("mover")
    await served_by(cluster, "mover", None)
    record = await rows_status(cluster, "mover", "NotCopied")
    assert (record["from"], record["to"]) == ("Shared", "Dedicated")
    assert "External" in record["message"]
    assert "copied" not in record
    assert [e["reason"] for e in await cluster.events()].count("RowsNotCopied") == 1
