"""Test doubles for the operator tests: a stamping Kubernetes emulator, a fake Bot API, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import attrs
import jsonpatch
import kmock
import kmock._internal.parsing
import kopf
import pytest
import yaml

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# The tests' own API calls (kubectl's and the controllers' part) carry this User-Agent; every
# other call is the operator's, and the ClusterRole must grant it.
TEST_USER_AGENT = "hello-bot-tests"
CLUSTERROLE = Path(__file__).resolve().parents[2] / "k8s" / "operator" / "clusterrole.yaml"
VERBS_BY_ACTION = {
    "FETCH": "get",
    "LIST": "list",
    "WATCH": "watch",
    "CREATE": "create",
    "DELETE": "delete",
}
BOT_TOKEN = "123456:SECRET-test-token-never-log-me"
TELEGRAMBOTS = "hello-bot.dev/v1alpha1/telegrambots"
DEADLINE = 30.0
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) that RBAC `rules` grant."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def granted() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) the operator's ClusterRole grants."""
    return grants(yaml.safe_load(CLUSTERROLE.read_text())["rules"])


_parse_path = kmock._internal.parsing.parse_path


def _parse_namespaces_too(path: str) -> kmock._internal.parsing.ParsedPath:
    """kmock 0.8 fails on the Namespace collection itself (`/api/v1/namespaces`), which kopf
    lists and watches when it serves named namespaces; everything else parses as before."""
    if path.split("?", 1)[0].strip("/") == "api/v1/namespaces":
        return kmock._internal.parsing.ParsedPath(group="", version="v1", plural="namespaces")
    return _parse_path(path)


kmock._internal.parsing.parse_path = _parse_namespaces_too


@attrs.frozen
class ApiCall:
    """One request the operator sent: `namespace` None is a cluster-wide one (kopf's watches).

    `group`, `resource` and `verb` as RBAC sees them; all three "" for discovery, which every
    authenticated identity may read.
    """

    method: str
    path: str
    namespace: str | None
    name: str | None
    group: str = ""
    resource: str = ""
    verb: str = ""


