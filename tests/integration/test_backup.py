"""The backup CronJob's own command (rendered by Helm) against the machine's PostgreSQL, and the
restore line of docs/operations.md into a fresh database: same rows, same users."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import helm_python as helm
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from bot.db.migrations import upgrade_to_head
from tests.chart.helpers import CHART_DIR, REQUIRED, deep_merge, env_of, one, parse_manifests
from tests.conftest import POSTGRES_ADMIN_DSN
from tests.support.servers import free_port

OPERATIONS = CHART_DIR.parents[1] / "docs" / "operations.md"
USERS = 250
# What the script names a dump: <database>-<UTC time>.dump
DUMP_NAME = re.compile(r"^(?P<database>\w+)-\d{8}T\d{6}Z\.dump$")


def _cron_container() -> dict[str, Any]:
    with helm.Chart.load(CHART_DIR) as chart:
        rendered = chart.render(
            deep_merge(REQUIRED, {"backup": {"enabled": True, "keep": 2}}),
            name="demo",
            namespace="bots",
        )
    cron = one(parse_manifests(rendered), "CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return container


def _server() -> tuple[str, str, str]:
    """Host, port and admin user of the test PostgreSQL (TEST_POSTGRES_DSN)."""
    match = re.fullmatch(r"postgresql://(\w+)@([\w.]+):(\d+)/\w+", POSTGRES_ADMIN_DSN)
    assert match, POSTGRES_ADMIN_DSN
    user, host, port = match.groups()
    return host, port, user


def _major(version_text: str) -> int:
    return int(re.search(r"(\d+)", version_text).group(1))  # type: ignore[union-attr]


async def _check_client_can_dump(dsn: str) -> None:
    """pg_dump refuses a server newer than itself: that is a missing part, named as such."""
    tool = shutil.which("pg_dump")
    assert tool, "pg_dump is missing: apt-get install postgresql-client (.ci/run installs it)"
    client = _major(
        subprocess.run(
            [tool, "--version"], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    connection = await asyncpg.connect(dsn)
    try:
        server = int(await connection.fetchval("show server_version_num")) // 10000
    finally:
        await connection.close()
    if client < server:
        pytest.skip(
            f"pg_dump {client} cannot dump PostgreSQL {server}; install a client >= {server}"
        )


async def _seed(url: str) -> None:
    engine = create_async_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    connection = await asyncpg.connect(_plain(url))
    try:
        await connection.execute(
            """
            insert into users (telegram_id, username, first_name, language_code,
                               created_at, updated_at, last_seen_at)
            select 10000 + g, 'user_' || g, 'Név ' || g, case when g % 3 = 0 then 'uk' end,
                   now() - g * interval '1 hour', now(), now()
            from generate_series(1, $1) as g
            """,
            USERS,
        )
    finally:
        await connection.close()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _fingerprint(url: str) -> dict[str, Any]:
    """Row count of every table in the public schema, and a checksum of the users."""
    connection = await asyncpg.connect(_plain(url))
    try:
        # format('%I') quotes each table name on the server, so no name is pasted into SQL here.
        rows = await connection.fetch(
            """
            select tablename,
                   (xpath('/row/n/text()', query_to_xml(
                       format('select count(*) as n from public.%I', tablename), false, true, ''
                   )))[1]::text::bigint as n
            from pg_tables where schemaname = 'public'
            """
        )
        counts = {row["tablename"]: row["n"] for row in rows}
        users = await connection.fetchval(
            "select md5(string_agg(u::text, '|' order by u.id)) from users u"
        )
    finally:
        await connection.close()
    return {"counts": counts, "users_md5": users}


def _run_backup(
    container: dict[str, Any],
    *,
    database: str,
    backup_dir: Path,
    stamp: str,
    shims: Path,
    port: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The container's command and args, its environment with the in-cluster addresses swapped
    for the test server's, and `date` pinned so successive runs get distinct names."""
    host, server_port, user = _server()
    env = {name: entry.get("value", "") for name, entry in env_of(container).items()}
    env.update(
        PGHOST=host,
        PGPORT=port or server_port,
        PGUSER=user,
        PGDATABASE=database,
        BACKUP_DIR=str(backup_dir),
    )
    # A mounted Secret key in the cluster; the test server trusts local connections.
    password = backup_dir.parent / "database_password"
    password.write_text("any: the server trusts us\\")
    env["PGPASSWORD_FILE"] = str(password)
    env["PATH"] = f"{shims}{os.pathsep}{os.environ['PATH']}"
    env["FAKE_STAMP"] = stamp
    return subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _documented_restore() -> list[str]:
    """The pg_restore line of docs/operations.md's restore procedure, as arguments."""
    section = OPERATIONS.read_text().split("## 10. Back up and restore PostgreSQL")[1]
    section = section.split("\n## ")[0]
    (line,) = [x.strip() for x in section.splitlines() if x.strip().startswith("pg_restore -U")]
    words = shlex.split(line.split("<")[0])
    dump = line.split("<")[1].strip()
    assert DUMP_NAME.match(dump), f"the documented dump name {dump} is not what the CronJob writes"
    return words


