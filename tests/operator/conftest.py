"""Fixtures for the operator: a stamping Kubernetes emulator, a fake Bot API, real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.test_utils
import aiohttp.web
import asyncpg
import attrs
import kmock
import pytest
import yaml

# `operator/` holds the package; it must not shadow stdlib `operator`, so only the folder's
# *contents* become importable, and only for these tests.
OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BOT_TOKEN = "123456:SECRET-test-token-never-log-me"
TELEGRAMBOTS = "hello-bot.dev/v1alpha1/telegrambots"
DEADLINE = 30.0


@attrs.define(kw_only=True)
class StampingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what kopf and owner references need from a real API server.

    kmock 0.8 does not stamp uid, resourceVersion, generation, creationTimestamp or the namespace
    from the URL, and ignores generateName (kopf names its Events that way); this subclass fills
    those in before storing.
    """

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._stamp_create(request.data, request.namespace)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._stamp_update(request)
        return await super()._handle(request)

    def _stamp_create(self, data: dict[str, Any], namespace: str | None) -> None:
        meta = data.setdefault("metadata", {})
        if namespace:
            meta.setdefault("namespace", namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        meta["generation"] = 1
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def _stamp_update(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {}) if request.data is not None else {}
        meta["resourceVersion"] = str(next(self._versions))
        key = (request.resource, request.namespace, request.name)
        if request.subresource is None and "spec" in request.data and key in self.objects:
            current = self.objects[key]
            if not current.deleted:
                meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1


@pytest.fixture
async def emulator() -> AsyncIterator[StampingEmulator]:
    async with StampingEmulator() as k8s, kmock.Server(k8s):
        k8s.resources[TELEGRAMBOTS] = kmock.ResourceInfo(
            kind="TelegramBot",
            singular="telegrambot",
            namespaced=True,
            subresources={"status"},
            verbs={"get", "list", "watch", "create", "patch", "delete"},
        )
        # kopf waits for these in discovery before it starts any watch (a real server lists them).
        k8s.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False)
        k8s.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
            kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"}
        )
        for plural, kind in [
            ("v1/events", "Event"),
            ("v1/secrets", "Secret"),
            ("v1/services", "Service"),
            ("apps/v1/deployments", "Deployment"),
            ("batch/v1/jobs", "Job"),
            ("networking.k8s.io/v1/ingresses", "Ingress"),
        ]:
            k8s.resources[plural] = kmock.ResourceInfo(kind=kind, namespaced=True)
        yield k8s


@attrs.define
class FakeBotApi:
    """An in-test Bot API server on loopback that records every call."""

    calls: list[tuple[str, str]] = attrs.field(factory=list)
    webhook: dict[str, Any] = attrs.field(factory=lambda: {"url": "", "pending_update_count": 0})
    url: str = ""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        body = await request.json() if request.can_read_body else {}
        self.calls.append((token, method))
        if token != BOT_TOKEN:
            return aiohttp.web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        if method == "getWebhookInfo":
            return aiohttp.web.json_response({"ok": True, "result": self.webhook})
        if method == "deleteWebhook":
            self.webhook = {"url": "", "pending_update_count": 0}
        elif method == "setWebhook":
            self.webhook = {"url": body["url"], "pending_update_count": 0}
        return aiohttp.web.json_response({"ok": True, "result": True})

    def methods(self) -> list[str]:
        return [method for _, method in self.calls]


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
    """Drop whatever databases and roles this test's bots got (and only those)."""
    yield
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        prefix = f"tgbot_{namespace}_%"
        for (name,) in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix
        ):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for (name,) in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE $1", prefix
        ):
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


@pytest.fixture
async def running_operator(
    kubeconfig: Path,
    bot_api: FakeBotApi,
    pg_cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[None]:
    """The real kopf event loop against the emulator, in a thread with its own asyncio loop.

    A thread, because at exit kopf cancels every task its loop gained since it started, which in
    the test's own loop would include pytest-asyncio's fixture finalizers.
    """
    import kopf

    import hello_operator  # noqa: F401  (registers the handlers)

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("TELEGRAM_API_URL", bot_api.url)
    monkeypatch.setenv("SHARED_POSTGRES_ADMIN_URL", PG_ADMIN_URL)
    monkeypatch.setenv("MIGRATION_POLL_SECONDS", "0.2")
    monkeypatch.setenv("BLOCKED_RETRY_SECONDS", "0.5")
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=True,
                    standalone=True,
                    settings=kopf.OperatorSettings(),
                    stop_flag=stop,
                    ready_flag=ready,
                    memo=kopf.Memo(),
                )
            )
        except BaseException as exc:  # surfaced in the fixture's teardown
            errors.append(exc)

    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, DEADLINE), "the operator did not get ready"
    try:
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, DEADLINE)
        assert not thread.is_alive(), "the operator did not stop"
        assert not errors, errors


class Cluster:
    """Test-side API calls to the emulator (what kubectl and the controllers would do)."""

    def __init__(self, session: aiohttp.ClientSession, namespace: str) -> None:
        self.session = session
        self.ns = namespace

    def path(self, api: str, plural: str, name: str = "") -> str:
        prefix = "/api/v1" if api == "v1" else f"/apis/{api}"
        return f"{prefix}/namespaces/{self.ns}/{plural}" + (f"/{name}" if name else "")

    async def get(self, api: str, plural: str, name: str) -> dict[str, Any] | None:
        async with self.session.get(self.path(api, plural, name)) as response:
            return await response.json() if response.status == 200 else None

    async def create(self, api: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.path(api, plural), json=body) as response:
            assert response.status in {200, 201}, await response.text()
            return await response.json()

    async def patch(self, api: str, plural: str, name: str, body: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session.patch(
            self.path(api, plural, name), json=body, headers=headers
        ) as response:
            assert response.status == 200, await response.text()

    async def delete(self, api: str, plural: str, name: str) -> None:
        async with self.session.delete(self.path(api, plural, name)) as response:
            assert response.status == 200, await response.text()

    async def bot(self, name: str) -> dict[str, Any] | None:
        return await self.get("hello-bot.dev/v1alpha1", "telegrambots", name)

    async def events(self) -> list[dict[str, Any]]:
        async with self.session.get(self.path("v1", "events")) as response:
            return (await response.json())["items"]


@pytest.fixture
async def cluster(emulator: StampingEmulator, namespace: str) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession(base_url=str(emulator.url)) as session:
        yield Cluster(session, namespace)


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, what: str, deadline: float = DEADLINE
) -> Any:
    """Poll `probe` until it returns something truthy; fail after `deadline` seconds."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + deadline
    last: Any = None
    while loop.time() < stop_at:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def condition(bot: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((bot or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


@pytest.fixture
def crd() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "k8s" / "crd" / "telegrambots.yaml").read_text())
