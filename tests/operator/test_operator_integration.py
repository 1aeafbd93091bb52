"""The real kopf event loop against the Kubernetes emulator, real PostgreSQL and a fake Bot API.

The emulator runs no controllers: the tests play the Job controller (`JobController` marks a Job
complete or failed) and check garbage-collection readiness through owner references, not through
deletion cascades.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Any

import asyncpg
import pytest
from hello_operator import bot_manifests
from hello_operator.database import DatabaseTarget
from operator_support import (
    BOT_TOKEN,
    PG_ADMIN_URL,
    Cluster,
    FakeBotApi,
    JobController,
    OperatorThread,
    StampingEmulator,
    condition,
    eventually,
)

BOTS = "hello-bot.dev/v1alpha1"
IMAGE_1 = "registry.example/hello-bot:1.0.0"
IMAGE_2 = "registry.example/hello-bot:1.1.0"
CONDITION_COLUMN = re.compile(r'\.status\.conditions\[\?\(@\.type=="(\w+)"\)\]\.(\w+)')

pytestmark = pytest.mark.usefixtures("running_operator")


def bot_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": BOTS,
        "kind": "TelegramBot",
        "metadata": {"name": name},
        "spec": {"image": IMAGE_1, "token": {"secretName": f"{name}-token"}, **spec},
    }


async def create_token_secret(cluster: Cluster, name: str) -> None:
    data = {"BOT_TOKEN": base64.b64encode(BOT_TOKEN.encode()).decode()}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-token"}}
    await cluster.create("v1", "secrets", secret | {"data": data})


async def complete_job(cluster: Cluster, name: str, image: str) -> None:
    """Play the Job controller: the migration Job of `image` succeeded."""
    await JobController(cluster).succeed(bot_manifests.job_name(name, image))


async def wait_condition(
    cluster: Cluster,
    name: str,
    type_: str,
    reason: str,
    *,
    generation: int = 1,
    phase: str | None = None,
) -> dict[str, Any]:
    """Wait for a condition reported for (at least) `generation` of the spec, and the phase."""

    async def probe() -> dict[str, Any] | None:
        bot = await cluster.bot(name)
        found = condition(bot, type_)
        fresh = int(found.get("observedGeneration") or 0) >= generation
        phase_ok = phase is None or (bot or {}).get("status", {}).get("phase") == phase
        return bot if found.get("reason") == reason and fresh and phase_ok else None

    return await eventually(probe, what=f"{type_} reason {reason}")


async def deployed(cluster: Cluster, name: str, image: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        dep = await cluster.get("apps/v1", "deployments", name)
        containers = (dep or {}).get("spec", {}).get("template", {}).get("spec", {})
        images = [c["image"] for c in containers.get("containers", [])]
        return dep if images == [image] else None

    return await eventually(probe, what=f"Deployment {name} on {image}")


async def database_exists(target: DatabaseTarget) -> bool:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        query = "SELECT 1 FROM pg_database WHERE datname = $1"
        return bool(await conn.fetchval(query, target.database))
    finally:
        await conn.close()


def assert_token_hidden(emulator: StampingEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """The token may live in its own Secret only: not in logs, events, status or other objects.

    `aiohttp.access` is left out: those lines come from the fake Bot API server itself, whose
    URLs carry the token by design (the real one's logs are Telegram's).
    """
    formatter = logging.Formatter()
    operator_lines = [
        formatter.format(record) for record in caplog.records if record.name != "aiohttp.access"
    ]
    assert operator_lines  # the capture did see the operator
    assert not [line for line in operator_lines if BOT_TOKEN in line]
    for (resource, _, _), obj in emulator.objects.items():
        if resource.plural != "secrets" and not obj.deleted:
            assert BOT_TOKEN not in json.dumps(obj.raw), resource


def printer_columns(crd: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """What `kubectl get` shows: evaluates the CRD's (simple) column JSONPaths on `obj`."""
    shown: dict[str, Any] = {}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        match = re.fullmatch(
            r'\.status\.conditions\[\?\(@\.type=="(\w+)"\)\]\.(\w+)', column["jsonPath"]
        )
        if match:
            shown[column["name"]] = condition(obj, match[1]).get(match[2])
            continue
        value: Any = obj
        for part in column["jsonPath"].strip(".").split("."):
            value = (value or {}).get(part)
        shown[column["name"]] = value
    return shown


def owned_by(obj: dict[str, Any], bot: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == bot["metadata"]["uid"] and r.get("controller") for r in refs)


