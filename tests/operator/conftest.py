"""Fixtures for the operator: a stamping Kubernetes emulator, a fake Bot API, real PostgreSQL."""

from __future__ import annotations

import contextlib
import importlib
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import asyncpg
import pytest
import yaml
from operator_support import (
    PG_ADMIN_URL,
    TEST_USER_AGENT,
    Cluster,
    FakeBotApi,
    OperatorThread,
    StampingEmulator,
    kubernetes_emulator,
)

# `operator/` holds the package; it must not shadow stdlib `operator`, so only the folder's
# *contents* become importable, and only for these tests.
OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def emulator() -> AsyncIterator[StampingEmulator]:
    async with kubernetes_emulator() as k8s:
        yield k8s


@pytest.fixture
async def bot_api() -> AsyncIterator[FakeBotApi]:
    fake = FakeBotApi()
    app = aiohttp.web.Application()
    app.router.add_route("*", "/bot{token}/{method}", fake.handle)
    server = aiohttp.test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


@pytest.fixture
def namespace() -> str:
    """A namespace name unique to the test; it also makes the database names unique."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg_cleanup(namespace: str) -> AsyncIterator[None]:
    """Drop whatever databases and roles this test's bots got (and only those): what the
    operator's registry holds for the test's namespaces (`<namespace>` and `<namespace>-...`),
    and the names made here by hand with today's or the previous operator's prefixes."""
    yield
    await drop_namespace_databases(namespace)


async def drop_namespace_databases(namespace: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        registered: list[str] = []
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'hello_operator'"):
            registry = await asyncpg.connect(PG_ADMIN_URL, database="hello_operator")
            try:
                if await registry.fetchval("SELECT to_regclass('owners') IS NOT NULL"):
                    registered = [
                        row[0]
                        for row in await registry.fetch(
                            "DELETE FROM owners WHERE namespace = $1 OR namespace LIKE $2"
                            " RETURNING name",
                            namespace,
                            f"{namespace}-%",
                        )
                    ]
            finally:
                await registry.close()
        patterns = [f"{prefix}{namespace}%" for prefix in ("tgbot_", "tgb_", "tgh_")]
        databases = registered + [
            row[0]
            for row in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE ANY($1::text[])", patterns
            )
        ]
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        roles = registered + [
            row[0]
            for row in await conn.fetch(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE ANY($1::text[])", patterns
            )
        ]
        for name in roles:
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


@pytest.fixture
def kubeconfig(tmp_path: Path, emulator: StampingEmulator) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": str(emulator.url).rstrip("/")}}],
        "users": [{"name": "tester", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def operator_with(
    monkeypatch: pytest.MonkeyPatch,
    kubeconfig: Path,
    bot_api: FakeBotApi,
    namespaces: list[str] | None = None,
    **env: str,
) -> AsyncIterator[OperatorThread]:
    importlib.import_module("hello_operator")  # registers the handlers with kopf
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("TELEGRAM_API_URL", bot_api.url)
    monkeypatch.setenv("SHARED_POSTGRES_ADMIN_URL", PG_ADMIN_URL)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    operator = OperatorThread(namespaces)
    await operator.start()
    try:
        yield operator
    finally:
        await operator.stop()


@pytest.fixture
async def running_operator(
    kubeconfig: Path,
    bot_api: FakeBotApi,
    pg_cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[OperatorThread]:
    """Retries come fast, so the tests need not wait for the production intervals."""
    async with operator_with(
        monkeypatch, kubeconfig, bot_api, MIGRATION_POLL_SECONDS="0.2", BLOCKED_RETRY_SECONDS="0.5"
    ) as operator:
        yield operator


@pytest.fixture
async def watching_operator(
    kubeconfig: Path,
    bot_api: FakeBotApi,
    pg_cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[OperatorThread]:
    """Retries and the webhook timer far slower than the 5 s the watches promise.

    Whatever a test sees within 5 s then came from a watch on a child, not from a retry
    or a timer that happened to fire.
    """
    async with operator_with(
        monkeypatch, kubeconfig, bot_api, MIGRATION_POLL_SECONDS="60"
    ) as operator:
        yield operator


@pytest.fixture
async def cluster(emulator: StampingEmulator, namespace: str) -> AsyncIterator[Cluster]:
    """The test's own API access; when the test is done, every call the operator made in it
    must have been granted by k8s/operator/clusterrole.yaml, or the RBAC a test installs
    (`emulator.rbac`); the emulator enforces no RBAC."""
    headers = {"User-Agent": TEST_USER_AGENT}
    async with aiohttp.ClientSession(base_url=str(emulator.url), headers=headers) as session:
        yield Cluster(session, namespace)
    denied = sorted(emulator.operator_calls - emulator.rbac)
    assert not denied, f"the operator's RBAC does not grant what it did: {denied}"


@pytest.fixture
def crd() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "k8s" / "crd" / "telegrambots.yaml").read_text())
