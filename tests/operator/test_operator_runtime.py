"""`spec.runtime`: Shared bots share their image's bot host; moves keep Telegram delivering.

The real kopf loop against the emulator, real PostgreSQL and the fake Bot API. The tests play
the Job and Deployment controllers; the emulator has no garbage collector, so what it would
remove is checked through owner references.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import operator_with
from hello_operator import bot_manifests, database, host_manifests
from operator_support import (
    BOT_TOKEN,
    PG_ADMIN_URL,
    Cluster,
    DeploymentController,
    FakeBotApi,
    JobController,
    OperatorThread,
    StampingEmulator,
    condition,
    eventually,
)
from test_operator_integration import (
    BOTS,
    IMAGE_1,
    IMAGE_2,
    assert_token_hidden,
    bot_manifest,
    create_token_secret,
    printer_columns,
    wait_condition,
)

BOT_ID = BOT_TOKEN.split(":")[0]
IMAGE_3 = "registry.example/hello-bot:1.2.0"
HOST_1 = host_manifests.host_name(IMAGE_1)
HOST_2 = host_manifests.host_name(IMAGE_2)
HOST_3 = host_manifests.host_name(IMAGE_3)


@contextlib.asynccontextmanager
async def operator(
    monkeypatch: pytest.MonkeyPatch, kubeconfig: Path, bot_api: FakeBotApi, pickup: str
) -> AsyncIterator[OperatorThread]:
    async with operator_with(
        monkeypatch,
        kubeconfig,
        bot_api,
        MIGRATION_POLL_SECONDS="0.2",
        BLOCKED_RETRY_SECONDS="0.5",
        HOST_PICKUP_SECONDS=pickup,
    ) as running:
        yield running


@pytest.fixture
async def hosting_operator(
    kubeconfig: Path, bot_api: FakeBotApi, pg_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorThread]:
    """No wait for the kubelet to refresh the bots Secret: there is no kubelet here."""
    async with operator(monkeypatch, kubeconfig, bot_api, "0") as running:
        yield running


def shared(name: str, **spec: Any) -> dict[str, Any]:
    manifest = bot_manifest(name, runtime="Shared", webhook={"host": f"{name}.example.com"})
    manifest["spec"] |= spec
    return manifest


async def bots_secret(cluster: Cluster, host: str) -> dict[str, str]:
    secret = await cluster.get("v1", "secrets", host_manifests.bots_secret_name(host)) or {}
    return {
        key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()
    }


async def keys_become(cluster: Cluster, host: str, keys: set[str]) -> dict[str, str]:
    async def probe() -> list[dict[str, str]]:
        data = await bots_secret(cluster, host)
        return [data] if set(data) == keys else []  # a list: an empty Secret is a result too

    (data,) = await eventually(probe, what=f"{host}'s bots Secret holding {sorted(keys)}")
    return data


async def start_shared(
    cluster: Cluster, name: str, image: str = IMAGE_1, *, ready: bool = True
) -> dict[str, Any]:
    """Create a Shared bot, let its schema migration succeed and (optionally) its host be ready."""
    await create_token_secret(cluster, name)
    await cluster.create(BOTS, "telegrambots", shared(name, image=image))
    await JobController(cluster).succeed(host_manifests.job_name(name, image))
    if ready:
        await DeploymentController(cluster).report(host_manifests.host_name(image))
    return await cluster.bot(name) or {}


async def served_by(cluster: Cluster, name: str, host: str | None) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        bot = await cluster.bot(name)
        ok = (bot or {}).get("status", {}).get("host") == host
        return bot if ok and condition(bot, "Ready").get("status") == "True" else None

    return await eventually(probe, what=f"{name} ready and served by {host}")


async def gone(cluster: Cluster, api: str, plural: str, name: str) -> None:
    async def probe() -> bool:
        return await cluster.get(api, plural, name) is None

    await eventually(probe, what=f"{plural}/{name} deleted")


def owner_uids(obj: dict[str, Any]) -> set[str]:
    refs = obj["metadata"].get("ownerReferences") or []
    assert not any(ref.get("controller") for ref in refs)  # shared: nobody's alone
    return {ref["uid"] for ref in refs}


def ingress_routes(ingress: dict[str, Any] | None) -> dict[str, str]:
    (rule,) = (ingress or {}).get("spec", {}).get("rules", [{}])
    return {
        path["path"]: path["backend"]["service"]["name"]
        for path in rule.get("http", {}).get("paths", [])
    }


@pytest.mark.usefixtures("hosting_operator")
async def test_shared_bot_gets_a_host_with_its_key(
    crd: dict[str, Any],
    cluster: Cluster,
    bot_api: FakeBotApi,
    emulator: StampingEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await create_token_secret(cluster, "alpha")
    await cluster.create(BOTS, "telegrambots", shared("alpha"))

    # The key first (the migration Job mounts it), then the schema, then the webhook.
    data = await keys_become(cluster, HOST_1, {"alpha.env"})
    generated = await cluster.get("v1", "secrets", bot_manifests.generated_secret_name("alpha"))
    webhook_secret = base64.b64decode(generated["data"]["WEBHOOK_SECRET"]).decode()
    assert data["alpha.env"] == f"BOT_TOKEN={BOT_TOKEN}\nWEBHOOK_SECRET={webhook_secret}\n"
    await wait_condition(cluster, "alpha", "Migrated", "MigrationRunning", phase="Migrating")
    job = await JobController(cluster).appeared(host_manifests.job_name("alpha", IMAGE_1))
    (volume,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "bots"]
    assert volume["secret"]["items"] == [{"key": "alpha.env", "path": "alpha.env"}]
    await JobController(cluster).succeed(job["metadata"]["name"])

    bot = await wait_condition(cluster, "alpha", "Ready", "HostNotReady", phase="Deploying")
    host = await cluster.get("apps/v1", "deployments", HOST_1)
    assert host is not None
    container = host["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["host"]
    assert container["image"] == IMAGE_1
    # The chart's bot resources (192Mi / 256Mi) plus 1 MiB for each of the step's 25 bots.
    assert container["resources"]["requests"]["memory"] == "217Mi"
    assert container["resources"]["limits"]["memory"] == "281Mi"
    assert owner_uids(host) == {bot["metadata"]["uid"]}
    assert await cluster.get("v1", "services", HOST_1) is not None
    assert await cluster.get("apps/v1", "deployments", "alpha") is None
    # Not before the host is ready: Telegram would be sent to a Pod that cannot answer.
    assert "setWebhook" not in bot_api.methods()

    await DeploymentController(cluster).report(HOST_1)
    bot = await served_by(cluster, "alpha", HOST_1)
    assert condition(bot, "Ready")["reason"] == "HostAvailable"
    assert bot["status"]["phase"] == "Running"
    assert bot_api.set_webhooks == [
        {
            "url": f"https://alpha.example.com/webhook/{BOT_ID}",
            "secret_token": webhook_secret,
            "drop_pending_updates": False,
        }
    ]
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", "alpha")
    assert ingress_routes(ingress) == {f"/webhook/{BOT_ID}": HOST_1}
    assert printer_columns(crd, bot)["Host"] == HOST_1

    # The hosts' database opens with the URL the host gets; its role runs tenant code, so it may
    # not make roles (the operator made the bot's, and granted it to the hosts role).
    secret = await cluster.get("v1", "secrets", host_manifests.DATABASE_SECRET)
    url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("SELECT current_database()") == (
            database.DatabaseTarget.for_hosts(cluster.ns).database
        )
        assert not await conn.fetchval("SELECT rolcreaterole FROM pg_roles WHERE rolname = user")
        role = database.tenant_role(database.DatabaseTarget.for_hosts(cluster.ns).database, "alpha")
        assert await conn.fetchval("SELECT pg_has_role(user, $1, 'MEMBER')", role)
    finally:
        await conn.close()
    assert_token_hidden(emulator, caplog)


@pytest.mark.usefixtures("hosting_operator")
async def test_bots_join_their_images_host_and_leave_it(cluster: Cluster) -> None:
    first = await start_shared(cluster, "one")
    second = await start_shared(cluster, "two")
    other = await start_shared(cluster, "three", IMAGE_2)
    await keys_become(cluster, HOST_1, {"one.env", "two.env"})
    await keys_become(cluster, HOST_2, {"three.env"})
    for name, host in [("one", HOST_1), ("two", HOST_1), ("three", HOST_2)]:
        await served_by(cluster, name, host)

    # One host per image: the second bot joined the first's.
    async with cluster.session.get(cluster.path("apps/v1", "deployments")) as response:
        names = sorted(d["metadata"]["name"] for d in (await response.json())["items"])
    assert names == sorted([HOST_1, HOST_2])
    host_1 = await cluster.get("apps/v1", "deployments", HOST_1) or {}
    assert owner_uids(host_1) == {first["metadata"]["uid"], second["metadata"]["uid"]}
    host_2 = await cluster.get("apps/v1", "deployments", HOST_2) or {}
    assert owner_uids(host_2) == {other["metadata"]["uid"]}

    # A bot leaving takes only its key; the host keeps its Pod template (no restart).
    await cluster.delete(BOTS, "telegrambots", "two")
    await keys_become(cluster, HOST_1, {"one.env"})
    await gone(cluster, BOTS, "telegrambots", "two")
    after = await cluster.get("apps/v1", "deployments", HOST_1) or {}
    assert after["spec"]["template"] == host_1["spec"]["template"]
    assert owner_uids(after) == {first["metadata"]["uid"]}

    # The last one out removes the host; the other image's host is untouched.
    await cluster.delete(BOTS, "telegrambots", "one")
    await gone(cluster, "apps/v1", "deployments", HOST_1)
    await gone(cluster, "v1", "services", HOST_1)
    assert await bots_secret(cluster, HOST_1) == {}
    untouched = await cluster.get("apps/v1", "deployments", HOST_2) or {}
    assert untouched["metadata"]["resourceVersion"] == host_2["metadata"]["resourceVersion"]
    await keys_become(cluster, HOST_2, {"three.env"})


@pytest.mark.usefixtures("hosting_operator")
async def test_switching_runtimes_moves_the_webhook_only_once_the_new_target_is_ready(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    name, own_url = "mover", "https://mover.example.com/webhook"
    host_url = f"{own_url}/{BOT_ID}"
    await create_token_secret(cluster, name)
    await cluster.create(
        BOTS, "telegrambots", bot_manifest(name, webhook={"host": "mover.example.com"})
    )
    await JobController(cluster).succeed(bot_manifests.job_name(name, IMAGE_1))
    await DeploymentController(cluster).report(name)
    await served_by(cluster, name, None)
    bot_api.webhook = {"url": own_url, "pending_update_count": 0}  # as `serve` registered it

    # Dedicated -> Shared: the bot's own Deployment serves until Telegram uses the host.
    await cluster.patch(BOTS, "telegrambots", name, {"spec": {"runtime": "Shared"}})
    await keys_become(cluster, HOST_1, {"mover.env"})
    await JobController(cluster).succeed(host_manifests.job_name(name, IMAGE_1))
    await wait_condition(cluster, name, "Ready", "HostNotReady", generation=2)
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", name)
    assert ingress_routes(ingress) == {"/webhook": name, f"/webhook/{BOT_ID}": HOST_1}
    assert await cluster.get("apps/v1", "deployments", name) is not None
    assert bot_api.set_webhooks == []

    await DeploymentController(cluster).report(HOST_1)
    await served_by(cluster, name, HOST_1)
    assert [call["url"] for call in bot_api.set_webhooks] == [host_url]
    await gone(cluster, "apps/v1", "deployments", name)
    await gone(cluster, "v1", "services", name)
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", name)
    assert ingress_routes(ingress) == {f"/webhook/{BOT_ID}": HOST_1}

    # Shared -> Dedicated: the host keeps the bot until its own Deployment is ready.
    await cluster.patch(BOTS, "telegrambots", name, {"spec": {"runtime": "Dedicated"}})
    await wait_condition(cluster, name, "Ready", "DeploymentNotReady", generation=3)
    assert (await cluster.bot(name) or {})["status"]["host"] == HOST_1
    assert set(await bots_secret(cluster, HOST_1)) == {"mover.env"}
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", name)
    assert ingress_routes(ingress) == {"/webhook": name, f"/webhook/{BOT_ID}": HOST_1}
    assert [call["url"] for call in bot_api.set_webhooks] == [host_url]

    await DeploymentController(cluster).report(name)
    bot = await served_by(cluster, name, None)
    assert condition(bot, "Ready")["reason"] == "DeploymentAvailable"
    assert [call["url"] for call in bot_api.set_webhooks] == [host_url, own_url]
    await keys_become(cluster, HOST_1, set())
    await gone(cluster, "apps/v1", "deployments", HOST_1)  # its last bot left
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", name)
    assert ingress_routes(ingress) == {"/webhook": name}


@pytest.mark.usefixtures("hosting_operator")
async def test_new_image_moves_a_shared_bot_to_that_images_host(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    await start_shared(cluster, "upgrader")
    await served_by(cluster, "upgrader", HOST_1)

    await cluster.patch(BOTS, "telegrambots", "upgrader", {"spec": {"image": IMAGE_2}})
    await keys_become(cluster, HOST_2, {"upgrader.env"})
    await JobController(cluster).succeed(host_manifests.job_name("upgrader", IMAGE_2))
    await wait_condition(cluster, "upgrader", "Ready", "HostNotReady", generation=2)
    # The old host keeps the bot and its route until the new one is ready.
    assert set(await bots_secret(cluster, HOST_1)) == {"upgrader.env"}
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", "upgrader")
    assert ingress_routes(ingress) == {f"/webhook/{BOT_ID}": HOST_1}

    await DeploymentController(cluster).report(HOST_2)
    bot = await served_by(cluster, "upgrader", HOST_2)
    assert bot["status"]["migratedImage"] == IMAGE_2
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", "upgrader")
    assert ingress_routes(ingress) == {f"/webhook/{BOT_ID}": HOST_2}
    await gone(cluster, "apps/v1", "deployments", HOST_1)
    # The URL is the same: Telegram needed telling once, when the bot first joined a host.
    assert len(bot_api.set_webhooks) == 1


@pytest.mark.usefixtures("hosting_operator")
async def test_a_second_new_image_mid_move_leaves_no_key_in_the_middle_host(
    cluster: Cluster,
) -> None:
    await start_shared(cluster, "hasty")
    await served_by(cluster, "hasty", HOST_1)
    await cluster.patch(BOTS, "telegrambots", "hasty", {"spec": {"image": IMAGE_2}})
    await keys_become(cluster, HOST_2, {"hasty.env"})
    await JobController(cluster).succeed(host_manifests.job_name("hasty", IMAGE_2))
    bot = await wait_condition(cluster, "hasty", "Ready", "HostNotReady", generation=2)
    assert bot["status"]["joining"] == HOST_2

    # Another image before the first move is done: its host is where the bot ends up.
    await cluster.patch(BOTS, "telegrambots", "hasty", {"spec": {"image": IMAGE_3}})
    await JobController(cluster).succeed(host_manifests.job_name("hasty", IMAGE_3))
    await DeploymentController(cluster).report(HOST_3)
    await served_by(cluster, "hasty", HOST_3)
    await keys_become(cluster, HOST_3, {"hasty.env"})
    await keys_become(cluster, HOST_1, set())
    await keys_become(cluster, HOST_2, set())
    await gone(cluster, "apps/v1", "deployments", HOST_2)


@pytest.mark.usefixtures("hosting_operator")
async def test_a_bot_deleted_after_two_new_images_mid_move_leaves_every_host(
    cluster: Cluster,
) -> None:
    await start_shared(cluster, "fickle")
    await served_by(cluster, "fickle", HOST_1)
    for generation, (image, host) in enumerate([(IMAGE_2, HOST_2), (IMAGE_3, HOST_3)], start=2):
        await cluster.patch(BOTS, "telegrambots", "fickle", {"spec": {"image": image}})
        await JobController(cluster).succeed(host_manifests.job_name("fickle", image))
        bot = await wait_condition(
            cluster, "fickle", "Ready", "HostNotReady", generation=generation
        )
        assert bot["status"]["joining"] == host

    await cluster.delete(BOTS, "telegrambots", "fickle")
    await gone(cluster, BOTS, "telegrambots", "fickle")
    for host in (HOST_1, HOST_2, HOST_3):
        assert await bots_secret(cluster, host) == {}


async def test_webhook_waits_for_the_host_to_read_the_bots_file(
    kubeconfig: Path,
    bot_api: FakeBotApi,
    pg_cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
    cluster: Cluster,
) -> None:
    """No Pod of the host to ask (no EndpointSlices here): HOST_PICKUP_SECONDS after the key
    was written, for the kubelet refreshes a mounted Secret only at its next sync."""
    async with operator(monkeypatch, kubeconfig, bot_api, "3600"):
        await start_shared(cluster, "patient")
        bot = await wait_condition(cluster, "patient", "Ready", "HostLoadingBot", phase="Deploying")
    message = condition(bot, "Ready")["message"]
    assert f"no ready Pod of {HOST_1} in its EndpointSlices" in message
    assert "HOST_PICKUP_SECONDS (3600 s) after the bot's key was written" in message
    assert "setWebhook" not in bot_api.methods()


@pytest.mark.usefixtures("hosting_operator")
async def test_ready_follows_the_host_within_5s(cluster: Cluster) -> None:
    """Once the bot has moved, nothing retries and the timer runs every 60 s: only the watch
    on the host's Deployment can report within 5 s."""
    await start_shared(cluster, "follower")
    await served_by(cluster, "follower", HOST_1)
    deployments = DeploymentController(cluster)

    lost_at = await deployments.report(HOST_1, ready=0)
    bot = await eventually(
        lambda: reason_is(cluster, "follower", "HostNotReady"),
        what="Ready HostNotReady",
        deadline=5.0,
        since=lost_at,
    )
    assert condition(bot, "Ready")["message"] == f"host {HOST_1}: 0/1 replicas ready"

    back_at = await deployments.report(HOST_1)
    bot = await eventually(
        lambda: reason_is(cluster, "follower", "HostAvailable"),
        what="Ready HostAvailable",
        deadline=5.0,
        since=back_at,
    )
    assert condition(bot, "Ready")["status"] == "True"


