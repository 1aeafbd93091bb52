"""The migration Job's postgresql-roles step (charts/hello-bot/files/postgresql-roles.sh), run as
the chart renders it against real PostgreSQL servers made like the official image makes them:
initdb's superuser named by POSTGRES_USER, passwords over TCP.

An older release initialised its server with the bot's own role as that superuser, so inside a
bot's unit of work `RESET ROLE` gave it the whole server. After the step the bot's login is no
superuser and owns its database; what remains reachable is the bot's own database only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import helm_python as helm
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.db.bot_stores import postgres_scope
from bot.db.migrations import upgrade_to_head
from tests.chart.helpers import CHART_DIR, REQUIRED, deep_merge, env_of, one, parse_manifests
from tests.support.servers import _pg_bin, free_port

APP, ADMIN, DATABASE = "hellobot", "postgres", "hellobot"
APP_PASSWORD, ADMIN_PASSWORD = "app-Pass.word_1", "admin-Pass.word_2"
MARKER = "another-bots-row-7f3a"
HOST_VALUES = {"bot": {"mode": "host", "bots": {"existingSecret": "bots"}}, "secret": {}}


class OfficialImageLikeServer:
    """initdb with POSTGRES_USER as its superuser (oid 10) and password auth over TCP."""

    def __init__(self, superuser: str, password: str) -> None:
        self.superuser, self.port = superuser, free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hb-pg-roles-"))
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pwfile"
        pwfile.write_text(password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.dir / "data"), "-U", superuser, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"),
            "-w", "start",
        )  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as_postgres, _pg_bin(tool), *args], check=True, stdout=subprocess.DEVNULL
        )

    def dsn(self, user: str, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        subprocess.run(
            [*self._as_postgres, _pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m",
             "immediate", "-w", "stop"],
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def make_server() -> Iterator[Any]:
    servers: list[OfficialImageLikeServer] = []

    def _make(superuser: str, password: str) -> OfficialImageLikeServer:
        servers.append(OfficialImageLikeServer(superuser, password))
        return servers[-1]

    yield _make
    for server in servers:
        server.destroy()


def roles_container(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(CHART_DIR) as chart:
        objects = parse_manifests(
            chart.render(deep_merge(REQUIRED, values), name="demo", namespace="bots")
        )
    spec = one(objects, "Job")["spec"]["template"]["spec"]
    (container,) = [c for c in spec["initContainers"] if c["name"] == "postgresql-roles"]
    return container


def run_roles_step(
    server: OfficialImageLikeServer, tmp: Path, values: dict[str, Any], admin_password: str
) -> subprocess.CompletedProcess[str]:
    """The init container's command and environment, its in-cluster address and mounted
    files swapped for the test server's and a directory of files."""
    container = roles_container(values)
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "database_password").write_text(APP_PASSWORD)
    (secrets / "postgres_password").write_text(admin_password)
    env = {name: entry["value"] for name, entry in env_of(container).items()}
    env |= {"PGHOST": "127.0.0.1", "PGPORT": str(server.port), "SECRETS_DIR": str(secrets)}
    env |= {"PATH": os.environ["PATH"], "TMPDIR": str(tmp)}
    return subprocess.run(
        [*container["command"], *container["args"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


async def execute(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def another_bots_data_file(server: OfficialImageLikeServer, superuser_dsn: str) -> str:
    """A bot the operator provisioned in the same server (`database.mode: Shared`): a database
    and login of its own, one row. Returns where that row's table lives on disk."""
    await execute(
        superuser_dsn,
        "CREATE ROLE tgbot_other LOGIN PASSWORD 'other'",
        "CREATE DATABASE tgbot_other OWNER tgbot_other",
    )
    other = server.dsn("tgbot_other", "other", "tgbot_other")
    await execute(other, "CREATE TABLE users (name text)")
    connection = await asyncpg.connect(other)
    try:
        await connection.execute("INSERT INTO users VALUES ($1)", MARKER)
    finally:
        await connection.close()
    await execute(superuser_dsn, "CHECKPOINT")  # the row reaches the table's file
    (row,) = await fetch(other, "SELECT pg_relation_filepath('users') AS path")
    return str(row["path"])


READ_FILE = text("SELECT position(convert_to(:marker, 'UTF8') IN pg_read_binary_file(:path)) > 0")


async def reset_role_reads_the_file(engine: AsyncEngine, bot: str, path: str) -> bool:
    """Inside `bot`'s unit of work: leave the bot's role, then read the other bot's row."""
    async with postgres_scope(engine, bot).session() as session:
        await session.execute(text("RESET ROLE"))
        return bool(await session.scalar(READ_FILE, {"marker": MARKER, "path": path}))


@pytest.fixture
async def engines() -> AsyncIterator[list[AsyncEngine]]:
    made: list[AsyncEngine] = []
    yield made
    for engine in made:
        await engine.dispose()


def app_engine(server: OfficialImageLikeServer, engines: list[AsyncEngine]) -> AsyncEngine:
    dsn = server.dsn(APP, APP_PASSWORD).replace("postgresql://", "postgresql+asyncpg://")
    engines.append(create_async_engine(dsn))
    return engines[-1]


async def test_an_older_release_moves_to_a_bot_role_that_is_no_superuser(
    make_server: Any, tmp_path: Path, engines: list[AsyncEngine]
) -> None:
    # An older release: POSTGRES_USER was the bot's role, so initdb made it the superuser.
    server = make_server(APP, APP_PASSWORD)
    old_superuser = server.dsn(APP, APP_PASSWORD, "postgres")
    await execute(old_superuser, f"CREATE DATABASE {DATABASE}")
    path = await another_bots_data_file(server, old_superuser)
    engine = app_engine(server, engines)
    for bot in ("shop", "news"):
        await upgrade_to_head(engine, postgres_scope(engine, bot))
    # The finding, reproduced: RESET ROLE inside shop's unit of work reads another bot's row.
    assert await reset_role_reads_the_file(engine, "shop", path)
    await engine.dispose()

    result = run_roles_step(server, tmp_path, HOST_VALUES, ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert f"{ADMIN} cannot log in; making it as {APP}" in result.stdout

    engine = app_engine(server, engines)
    # The host keeps working as the new role: existing bots, and a new one (CREATEROLE).
    for bot in ("shop", "news", "fresh"):
        await upgrade_to_head(engine, postgres_scope(engine, bot))
    with pytest.raises(DBAPIError, match="permission denied for function pg_read_binary_file"):
        await reset_role_reads_the_file(engine, "shop", path)
    # What the per-bot role does not isolate: code in the process that leaves the bot's role is
    # the host's login, which owns every bot schema of this host (bot/db/scope.py).
    async with postgres_scope(engine, "shop").session() as session:
        await session.execute(text("RESET ROLE"))
        assert await session.scalar(text("SELECT count(*) FROM bot_news.users")) == 0
        login = text("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert tuple((await session.execute(login)).one()) == (APP, False)
    await assert_roles(server, createrole=True)
    (initdb,) = await fetch(
        server.dsn(ADMIN, ADMIN_PASSWORD), "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles "
        "WHERE oid = 10"
    )  # fmt: skip
    assert tuple(initdb) == (f"{APP}_initdb", True, False)

    again = run_roles_step(server, tmp_path, HOST_VALUES, ADMIN_PASSWORD)
    assert again.returncode == 0, again.stderr
    assert "cannot log in" not in again.stdout
    await assert_roles(server, createrole=True)


async def assert_roles(server: OfficialImageLikeServer, *, createrole: bool) -> None:
    admin = server.dsn(ADMIN, ADMIN_PASSWORD)
    (app,) = await fetch(
        admin,
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication, "
        "rolcanlogin FROM pg_roles WHERE rolname = $1",
        APP,
    )
    assert tuple(app) == (False, createrole, False, False, False, True)
    (owner,) = await fetch(
        admin,
        "SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1",
        DATABASE,
    )
    assert owner["owner"] == APP
    # Every table, sequence, type and schema of the bot's database is the bot role's.
    foreign = await fetch(
        admin,
        """
        SELECT 'relation ' || c.oid::regclass AS object, pg_get_userbyid(c.relowner) AS owner
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        UNION ALL
        SELECT 'schema ' || nspname, pg_get_userbyid(nspowner) FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')
        UNION ALL
        SELECT 'type ' || t.oid::regtype, pg_get_userbyid(t.typowner)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
        """,
    )
    assert [row["object"] for row in foreign if row["owner"] != APP] == []
    (superuser,) = await fetch(admin, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert superuser["rolsuper"] is True


async def test_a_fresh_install_gets_a_bot_role_that_is_no_superuser(
    make_server: Any, tmp_path: Path, engines: list[AsyncEngine]
) -> None:
    # This release: POSTGRES_USER is the admin, POSTGRES_DB its database, and no bot role yet.
    server = make_server(ADMIN, ADMIN_PASSWORD)
    await execute(server.dsn(ADMIN, ADMIN_PASSWORD, "postgres"), f"CREATE DATABASE {DATABASE}")
    result = run_roles_step(server, tmp_path, {}, ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "cannot log in" not in result.stdout
    engine = app_engine(server, engines)
    await upgrade_to_head(engine)  # migrate as the bot's role: it owns the database
    async with engine.connect() as connection:
        with pytest.raises(DBAPIError, match="permission denied to create role"):
            await connection.execute(text("CREATE ROLE intruder"))
    await assert_roles(server, createrole=False)
    again = run_roles_step(server, tmp_path, {}, ADMIN_PASSWORD)
    assert again.returncode == 0, again.stderr
    await assert_roles(server, createrole=False)


def test_a_missing_password_file_fails_before_any_login(tmp_path: Path) -> None:
    container = roles_container({})
    env = {name: entry["value"] for name, entry in env_of(container).items()}
    env |= {"SECRETS_DIR": str(tmp_path), "PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    (tmp_path / "database_password").write_text(APP_PASSWORD)
    result = subprocess.run(
        [*container["command"], *container["args"]],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot read {tmp_path}/postgres_password" in result.stderr


async def test_a_wrong_admin_password_fails_the_job_with_a_clear_message(
    make_server: Any, tmp_path: Path
) -> None:
    server = make_server(ADMIN, ADMIN_PASSWORD)
    await execute(server.dsn(ADMIN, ADMIN_PASSWORD, "postgres"), f"CREATE DATABASE {DATABASE}")
    assert run_roles_step(server, tmp_path, {}, ADMIN_PASSWORD).returncode == 0
    result = run_roles_step(server, tmp_path, {}, "not-the-admin-password")
    assert result.returncode == 1
    assert "is postgres_password the admin's password?" in result.stderr
    assert "not-the-admin-password" not in result.stdout + result.stderr
    await assert_roles(server, createrole=False)
