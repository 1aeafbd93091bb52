"""Repro on unchanged code (finding 2 and 3)."""

from __future__ import annotations

import asyncpg
from hello_operator import database, hosting
from operator_support import PG_ADMIN_URL


def test_names_cannot_collide_across_namespaces(namespace: str) -> None:
    a = database.DatabaseTarget.for_bot(f"{namespace}-a", "x").database
    b = database.DatabaseTarget.for_bot(namespace, "a-x").database
    assert a != b


def test_bot_names_cannot_collide_with_hosts(namespace: str) -> None:
    assert database.DatabaseTarget.for_bot(namespace, "b--hosts").database != (
        hosting.hosts_database(f"{namespace}-b").database
    )


def test_a_short_name_cannot_forge_a_hashed_one(namespace: str) -> None:
    long = database.DatabaseTarget.for_bot(namespace, "n" * 60).database
    ns_part = namespace.replace("-", "_")
    forged_name = long[len("tgbot_") + len(ns_part) + 1 :].replace("_", "-")
    assert database.DatabaseTarget.for_bot(namespace, forged_name).database != long


async def verifier(role: str) -> str | None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        return await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", role)
    finally:
        await conn.close()


async def test_a_colliding_bot_neither_takes_over_nor_drops(namespace: str, pg_cleanup: None) -> None:
    victim = database.DatabaseTarget.for_bot(f"{namespace}-a", "x")
    thief = database.DatabaseTarget.for_bot(namespace, "a-x")
    await database.ensure_database(PG_ADMIN_URL, victim, "victim-pw")
    before = await verifier(victim.role)
    try:
        await database.ensure_database(PG_ADMIN_URL, thief, "thief-pw")
    except Exception:
        pass
    assert await verifier(victim.role) == before, "the victim's role password was changed"


async def test_deleting_a_colliding_bot_keeps_the_other_database(namespace: str, pg_cleanup: None) -> None:
    victim = database.DatabaseTarget.for_bot(f"{namespace}-a", "x")
    thief = database.DatabaseTarget.for_bot(namespace, "a-x")
    await database.ensure_database(PG_ADMIN_URL, victim, "victim-pw")
    try:
        await database.drop_database(PG_ADMIN_URL, thief)
    except Exception:
        pass
    assert await database.database_exists(PG_ADMIN_URL, victim)


async def test_hosts_role_cannot_administer_other_roles(namespace: str, pg_cleanup: None) -> None:
    other = database.DatabaseTarget.for_bot(namespace, "other")
    await database.ensure_database(PG_ADMIN_URL, other, "other-pw")
    hosts = hosting.hosts_database(namespace)
    await database.ensure_database(PG_ADMIN_URL, hosts, "hosts-pw", create_roles=True)
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'SET ROLE "{hosts.role}"')
        await conn.execute(f'ALTER ROLE "{other.role}" PASSWORD \'stolen\'')
        raise AssertionError("the hosts role altered another role")
    except asyncpg.InsufficientPrivilegeError:
        pass
    finally:
        await conn.close()