@attrs.define(kw_only=True)
class StampingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus what kopf and owner references need from a real API server.

    kmock 0.8 does not stamp uid, resourceVersion, generation, creationTimestamp or the namespace
    from the URL, and ignores generateName (kopf names its Events that way); this subclass fills
    those in before storing. It also answers a JSON patch whose `test` op fails (kopf's optimistic
    lock on resourceVersion) with 422 as the API server does, not kmock's 500: kopf drops a 422'd
    patch and retries on the next cycle, but retries a 500 with the same stale test for ~30 s.
    """

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    # (API group, resource[/subresource], RBAC verb) of every call the operator made.
    operator_calls: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    # Every call the operator made, in order, as the API server saw it (after the client's own
    # URL normalisation: `..` segments are already collapsed here).
    operator_requests: list[ApiCall] = attrs.field(factory=list, init=False)
    # What the operator's RBAC grants, checked after each test (the `cluster` fixture): the
    # kustomize ClusterRole unless a test installs the operator otherwise.
    rbac: set[tuple[str, str, str]] = attrs.field(factory=granted, init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self._record(request)
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._stamp_create(request.data, request.namespace)
            elif request.action == kmock.action.UPDATE and request.name is not None:
                self._stamp_update(request)
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc

    def _record(self, request: kmock.Request) -> None:
        if request.headers.get("User-Agent") == TEST_USER_AGENT:
            return
        call = ApiCall(str(request.method), request.url.path, request.namespace, request.name)
        if request.resource is None or request.resource.plural is None or request.action is None:
            self.operator_requests.append(call)  # discovery
            return
        if request.action == kmock.action.UPDATE:
            verb = "patch" if request.method == kmock.method.PATCH else "update"
        else:
            verb = VERBS_BY_ACTION[request.action.name]
        resource = request.resource.plural
        if request.subresource:
            resource += f"/{request.subresource}"
        group = request.resource.group or ""
        self.operator_requests.append(attrs.evolve(call, group=group, resource=resource, verb=verb))
        self.operator_calls.add((group, resource, verb))

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


@contextlib.asynccontextmanager
async def kubernetes_emulator() -> AsyncIterator[StampingEmulator]:
    """A served emulator that lists what the operator watches (also for tests/image)."""
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
            ("discovery.k8s.io/v1/endpointslices", "EndpointSlice"),
        ]:
            # The verbs a real API server lists; kopf watches only what is listable and watchable.
            k8s.resources[plural] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=VERBS)
        yield k8s


@attrs.define
class FakeBotApi:
    """An in-test Bot API server on loopback that records every call."""

    calls: list[tuple[str, str]] = attrs.field(factory=list)
    webhook: dict[str, Any] = attrs.field(factory=lambda: {"url": "", "pending_update_count": 0})
    url: str = ""
    # Every setWebhook call's parameters, in order.
    set_webhooks: list[dict[str, Any]] = attrs.field(factory=list)
    # Methods answered 500 (Telegram having trouble) until a test takes them out.
    failing: set[str] = attrs.field(factory=set)

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        body = await request.json() if request.can_read_body else {}
        self.calls.append((token, method))
        if token != BOT_TOKEN:
            return aiohttp.web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        if method in self.failing:
            return aiohttp.web.json_response(
                {"ok": False, "error_code": 500, "description": "Internal Server Error"},
                status=500,
            )
        if method == "getWebhookInfo":
            return aiohttp.web.json_response({"ok": True, "result": self.webhook})
        if method == "deleteWebhook":
            self.webhook = {"url": "", "pending_update_count": 0}
        elif method == "setWebhook":
            self.set_webhooks.append(body)
            self.webhook = {"url": body["url"], "pending_update_count": 0}
        return aiohttp.web.json_response({"ok": True, "result": True})

    def methods(self) -> list[str]:
        return [method for _, method in self.calls]


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


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    *,
    what: str,
    deadline: float = DEADLINE,
    since: float | None = None,
) -> Any:
    """Poll `probe` until it returns something truthy; fail after `deadline` seconds.

    The deadline counts from `since` (a `loop.time()` reading) when given, else from now.
    """
    loop = asyncio.get_running_loop()
    stop_at = (loop.time() if since is None else since) + deadline
    last: Any = None
    while loop.time() < stop_at:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


class DeploymentController:
    """Plays the Deployment controller, which the emulator lacks: reports replicas on request.

    Each report returns the moment (`loop.time()`) it was stored, for latency bounds.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def appeared(self, name: str) -> dict[str, Any]:
        return await eventually(
            lambda: self.cluster.get("apps/v1", "deployments", name), what=f"Deployment {name}"
        )

    async def report(self, name: str, *, ready: int | None = None) -> float:
        """Report `ready` ready replicas (default: all that the spec asks for)."""
        deployment = await self.appeared(name)
        want = int(deployment["spec"].get("replicas", 1))
        count = want if ready is None else ready
        status = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": want,
            "updatedReplicas": want,
            "readyReplicas": count,
            "availableReplicas": count,
        }
        await self.cluster.patch("apps/v1", "deployments", name, {"status": status})
        return asyncio.get_running_loop().time()


class JobController:
    """Plays the Job controller: a Job ends, successfully or not, when the test says so."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def appeared(self, job: str) -> dict[str, Any]:
        return await eventually(
            lambda: self.cluster.get("batch/v1", "jobs", job), what=f"Job {job}"
        )

    async def succeed(self, job: str) -> float:
        status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        return await self._end(job, status)

    async def fail(self, job: str) -> float:
        status = {"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]}
        return await self._end(job, status)

    async def _end(self, job: str, status: dict[str, Any]) -> float:
        await self.appeared(job)
        await self.cluster.patch("batch/v1", "jobs", job, {"status": status})
        return asyncio.get_running_loop().time()


def condition(bot: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((bot or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


class OperatorThread:
    """The real kopf event loop against the emulator, in a thread with its own asyncio loop.

    A thread, because at exit kopf cancels every task its loop gained since it started, which in
    the test's own loop would include pytest-asyncio's fixture finalizers.
    """

    def __init__(self, namespaces: list[str] | None = None) -> None:
        # None: every namespace (`kopf run --all-namespaces`), else `--namespace` each.
        self.namespaces = namespaces
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=self.namespaces is None,
                    namespaces=self.namespaces or (),
                    standalone=True,
                    settings=kopf.OperatorSettings(),
                    stop_flag=self._stop,
                    ready_flag=ready,
                    memo=kopf.Memo(),
                )
            )
        except BaseException as exc:  # surfaced by stop()
            self.errors.append(exc)

    async def start(self) -> None:
        ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        assert await asyncio.to_thread(ready.wait, DEADLINE), "the operator did not get ready"

    async def stop(self) -> None:
        assert self._thread is not None
        self._stop.set()
        await asyncio.to_thread(self._thread.join, DEADLINE)
        assert not self._thread.is_alive(), "the operator did not stop"
        assert not self.errors, self.errors