@pytest.fixture
def shims(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    date = directory / "date"
    date.write_text('#!/bin/sh\necho "$FAKE_STAMP"\n')
    date.chmod(0o755)
    return directory


async def test_the_cron_jobs_dump_restores_into_a_fresh_database(
    make_pg_database: Callable[[], str], tmp_path: Path, shims: Path
) -> None:
    source, target = make_pg_database(), make_pg_database()
    await _check_client_can_dump(_plain(source))
    await _seed(source)
    container = _cron_container()
    database = source.rsplit("/", 1)[1]
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / f"{database}-20260101T000000Z.dump.partial").write_text("killed mid-dump")
    (backups / "notes.txt").write_text("not ours: never removed")

    for stamp in ("20261125T031700Z", "20261126T031700Z", "20261127T031700Z"):
        result = _run_backup(
            container, database=database, backup_dir=backups, stamp=stamp, shims=shims
        )
        assert result.returncode == 0, result.stderr
    # keep=2: the two newest dumps, the partial gone, other files untouched.
    assert sorted(p.name for p in backups.iterdir()) == [
        f"{database}-20261126T031700Z.dump",
        f"{database}-20261127T031700Z.dump",
        "notes.txt",
    ]
    assert f"backup: removed {backups}/{database}-20261125T031700Z.dump" in result.stdout
    newest = backups / f"{database}-20261127T031700Z.dump"
    assert newest.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert DUMP_NAME.match(newest.name)

    host, port, user = _server()
    restore = _documented_restore()
    assert restore[0] == "pg_restore"
    # The documented line with the test server's coordinates in place of the cluster's.
    args = list(restore[1:])
    args[args.index("-U") + 1] = user
    args[args.index("-d") + 1] = target.rsplit("/", 1)[1]
    with newest.open("rb") as dump:
        restored = subprocess.run(
            ["pg_restore", "-h", host, "-p", port, *args],
            stdin=dump,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert restored.returncode == 0, restored.stderr
    before, after = await _fingerprint(source), await _fingerprint(target)
    assert before["counts"]["users"] == USERS
    assert "alembic_version" in before["counts"]
    assert after == before


async def test_a_failed_dump_keeps_the_old_backups(
    make_pg_database: Callable[[], str], tmp_path: Path, shims: Path
) -> None:
    source = make_pg_database()
    await _check_client_can_dump(_plain(source))
    container = _cron_container()
    database = source.rsplit("/", 1)[1]
    backups = tmp_path / "backups"
    backups.mkdir()
    old = [backups / f"{database}-2026112{day}T031700Z.dump" for day in (4, 5, 6)]
    for path in old:
        path.write_bytes(b"an older good dump")
    result = _run_backup(
        container,
        database=database,
        backup_dir=backups,
        stamp="20261127T031700Z",
        shims=shims,
        port=str(free_port()),  # nothing listens: PostgreSQL is down
    )
    assert result.returncode != 0
    assert "connection" in result.stderr.lower()
    # A run that produced no dump rotates nothing away (keep=2 would have removed one).
    assert sorted(p for p in backups.iterdir() if p.suffix == ".dump") == old


async def test_an_unreadable_password_file_fails_before_pg_dump(
    tmp_path: Path, shims: Path
) -> None:
    container = _cron_container()
    env = {name: entry.get("value", "") for name, entry in env_of(container).items()}
    env |= {"PGPASSWORD_FILE": str(tmp_path / "absent"), "BACKUP_DIR": str(tmp_path)}
    env["PATH"] = f"{shims}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"cannot read PGPASSWORD_FILE {tmp_path}/absent" in result.stderr
    assert list(tmp_path.glob("*.dump*")) == []