async def reason_is(cluster: Cluster, name: str, reason: str) -> dict[str, Any] | None:
    bot = await cluster.bot(name)
    return bot if condition(bot, "Ready").get("reason") == reason else None


@pytest.mark.usefixtures("hosting_operator")
async def test_deleting_a_shared_bot_with_delete_policy_drops_only_its_schema(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    for name in ("doomed", "kept"):
        await create_token_secret(cluster, name)
        await cluster.create(BOTS, "telegrambots", shared(name, deletionPolicy="Delete"))
        await JobController(cluster).succeed(host_manifests.job_name(name, IMAGE_1))
    await DeploymentController(cluster).report(HOST_1)
    await served_by(cluster, "doomed", HOST_1)
    # The operator made each bot's role; `migrate` makes its schema (no Job runs in the emulator).
    hosts_db = database.DatabaseTarget.for_hosts(cluster.ns).database
    conn = await asyncpg.connect(PG_ADMIN_URL, database=hosts_db)
    try:
        for name in ("doomed", "kept"):
            role = database.tenant_role(hosts_db, name)
            assert await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            await conn.execute(f'CREATE SCHEMA "{database.tenant_schema(name)}"')

        await cluster.delete(BOTS, "telegrambots", "doomed")
        await gone(cluster, BOTS, "telegrambots", "doomed")
        await keys_become(cluster, HOST_1, {"kept.env"})
        assert "deleteWebhook" in bot_api.methods()
        schemas = {r[0] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
        assert database.tenant_schema("doomed") not in schemas
        assert database.tenant_schema("kept") in schemas
        roles = {r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
        assert database.tenant_role(hosts_db, "doomed") not in roles
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{database.tenant_schema("kept")}"')
        await conn.execute(f'DROP ROLE IF EXISTS "{database.tenant_role(hosts_db, "kept")}"')
        await conn.execute(f'DROP ROLE IF EXISTS "{database.tenant_role(hosts_db, "doomed")}"')
        await conn.close()


@pytest.mark.usefixtures("hosting_operator")
async def test_a_bot_deleted_while_joining_leaves_no_key_behind(cluster: Cluster) -> None:
    await start_shared(cluster, "brief", ready=False)
    await wait_condition(cluster, "brief", "Ready", "HostNotReady")
    assert "host" not in (await cluster.bot("brief") or {})["status"]  # not served there yet

    await cluster.delete(BOTS, "telegrambots", "brief")
    await gone(cluster, BOTS, "telegrambots", "brief")
    assert await bots_secret(cluster, HOST_1) == {}
    await gone(cluster, "apps/v1", "deployments", HOST_1)


@pytest.mark.usefixtures("hosting_operator")
async def test_a_move_called_off_leaves_the_host_it_was_joining(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    name = "undecided"
    await create_token_secret(cluster, name)
    manifest = bot_manifest(name, webhook={"host": "undecided.example.com"})
    await cluster.create(BOTS, "telegrambots", manifest)
    await JobController(cluster).succeed(bot_manifests.job_name(name, IMAGE_1))
    await DeploymentController(cluster).report(name)
    await served_by(cluster, name, None)

    await cluster.patch(BOTS, "telegrambots", name, {"spec": {"runtime": "Shared"}})
    await JobController(cluster).succeed(host_manifests.job_name(name, IMAGE_1))
    bot = await wait_condition(cluster, name, "Ready", "HostNotReady", generation=2)
    assert bot["status"]["joining"] == HOST_1

    await cluster.patch(BOTS, "telegrambots", name, {"spec": {"runtime": "Dedicated"}})
    bot = await wait_condition(
        cluster, name, "Ready", "DeploymentAvailable", generation=3, phase="Running"
    )
    await keys_become(cluster, HOST_1, set())
    await gone(cluster, "apps/v1", "deployments", HOST_1)
    bot = await eventually(lambda: settled(cluster, name), what="no host, no move")
    assert await cluster.get("apps/v1", "deployments", name) is not None
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", name)
    assert ingress_routes(ingress) == {"/webhook": name}


async def settled(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """kopf writes the status fields just after the conditions."""
    bot = await cluster.bot(name) or {}
    status = bot.get("status") or {}
    return bot if "host" not in status and "joining" not in status else None