async def test_create_builds_children_after_migration(
    crd: dict[str, Any],
    cluster: Cluster,
    bot_api: FakeBotApi,
    emulator: StampingEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name = "echo"
    bot_api.webhook = {
        "url": "https://echo.example.com/webhook",
        "pending_update_count": 7,
        "last_error_message": "Wrong response from the webhook: 502 Bad Gateway",
        "last_error_date": int(time.time()),
    }
    await create_token_secret(cluster, name)
    await cluster.create(
        BOTS, "telegrambots", bot_manifest(name, webhook={"host": "echo.example.com"})
    )

    bot = await wait_condition(cluster, name, "Migrated", "MigrationRunning", phase="Migrating")
    assert bot["status"]["observedGeneration"] == 1
    assert await cluster.get("apps/v1", "deployments", name) is None  # not before the migration

    await complete_job(cluster, name, IMAGE_1)
    deployment = await deployed(cluster, name, IMAGE_1)
    # "Deploying": no pods become ready in an emulator.
    bot = await wait_condition(cluster, name, "Migrated", "MigrationSucceeded", phase="Deploying")
    assert bot["status"]["observedGeneration"] == 1
    assert condition(bot, "Ready")["status"] == "False"

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PROJECT_NAME"]["value"] == name
    assert env["WEBHOOK_URL"]["value"] == "https://echo.example.com"
    # The token is a file in SECRETS_DIR, from the TelegramBot's Secret.
    (secrets,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets"
    ]
    token_source = secrets["projected"]["sources"][0]["secret"]
    assert token_source["name"] == f"{name}-token"
    assert token_source["items"][0]["path"] == "bot_token"
    assert "BOT_TOKEN" not in env
    service = await cluster.get("v1", "services", name)
    ingress = await cluster.get("networking.k8s.io/v1", "ingresses", name)
    secret = await cluster.get("v1", "secrets", bot_manifests.generated_secret_name(name))
    job = await cluster.get("batch/v1", "jobs", bot_manifests.job_name(name, IMAGE_1))
    for child in (deployment, service, ingress, secret, job):
        assert child is not None
        assert owned_by(child, bot), child["kind"]

    # The generated password really opens the project's own database.
    url = base64.b64decode(secret["data"]["DATABASE_URL"]).decode()
    target = DatabaseTarget.for_bot(cluster.ns, name)
    assert url.endswith(f"@127.0.0.1:5432/{target.database}")
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    assert await conn.fetchval("SELECT current_database()") == target.database
    await conn.close()

    # The timer reported Telegram's view of the webhook.
    bot = await wait_condition(cluster, name, "WebhookHealthy", "DeliveryFailing")
    assert bot["status"]["webhook"]["pendingUpdateCount"] == 7
    columns = printer_columns(crd, bot)
    assert columns["Ready"] == "False"
    assert columns["Phase"] == "Deploying"
    assert columns["Webhook"] == "DeliveryFailing"
    assert columns["Pending"] == 7
    assert columns["Last-Error"] == "Wrong response from the webhook: 502 Bad Gateway"
    assert columns["Age"] == bot["metadata"]["creationTimestamp"]
    assert ("getWebhookInfo" in bot_api.methods()) and all(t == BOT_TOKEN for t, _ in bot_api.calls)
    assert_token_hidden(emulator, caplog)


async def test_spec_change_reruns_migration_before_rolling(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    name = "roller"
    await create_token_secret(cluster, name)
    await cluster.create(
        BOTS, "telegrambots", bot_manifest(name, webhook={"host": "r.example.com"})
    )
    await complete_job(cluster, name, IMAGE_1)
    await deployed(cluster, name, IMAGE_1)

    await cluster.patch(BOTS, "telegrambots", name, {"spec": {"image": IMAGE_2, "replicas": 3}})
    await wait_condition(cluster, name, "Migrated", "MigrationRunning", generation=2)
    new_job = await cluster.get("batch/v1", "jobs", bot_manifests.job_name(name, IMAGE_2))
    assert new_job is not None
    assert new_job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_2

    async def scaled() -> dict[str, Any] | None:
        dep = await cluster.get("apps/v1", "deployments", name)
        return dep if dep and dep["spec"]["replicas"] == 3 else None

    # Other changes roll out at once; the image waits for its migration.
    deployment = await eventually(scaled, what="replicas patched to 3")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_1

    await complete_job(cluster, name, IMAGE_2)
    await deployed(cluster, name, IMAGE_2)
    bot = await wait_condition(
        cluster, name, "Migrated", "MigrationSucceeded", generation=2, phase="Deploying"
    )
    assert bot["status"]["migratedImage"] == IMAGE_2
    assert bot["status"]["observedGeneration"] == 2


async def test_switch_to_polling_removes_ingress(cluster: Cluster, bot_api: FakeBotApi) -> None:
    name = "switcher"
    await create_token_secret(cluster, name)
    await cluster.create(
        BOTS, "telegrambots", bot_manifest(name, webhook={"host": "s.example.com"})
    )
    await complete_job(cluster, name, IMAGE_1)
    await deployed(cluster, name, IMAGE_1)
    assert await cluster.get("networking.k8s.io/v1", "ingresses", name) is not None

    await cluster.patch(BOTS, "telegrambots", name, {"spec": {"webhook": None}})

    async def polling() -> dict[str, Any] | None:
        dep = await cluster.get("apps/v1", "deployments", name)
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"] if dep else None
        return dep if args == ["poll"] else None

    deployment = await eventually(polling, what="Deployment switched to poll")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert await cluster.get("networking.k8s.io/v1", "ingresses", name) is None


@pytest.mark.parametrize(("policy", "kept"), [("Retain", True), ("Delete", False)])
async def test_delete_removes_webhook_and_honours_policy(
    cluster: Cluster, bot_api: FakeBotApi, namespace: str, policy: str, kept: bool
) -> None:
    name = f"gone-{policy.lower()}"
    await create_token_secret(cluster, name)
    manifest = bot_manifest(name, webhook={"host": "g.example.com"}, deletionPolicy=policy)
    await cluster.create(BOTS, "telegrambots", manifest)
    await complete_job(cluster, name, IMAGE_1)
    await deployed(cluster, name, IMAGE_1)
    target = DatabaseTarget.for_bot(namespace, name)
    assert await database_exists(target)

    await cluster.delete(BOTS, "telegrambots", name)

    async def gone() -> bool:
        return await cluster.bot(name) is None

    await eventually(gone, what="TelegramBot released by its finalizer")
    assert "deleteWebhook" in bot_api.methods()
    assert await database_exists(target) is kept


async def test_missing_token_secret_is_a_condition_then_recovers(
    cluster: Cluster,
    bot_api: FakeBotApi,
    emulator: StampingEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name = "orphan"
    await cluster.create(BOTS, "telegrambots", bot_manifest(name))

    bot = await wait_condition(cluster, name, "Ready", "TokenSecretNotFound", phase="Blocked")
    ready = condition(bot, "Ready")
    assert ready["status"] == "False"
    assert f"{name}-token" in ready["message"]

    async def warned() -> list[dict[str, Any]]:
        events = await cluster.events()
        return [e for e in events if e.get("reason") == "TokenSecretNotFound"]

    events = await eventually(warned, what="a TokenSecretNotFound Event")
    assert events[0]["type"] == "Warning"
    assert events[0]["involvedObject"]["name"] == name

    # Not a dead end: once the Secret exists the retry proceeds to the migration.
    await create_token_secret(cluster, name)
    await wait_condition(cluster, name, "Migrated", "MigrationRunning")
    assert_token_hidden(emulator, caplog)


async def test_invalid_host_fails_with_reason(cluster: Cluster, bot_api: FakeBotApi) -> None:
    name = "badhost"
    await create_token_secret(cluster, name)
    manifest = bot_manifest(name, webhook={"host": "https://bot.example.com:8443/x"})
    await cluster.create(BOTS, "telegrambots", manifest)

    bot = await wait_condition(cluster, name, "Ready", "InvalidSpec", phase="Failed")
    assert "not a DNS name" in condition(bot, "Ready")["message"]

    async def warned() -> list[dict[str, Any]]:
        return [e for e in await cluster.events() if e.get("reason") == "InvalidSpec"]

    await eventually(warned, what="an InvalidSpec Event")
    assert await cluster.get("batch/v1", "jobs", bot_manifests.job_name(name, IMAGE_1)) is None


async def test_restart_resumes_and_repairs_drift(
    cluster: Cluster,
    bot_api: FakeBotApi,
    emulator: StampingEmulator,
    running_operator: OperatorThread,
) -> None:
    name = "resumer"
    await create_token_secret(cluster, name)
    await cluster.create(BOTS, "telegrambots", bot_manifest(name))
    await complete_job(cluster, name, IMAGE_1)
    await wait_condition(cluster, name, "Migrated", "MigrationSucceeded", phase="Deploying")

    await running_operator.stop()
    await cluster.delete("v1", "services", name)  # drift while nobody watches
    await running_operator.start()

    service = await eventually(
        lambda: cluster.get("v1", "services", name), what="Service restored on resume"
    )
    assert service["spec"]["selector"]["app.kubernetes.io/instance"] == name
    await deployed(cluster, name, IMAGE_1)
    # The schema was migrated for this image already: no second migration Job.
    jobs = [key for key in emulator.objects if key[0].plural == "jobs" and key[1] == cluster.ns]
    assert len(jobs) == 1


async def test_failed_migration_keeps_the_old_deployment_and_says_why(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    name = "broken"
    await create_token_secret(cluster, name)
    await cluster.create(BOTS, "telegrambots", bot_manifest(name))
    job = bot_manifests.job_name(name, IMAGE_1)
    await JobController(cluster).fail(job)

    bot = await wait_condition(cluster, name, "Migrated", "MigrationFailed", phase="Failed")
    assert job in condition(bot, "Migrated")["message"]
    assert await cluster.get("apps/v1", "deployments", name) is None

    async def warned() -> list[dict[str, Any]]:
        return [e for e in await cluster.events() if e.get("reason") == "MigrationFailed"]

    await eventually(warned, what="a MigrationFailed Event")
