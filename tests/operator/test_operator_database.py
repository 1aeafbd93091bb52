"""Databases and roles belong to exactly one TelegramBot (issue 22, findings 2 and 3).

Real PostgreSQL: every name here is the test's own (its unique namespace), and `pg_cleanup`
drops them. The previous operator's names are written out by hand as fixtures (`tgbot_...`),
the way today's main made them, not computed by the code under test.
"""

from __future__ import annotations

import base64
from typing import Any

import asyncpg
import kopf
import pytest
from hello_operator import database, host_membership, naming, reconcile, runtime
from hypothesis import given
from hypothesis import strategies as st
from operator_support import PG_ADMIN_URL, Cluster, eventually
from test_operator_integration import BOTS, bot_manifest, create_token_secret, wait_condition
from test_operator_units import add_token, clients, http

__all__ = ["clients", "http"]  # the fixtures, shared with the unit tests

LABEL = st.from_regex(naming.DNS_LABEL, fullmatch=True)
BEFORE_UPGRADE = "2020-01-01T00:00:00Z"


def owner(namespace: str, name: str = "", uid: str = "") -> database.Owner:
    return database.Owner(namespace, name, uid or f"uid-{namespace}-{name}")


async def fetch(sql: str, *args: Any, db: str = "postgres") -> Any:
    conn = await asyncpg.connect(PG_ADMIN_URL, database=db)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def verifier(role: str) -> str | None:
    return await fetch("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)


async def provision(bot: database.Owner, password: str) -> database.DatabaseTarget:
    name = await database.claim(
        PG_ADMIN_URL, database.BOT, bot, naming.bot_database(bot.namespace, bot.name)
    )
    target = database.DatabaseTarget.named(name)
    await database.ensure_database(PG_ADMIN_URL, target, password, owner=bot)
    return target


# --- names ------------------------------------------------------------------------------------


def test_names_cannot_collide_across_namespaces(namespace: str) -> None:
    assert naming.bot_database(f"{namespace}-a", "x") != naming.bot_database(namespace, "a-x")


def test_bot_names_cannot_collide_with_hosts(namespace: str) -> None:
    assert naming.bot_database(namespace, "b--hosts") != naming.hosts_database(f"{namespace}-b")
    assert naming.bot_database(namespace, "b").startswith(naming.BOT_PREFIX)
    assert naming.hosts_database(namespace).startswith(naming.HOSTS_PREFIX)
    for new in (naming.BOT_PREFIX, naming.HOSTS_PREFIX):
        assert not new.startswith(naming.LEGACY_PREFIX)
        assert not naming.LEGACY_PREFIX.startswith(new)


def test_a_short_name_cannot_forge_a_hashed_one(namespace: str) -> None:
    """The previous scheme hashed only names past 63 bytes, so a 63-byte name could spell out a
    long one's hashed form. Now every name is hashed whole: spelling one out gives another."""
    long = naming.bot_database(namespace, "n" * 60)
    readable = long.removeprefix(naming.BOT_PREFIX).removeprefix(namespace.replace("-", "_") + "_")
    forged = readable.replace("_", "-")
    assert naming.DNS_LABEL.fullmatch(forged)
    assert naming.bot_database(namespace, forged) != long


@given(a=st.tuples(LABEL, LABEL), b=st.tuples(LABEL, LABEL))
def test_every_name_is_its_owners_alone(a: tuple[str, str], b: tuple[str, str]) -> None:
    names = {naming.bot_database(*a), naming.bot_database(*b), naming.hosts_database(a[0])}
    assert all(len(name.encode()) <= naming.MAX_IDENTIFIER for name in names)
    assert len(names) == (2 if a == b else 3)


def test_legacy_claimants_are_every_split() -> None:
    assert naming.legacy_claimants("tgbot_team_a_x") == {("team-a", "x"), ("team", "a-x")}
    assert naming.legacy_claimants("tgbot_a_b__hosts") == {("a", "b--hosts")}
    assert naming.legacy_hosts_database("a-b") == "tgbot_a_b__hosts"


@given(name=st.from_regex(database.TENANT_NAME, fullmatch=True))
def test_tenant_roles_are_never_cut_short(name: str) -> None:
    """One role per (hosts database, bot): PostgreSQL would cut a longer name to 63 bytes."""
    role = database.tenant_role(naming.hosts_database("ns"), name)
    assert len(role.encode()) <= naming.MAX_IDENTIFIER
    assert role.rsplit("@", 1)[0] == f"bot_{name}"


# --- ownership --------------------------------------------------------------------------------


async def test_a_colliding_bot_neither_takes_over_nor_drops(
    namespace: str, pg_cleanup: None
) -> None:
    """Whatever the names: a target that is registered to another owner is refused, its
    password stays, and a Delete of the other drops nothing of it."""
    victim = owner(f"{namespace}-a", "x")
    thief = owner(namespace, "a-x")
    target = await provision(victim, "victim-pw")
    before = await verifier(target.role)

    with pytest.raises(database.NotOwned) as caught:
        await database.ensure_database(PG_ADMIN_URL, target, "thief-pw", owner=thief)
    assert caught.value.reason == database.OWNED_BY_ANOTHER
    assert await verifier(target.role) == before, "the victim's role password was changed"
    with pytest.raises(database.NotOwned):
        await database.claim(PG_ADMIN_URL, database.BOT, thief, target.database)


async def test_deleting_a_colliding_bot_keeps_the_other_database(
    namespace: str, pg_cleanup: None
) -> None:
    victim = owner(f"{namespace}-a", "x")
    target = await provision(victim, "victim-pw")
    with pytest.raises(database.NotOwned):
        await database.drop_database(PG_ADMIN_URL, target, owner=owner(namespace, "a-x"))
    assert await database.database_exists(PG_ADMIN_URL, target)


async def test_a_name_that_exists_but_is_nobodys_is_never_taken(
    namespace: str, pg_cleanup: None
) -> None:
    """A role someone made under a bot's future name (squatted) is neither altered nor used."""
    name = naming.bot_database(namespace, "late")
    await fetch(f"CREATE ROLE \"{name}\" LOGIN PASSWORD 'squatter'")
    before = await verifier(name)
    with pytest.raises(database.NotOwned, match="registered to no owner"):
        await provision(owner(namespace, "late"), "honest-pw")
    assert await verifier(name) == before
    assert not await database.database_exists(PG_ADMIN_URL, database.DatabaseTarget.named(name))


async def test_a_recreated_bot_gets_its_retained_database_back(
    namespace: str, pg_cleanup: None
) -> None:
    first = await provision(owner(namespace, "again", uid="one"), "pw")
    again = owner(namespace, "again", uid="two")
    assert await provision(again, "pw2") == first
    db = database.REGISTRY_DATABASE
    assert await fetch("SELECT uid FROM owners WHERE name = $1", first.database, db=db) == "two"


async def test_reconcile_reports_a_taken_name_as_a_condition(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    await add_token(cluster)
    body = {
        "apiVersion": "hello-bot.dev/v1alpha1",
        "kind": "TelegramBot",
        "metadata": {"name": "taken"},
        "spec": {"image": "img:1", "token": {"secretName": "tok"}},
    }
    bot = kopf.Body(await cluster.create("hello-bot.dev/v1alpha1", "telegrambots", body))
    name = naming.bot_database(cluster.ns, "taken")
    await fetch(f'CREATE DATABASE "{name}"')
    with pytest.raises(reconcile.Blocked) as caught:
        await runtime.reconcile(clients, bot, bot.spec, bot.status, 0)
    assert caught.value.reason == database.OWNED_BY_ANOTHER
    assert name in caught.value.message


# --- upgrade: the previous operator's names ---------------------------------------------------


async def make_bot(cluster: Cluster, name: str, namespace: str = "", **meta: Any) -> kopf.Body:
    body = {
        "apiVersion": "hello-bot.dev/v1alpha1",
        "kind": "TelegramBot",
        "metadata": {"name": name, **meta},
        "spec": {"image": "img:1", "token": {"secretName": "tok"}},
    }
    if namespace:
        other = Cluster(cluster.session, namespace)
        return kopf.Body(await other.create("hello-bot.dev/v1alpha1", "telegrambots", body))
    return kopf.Body(await cluster.create("hello-bot.dev/v1alpha1", "telegrambots", body))


async def legacy_database(name: str, password: str, users: int) -> None:
    """What today's main makes for a bot (its role owns its database), with rows in it."""
    await fetch(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
    await fetch(f'CREATE DATABASE "{name}" OWNER "{name}"')
    conn = await asyncpg.connect(PG_ADMIN_URL, database=name)
    try:
        await conn.execute(f'SET ROLE "{name}"')
        await conn.execute("CREATE TABLE users (telegram_id bigint PRIMARY KEY)")
        await conn.executemany("INSERT INTO users VALUES ($1)", [(i,) for i in range(users)])
    finally:
        await conn.close()


async def reconcile_once(clients: reconcile.Clients, bot: kopf.Body) -> None:
    """As far as the migration Job (which never finishes in the emulator)."""
    with pytest.raises(reconcile.Waiting):
        await runtime.reconcile(clients, bot, bot.spec, bot.status, 0)


async def generated_url(cluster: Cluster, name: str) -> str:
    secret = await cluster.get("v1", "secrets", f"{name}-generated")
    assert secret is not None
    url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_upgrade_adopts_the_database_the_previous_operator_made(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    await add_token(cluster)
    legacy = f"tgbot_{cluster.ns}_keeper"  # today's main: tgbot_<namespace>_<name>
    await legacy_database(legacy, "old-pw", users=3)
    bot = await make_bot(cluster, "keeper", creationTimestamp=BEFORE_UPGRADE)

    await reconcile_once(clients, bot)
    await reconcile_once(clients, bot)  # again: the same database, nothing new

    conn = await asyncpg.connect(await generated_url(cluster, "keeper"))
    try:
        assert await conn.fetchval("SELECT current_database()") == legacy
        assert await conn.fetchval("SELECT count(*) FROM users") == 3
    finally:
        await conn.close()
    new = database.DatabaseTarget.for_bot(cluster.ns, "keeper")
    assert not await database.database_exists(PG_ADMIN_URL, new)
    db = database.REGISTRY_DATABASE
    row = "SELECT namespace || '/' || bot || ' ' || adopted FROM owners WHERE name = $1"
    assert await fetch(row, legacy, db=db) == f"{cluster.ns}/keeper true"


async def test_an_ambiguous_legacy_name_is_adopted_by_neither(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    """`team-a`/`x` and `team`/`a-x` both had `tgbot_team_a_x`: whose it is, no code can tell."""
    await add_token(cluster)
    legacy = f"tgbot_{cluster.ns}_a_x"
    await legacy_database(legacy, "old-pw", users=2)
    before = await verifier(legacy)
    mine = await make_bot(cluster, "a-x", creationTimestamp=BEFORE_UPGRADE)
    await make_bot(cluster, "x", namespace=f"{cluster.ns}-a", creationTimestamp=BEFORE_UPGRADE)

    with pytest.raises(reconcile.Blocked) as caught:
        await runtime.reconcile(clients, mine, mine.spec, mine.status, 0)

    assert caught.value.reason == database.ADOPTION_AMBIGUOUS
    assert await verifier(legacy) == before
    assert await fetch("SELECT count(*) FROM users", db=legacy) == 2
    new = database.DatabaseTarget.for_bot(cluster.ns, "a-x")
    assert not await database.database_exists(PG_ADMIN_URL, new)  # no empty one instead


async def test_a_bot_made_after_the_upgrade_cannot_adopt_a_legacy_name(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    """A colliding TelegramBot created once this operator runs gets a database of its own; the
    legacy one stays for the bot it was made for, which a latecomer cannot block either."""
    await add_token(cluster)
    legacy = f"tgbot_{cluster.ns}_a_x"
    await legacy_database(legacy, "old-pw", users=2)
    latecomer = await make_bot(cluster, "x", namespace=f"{cluster.ns}-a")
    await add_token(Cluster(cluster.session, f"{cluster.ns}-a"))

    await reconcile_once(clients, latecomer)
    conn = await asyncpg.connect(
        await generated_url(Cluster(cluster.session, f"{cluster.ns}-a"), "x")
    )
    try:
        assert await conn.fetchval("SELECT current_database()") == naming.bot_database(
            f"{cluster.ns}-a", "x"
        )
    finally:
        await conn.close()

    original = await make_bot(cluster, "a-x", creationTimestamp=BEFORE_UPGRADE)
    await reconcile_once(clients, original)
    assert await fetch("SELECT current_database()", db=legacy) == legacy
    url = await generated_url(cluster, "a-x")
    assert url.endswith(f"/{legacy}")


async def test_a_namespaces_legacy_hosts_database_is_adopted(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    legacy = f"tgbot_{cluster.ns}__hosts"  # today's main: tgbot_<namespace>__hosts
    await legacy_database(legacy, "old-pw", users=1)
    await fetch(f'ALTER ROLE "{legacy}" CREATEROLE')  # what today's main gives it
    bot = await make_bot(cluster, "member", creationTimestamp=BEFORE_UPGRADE)

    target = await host_membership.ensure_hosts_database(
        clients.kube, PG_ADMIN_URL, "pg", 5432, bot
    )

    assert target.database == legacy
    assert await fetch("SELECT count(*) FROM users", db=legacy) == 1
    assert not await fetch("SELECT rolcreaterole FROM pg_roles WHERE rolname = $1", legacy)
    tenant = database.tenant_role(legacy, "member")
    assert await fetch("SELECT pg_has_role($1, $2, 'MEMBER')", legacy, tenant)


# --- finding 3: no role that runs tenant code administers roles ------------------------------


async def test_the_hosts_role_cannot_administer_other_roles(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    """On PostgreSQL 15 and older a CREATEROLE role may alter any non-superuser role and grant
    itself pg_read_server_files; the hosts role has no CREATEROLE at all now."""
    other = await provision(owner(cluster.ns, "other"), "other-pw")
    before = await verifier(other.role)
    bot = await make_bot(cluster, "member")
    hosts = await host_membership.ensure_hosts_database(clients.kube, PG_ADMIN_URL, "pg", 5432, bot)

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'SET ROLE "{hosts.role}"')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"ALTER ROLE \"{other.role}\" PASSWORD 'stolen'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f'GRANT pg_read_server_files TO "{hosts.role}"')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute('CREATE ROLE "squatted"')
    finally:
        await conn.close()
    assert await verifier(other.role) == before
    # The bot's role there is the operator's, granted to the hosts role, which may switch to it.
    tenant = database.tenant_role(hosts.database, "member")
    assert await fetch("SELECT pg_has_role($1, $2, 'MEMBER')", hosts.role, tenant)
    db = database.REGISTRY_DATABASE
    assert await fetch("SELECT bot FROM owners WHERE name = $1", tenant, db=db) == "member"


async def test_a_shared_bot_name_past_the_hosts_limit_is_refused(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    bot = await make_bot(cluster, "n" * 41)
    with pytest.raises(database.Refused) as caught:
        await host_membership.ensure_hosts_database(clients.kube, PG_ADMIN_URL, "pg", 5432, bot)
    assert caught.value.reason == "InvalidSpec"


async def test_a_bots_legacy_database_is_no_new_namespaces_hosts_database(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    """`b--hosts` in `a` had `tgbot_a_b__hosts`, the name of `a-b`'s hosts database. A namespace
    `a-b` with no TelegramBot from before the upgrade never had that database: a new one."""
    legacy = f"tgbot_{cluster.ns}_b__hosts"  # the bot <ns>/b--hosts's, retained after deletion
    await legacy_database(legacy, "old-pw", users=4)
    bot = await make_bot(cluster, "member", namespace=f"{cluster.ns}-b")

    target = await host_membership.ensure_hosts_database(
        clients.kube, PG_ADMIN_URL, "pg", 5432, bot
    )

    assert target.database == naming.hosts_database(f"{cluster.ns}-b")
    assert await fetch("SELECT count(*) FROM users", db=legacy) == 4
    db = database.REGISTRY_DATABASE
    assert await fetch("SELECT count(*) FROM owners WHERE name = $1", legacy, db=db) == 0


async def test_a_registry_someone_else_made_is_not_trusted(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL 15 a CREATEROLE tenant could make a CREATEDB role and, before the upgrade,
    a database under the registry's name with rows of its choosing."""
    registry, role = f"tgb_{namespace}_registry", f"tgb_{namespace}_forger"
    await fetch(f'CREATE ROLE "{role}" CREATEDB')
    await fetch(f'CREATE DATABASE "{registry}" OWNER "{role}"')
    monkeypatch.setattr(database, "REGISTRY_DATABASE", registry)
    try:
        with pytest.raises(database.Refused, match="not trusted"):
            await database.claim(PG_ADMIN_URL, database.BOT, owner(namespace, "x"), "tgb_x")
    finally:
        await fetch(f'DROP DATABASE "{registry}"')
        await fetch(f'DROP ROLE "{role}"')


async def test_a_hyphenated_namespace_with_older_bots_adopts_its_hosts_database(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    legacy = f"tgbot_{cluster.ns}_b__hosts"  # today's main: the hosts database of <ns>-b
    await legacy_database(legacy, "old-pw", users=4)
    bot = await make_bot(
        cluster, "member", namespace=f"{cluster.ns}-b", creationTimestamp=BEFORE_UPGRADE
    )
    target = await host_membership.ensure_hosts_database(
        clients.kube, PG_ADMIN_URL, "pg", 5432, bot
    )
    assert target.database == legacy


@pytest.mark.usefixtures("running_operator")
async def test_deleting_with_delete_policy_drops_nothing_that_is_not_the_bots(
    cluster: Cluster,
) -> None:
    """The bot's name exists but was never its own (someone else made it): the bot is blocked
    with the reason, and its deletion with `deletionPolicy: Delete` keeps that database."""
    squatted = database.DatabaseTarget.for_bot(cluster.ns, "leaving")
    await fetch(f'CREATE DATABASE "{squatted.database}"')
    await create_token_secret(cluster, "leaving")
    await cluster.create(BOTS, "telegrambots", bot_manifest("leaving", deletionPolicy="Delete"))
    await wait_condition(cluster, "leaving", "Ready", database.OWNED_BY_ANOTHER)

    await cluster.delete(BOTS, "telegrambots", "leaving")

    async def gone() -> bool:
        return await cluster.bot("leaving") is None

    await eventually(gone, what="TelegramBot released by its finalizer")
    assert await database.database_exists(PG_ADMIN_URL, squatted)
    said = [e for e in await cluster.events() if e.get("reason") == database.OWNED_BY_ANOTHER]
    assert any("stays untouched" in e.get("message", "") for e in said)
