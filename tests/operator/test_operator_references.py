"""Every object a TelegramBot names stays in its own namespace (issue 22, finding 1).

A tenant may create a TelegramBot in its namespace, and perhaps write its status; whatever it
writes there, the operator must send no request outside that namespace and none at all for a
name that is not a Kubernetes name. The emulator records every request the operator sends, as
the API server sees it: the HTTP client has already collapsed any `..` segment by then.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest
from hello_operator import on_children, on_telegrambot, runtime, webhook_timer
from hello_operator.kube import KubeClient
from hello_operator.reconcile import Blocked, Clients
from hello_operator.settings import OperatorConfig
from hello_operator.telegram import TelegramClient
from operator_support import (
    PG_ADMIN_URL,
    ApiCall,
    Cluster,
    FakeBotApi,
    StampingEmulator,
    condition,
    eventually,
)
from test_operator_integration import BOTS, bot_manifest, create_token_secret

VICTIM_NAMESPACE = "kube-system"
VICTIM_TOKEN = "999999:VICTIM-token-of-another-namespace"
HOSTILE = f"../../{VICTIM_NAMESPACE}/secrets/victim"
WEBHOOK = {"host": "bot.example.com"}

# (runtime, the spec fields that carry the hostile name, the field the condition must name)
HOSTILE_SPECS: dict[str, tuple[dict[str, Any], str]] = {
    "dedicated-token": ({"token": {"secretName": HOSTILE}}, "spec.token.secretName"),
    "shared-token": (
        {"runtime": "Shared", "token": {"secretName": HOSTILE}},
        "spec.token.secretName",
    ),
    "dedicated-database": (
        {"database": {"mode": "External", "external": {"secretName": HOSTILE}}},
        "spec.database.external.secretName",
    ),
    "shared-database": (
        {
            "runtime": "Shared",
            "database": {"mode": "External", "external": {"secretName": HOSTILE}},
        },
        "spec.database.external.secretName",
    ),
    "dedicated-redis": ({"redis": {"secretName": HOSTILE}}, "spec.redis.secretName"),
    "shared-redis": (
        {"runtime": "Shared", "redis": {"secretName": HOSTILE}},
        "spec.redis.secretName",
    ),
    "dedicated-tls": (
        {"webhook": WEBHOOK | {"tlsSecretName": HOSTILE}},
        "spec.webhook.tlsSecretName",
    ),
    "dedicated-ingress-class": (
        {"webhook": WEBHOOK | {"ingressClassName": "../x"}},
        "spec.webhook.ingressClassName",
    ),
}


async def plant_victim(emulator: StampingEmulator, session: aiohttp.ClientSession) -> None:
    """A Secret and a Deployment in another namespace, as a real cluster has them."""
    other = Cluster(session, VICTIM_NAMESPACE)
    data = {
        "BOT_TOKEN": base64.b64encode(VICTIM_TOKEN.encode()).decode(),
        "DATABASE_URL": base64.b64encode(b"postgresql://victim").decode(),
        "REDIS_URL": base64.b64encode(b"redis://victim").decode(),
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "victim"}, "data": data}
    await other.create("v1", "secrets", secret)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns"}}
    await other.create("apps/v1", "deployments", deployment | {"spec": {"replicas": 1}})


def strays(emulator: StampingEmulator, namespace: str) -> list[ApiCall]:
    """Requests outside the bot's namespace (kopf's cluster-wide watches aside) or naming the
    hostile reference: there must be none."""
    return [
        call
        for call in emulator.operator_requests
        if call.namespace not in {None, namespace}
        or "victim" in call.path
        or VICTIM_NAMESPACE in call.path
        or "coredns" in call.path
    ]


def assert_victim_untouched(
    emulator: StampingEmulator, bot_api: FakeBotApi, namespace: str
) -> None:
    assert strays(emulator, namespace) == []
    assert VICTIM_TOKEN not in [token for token, _ in bot_api.calls]
    for (resource, ns, _), obj in emulator.objects.items():
        if ns == namespace and not obj.deleted:
            assert VICTIM_TOKEN not in json.dumps(obj.raw), resource
    assert emulator.objects["apps/v1/deployments", VICTIM_NAMESPACE, "coredns"].deleted is False


@pytest.fixture
async def victim(emulator: StampingEmulator) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(
        base_url=str(emulator.url), headers={"User-Agent": "hello-bot-tests"}
    ) as session:
        await plant_victim(emulator, session)
    yield


def hostile_bot(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    manifest = bot_manifest(name, webhook=WEBHOOK)
    manifest["spec"] |= spec
    return manifest


@pytest.mark.usefixtures("running_operator", "victim")
@pytest.mark.parametrize(("spec", "field"), HOSTILE_SPECS.values(), ids=HOSTILE_SPECS.keys())
async def test_a_hostile_reference_is_a_condition_and_never_a_request(
    cluster: Cluster,
    emulator: StampingEmulator,
    bot_api: FakeBotApi,
    spec: dict[str, Any],
    field: str,
) -> None:
    name = "hostile"
    await create_token_secret(cluster, name)  # the other fields' bots have a token of their own
    await cluster.create(BOTS, "telegrambots", hostile_bot(name, spec))

    async def outcome() -> Any:
        bot = await cluster.bot(name)
        status = (bot or {}).get("status", {})
        reported = status.get("conditions") and status.get("phase")
        return strays(emulator, cluster.ns) or (bot if reported else None)

    await eventually(outcome, what="a condition, or a request outside the namespace")
    assert_victim_untouched(emulator, bot_api, cluster.ns)
    bot = await cluster.bot(name)
    ready = condition(bot, "Ready")
    assert (ready.get("status"), ready.get("reason")) == ("False", "InvalidReference"), ready
    assert field in ready["message"]
    assert (bot or {})["status"]["phase"] == "Failed"  # only a spec change helps

    async def warned() -> list[str]:
        events = await cluster.events()
        return [e["involvedObject"]["name"] for e in events if e["reason"] == "InvalidReference"]

    # The tenant sees why, as an Event on its own TelegramBot.
    assert await eventually(warned, what="an InvalidReference Event") == [name]
    assert [c for c in emulator.operator_requests if c.method == "POST" and "/jobs" in c.path] == []


@pytest.mark.usefixtures("running_operator", "victim")
async def test_deleting_a_bot_with_a_hostile_reference_completes_in_its_namespace(
    cluster: Cluster, emulator: StampingEmulator, bot_api: FakeBotApi
) -> None:
    """The deletion drops what needs no reference (the bot's database) and skips the rest."""
    name = "leaving"
    manifest = hostile_bot(name, {"token": {"secretName": HOSTILE}, "deletionPolicy": "Delete"})
    await cluster.create(BOTS, "telegrambots", manifest)

    async def reported() -> bool:
        return bool(((await cluster.bot(name)) or {}).get("status", {}).get("conditions"))

    await eventually(reported, what="the bot's first condition")
    await cluster.delete(BOTS, "telegrambots", name)

    async def gone() -> bool:
        return await cluster.bot(name) is None

    await eventually(gone, what="TelegramBot released by its finalizer")
    assert_victim_untouched(emulator, bot_api, cluster.ns)
    assert "deleteWebhook" not in bot_api.methods()


@pytest.mark.usefixtures("running_operator", "victim")
async def test_a_tampered_status_host_reaches_nothing_outside_the_namespace(
    cluster: Cluster, emulator: StampingEmulator, bot_api: FakeBotApi
) -> None:
    """status.host names the bot host the bot leaves on deletion; a tenant who may write the
    status subresource must not turn that into a DELETE of another namespace's Deployment."""
    name = "tampered"
    await create_token_secret(cluster, name)
    await cluster.create(BOTS, "telegrambots", bot_manifest(name, webhook=WEBHOOK))
    await eventually(lambda: _reason(cluster, name, "Migrated"), what="the migration to start")
    status = {"status": {"host": f"../../{VICTIM_NAMESPACE}/deployments/coredns"}}
    await cluster.patch(BOTS, "telegrambots", f"{name}/status", status)
    await cluster.delete(BOTS, "telegrambots", name)

    async def gone() -> bool:
        return await cluster.bot(name) is None

    await eventually(gone, what="TelegramBot released by its finalizer")
    assert_victim_untouched(emulator, bot_api, cluster.ns)
    assert "deleteWebhook" in bot_api.methods()  # what needs no host still happened


async def _reason(cluster: Cluster, name: str, type_: str) -> str | None:
    return condition(await cluster.bot(name), type_).get("reason")


# The same paths called directly: the webhook timer, the watches, a status written by hand.


@pytest.fixture
async def clients(
    emulator: StampingEmulator, bot_api: FakeBotApi, victim: None
) -> AsyncIterator[Clients]:
    config = OperatorConfig(
        telegram_api_url=bot_api.url,
        shared_postgres_admin_url=PG_ADMIN_URL,
        shared_postgres_host="127.0.0.1",
        blocked_retry_seconds=0.1,
    )
    async with aiohttp.ClientSession() as http:
        yield Clients(
            kube=KubeClient(session=http, server=str(emulator.url)),
            telegram=TelegramClient(session=http, api_url=bot_api.url),
            config=config,
        )


async def stored_bot(cluster: Cluster, name: str, spec: dict[str, Any]) -> kopf.Body:
    return kopf.Body(await cluster.create(BOTS, "telegrambots", hostile_bot(name, spec)))


@pytest.mark.parametrize(
    ("spec", "status", "field"),
    [
        ({"token": {"secretName": HOSTILE}}, {}, "spec.token.secretName"),
        ({}, {"host": "../../kube-system/deployments/coredns"}, "status.host"),
    ],
    ids=["token", "status-host"],
)
async def test_the_webhook_timer_refuses_a_hostile_reference(
    clients: Clients,
    cluster: Cluster,
    emulator: StampingEmulator,
    bot_api: FakeBotApi,
    *,
    spec: dict[str, Any],
    status: dict[str, Any],
    field: str,
) -> None:
    await create_token_secret(cluster, "timer")
    bot = await stored_bot(cluster, "timer", spec)
    stored = {"conditions": [{"type": "Ready", "status": "True", "reason": "HostAvailable"}]}
    report = await webhook_timer.check(clients, cluster.ns, "timer", bot.spec, stored | status)
    assert_victim_untouched(emulator, bot_api, cluster.ns)
    refused = [c for c in report.conditions if c.reason == "InvalidReference"]
    assert refused and refused[0].status is False and field in refused[0].message


@pytest.mark.parametrize(
    "status",
    [{"host": "../../kube-system/deployments/coredns"}, {"joining": "a/b"}],
    ids=["host", "joining"],
)
async def test_reconcile_refuses_a_hostile_status_before_any_request(
    clients: Clients, cluster: Cluster, emulator: StampingEmulator, status: dict[str, Any]
) -> None:
    bot = await stored_bot(cluster, "moved", {"runtime": "Dedicated"})
    before = len(emulator.operator_requests)
    with pytest.raises(Blocked) as caught:
        await runtime.reconcile(clients, bot, bot.spec, status, 0)
    assert caught.value.reason == "InvalidReference"
    assert f"status.{next(iter(status))}" in caught.value.message
    assert emulator.operator_requests[before:] == []


async def test_the_watches_ignore_an_owner_reference_with_a_hostile_name(
    clients: Clients, cluster: Cluster, emulator: StampingEmulator
) -> None:
    """A tenant can create a Job or Deployment with the operator's labels and any owner
    reference: the name in it is no path."""
    ref = {
        "apiVersion": "hello-bot.dev/v1alpha1",
        "kind": "TelegramBot",
        "name": "../../kube-system/telegrambots/victim",
        "uid": "u",
        "controller": True,
    }
    child = {"metadata": {"name": "j", "namespace": cluster.ns, "ownerReferences": [ref]}}
    assert on_children.controller_ref(child) is None
    assert on_children.members(child) == []
    job = child | {"status": {"succeeded": 1}}
    await on_children.continue_after_migration(clients, job, ref)
    assert strays(emulator, cluster.ns) == []


async def test_delete_handler_skips_what_needs_the_hostile_reference(
    clients: Clients, cluster: Cluster, emulator: StampingEmulator, bot_api: FakeBotApi
) -> None:
    bot = await stored_bot(cluster, "going", {"token": {"secretName": HOSTILE}})
    await on_telegrambot.delete_bot(
        body=bot,
        spec=bot.spec,
        memo=kopf.Memo(clients=clients),
        logger=logging.getLogger("test"),
        retry=0,
    )
    assert_victim_untouched(emulator, bot_api, cluster.ns)
    assert bot_api.calls == []
