"""A bot host's manifests, its sizing, the Shared spec rules and a Shared bot's data: units."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import kubernetes_validate
import pytest
from hello_operator import bot_manifests, database, host_manifests, host_membership, naming
from hello_operator.kube import KubeClient
from hello_operator.pod_shape import load_bot_pod
from operator_support import PG_ADMIN_URL, Cluster, StampingEmulator

from bot.db import bot_stores
from tests.support.bot_process import BotProcess

API = "http://127.0.0.1:9/bot-api"
POD = load_bot_pod()
IMAGE = "registry.example/hello-bot:1.0.0"
HOST = host_manifests.host_name(IMAGE)


def shared(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "runtime": "Shared",
        "image": IMAGE,
        "token": {"secretName": "bot-token"},
        "webhook": {"host": "bot.example.com"},
    }
    return base | overrides


def in_namespace(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"]["namespace"] = "bots"
    return manifest


@pytest.mark.parametrize(
    "manifest",
    [
        in_namespace(host_manifests.render_deployment(HOST, IMAGE, 3, API, POD)),
        in_namespace(host_manifests.render_service(HOST)),
        in_namespace(host_manifests.render_job("echo", IMAGE, HOST, API, POD)),
        in_namespace(bot_manifests.render_ingress("echo", shared(), {"/webhook/1": HOST})),
    ],
    ids=["deployment", "service", "job", "ingress"],
)
def test_host_children_match_kubernetes_schemas(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, "1.33.0", strict=True)


def test_host_runs_every_bot_of_its_secret_without_a_webhook_url() -> None:
    deployment = host_manifests.render_deployment(HOST, IMAGE, 3, API, POD)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert container["args"] == ["host"]
    assert env["BOTS_DIR"]["value"] == "/bots"
    assert env["WEBHOOK_PATH"]["value"] == "/webhook"
    assert "WEBHOOK_URL" not in env  # the operator registers each bot's own URL
    assert "BOT_TOKEN" not in env
    assert "DATABASE_URL" not in env  # a file in SECRETS_DIR
    (secrets,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert secrets["projected"]["sources"] == [
        {
            "secret": {
                "name": "hello-bot-hosts-database",
                "items": [{"key": "DATABASE_URL", "path": "database_url"}],
            }
        }
    ]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["SECRETS_DIR"]["value"] == mounts["secrets"]
    (bots,) = [v for v in pod["volumes"] if v["name"] == "bots"]
    # The whole Secret, not a subPath or items: the kubelet then updates the files in place.
    assert bots["secret"] == {"secretName": f"{HOST}-bots", "defaultMode": 0o440}
    assert {"name": "bots", "mountPath": "/bots", "readOnly": True} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize(
    ("members", "request_mib", "limit_mib"),
    [(1, 217, 281), (25, 217, 281), (26, 242, 306), (100, 292, 356)],
)
def test_host_memory_grows_per_bot_in_steps(members: int, request_mib: int, limit_mib: int) -> None:
    resources = host_manifests.host_resources(POD.resources, members)
    assert resources["requests"]["memory"] == f"{request_mib}Mi"
    assert resources["limits"]["memory"] == f"{limit_mib}Mi"
    assert resources["limits"]["cpu"] == POD.resources["limits"]["cpu"]


def test_memory_quantities() -> None:
    assert host_manifests.memory_mib("256Mi") == 256
    assert host_manifests.memory_mib("1Gi") == 1024
    assert host_manifests.memory_mib("1048576") == 1
    with pytest.raises(ValueError, match="unsupported"):
        host_manifests.memory_mib("1Ti")


def test_host_follows_the_image() -> None:
    assert host_manifests.host_name(IMAGE) != host_manifests.host_name(IMAGE + "-2")
    assert len(host_manifests.bots_secret_name(HOST)) <= 63


def test_shared_bot_file_and_url() -> None:
    assert (
        host_manifests.bot_file("123:abc", "s3cret") == "BOT_TOKEN=123:abc\nWEBHOOK_SECRET=s3cret\n"
    )
    assert host_manifests.webhook_url(shared(), "123:abc") == "https://bot.example.com/webhook/123"


def test_owners_are_merged_not_replaced() -> None:
    first = {"uid": "a", "name": "a"}
    second = {"uid": "b", "name": "b"}
    assert host_manifests.merged_owners([first], second) == [first, second]
    assert host_manifests.merged_owners([first, second], second) == [first, second]
    assert host_manifests.merged_owners([first, second], None, drop_uid="a") == [second]


def test_valid_shared_spec() -> None:
    assert bot_manifests.validate_spec(shared()) == []
    # The CRD defaults these; the host's own apply.
    assert bot_manifests.validate_spec(shared(resources={"limits": {"memory": "1Gi"}})) == []


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (shared(webhook=None), "needs spec.webhook.host"),
        (shared(webhook={"host": "bot.example.com", "path": "/tg"}), "serves under /webhook"),
        (shared(replicas=2), "leave spec.replicas unset"),
        (shared(database={"mode": "External", "external": {"secretName": "db"}}), "Shared"),
        (shared(env=[{"name": "LOG_LEVEL", "value": "DEBUG"}]), "spec.env"),
        (shared(redis={"url": "redis://r:6379/0"}), "spec.redis"),
        (shared(runtime="Serverless"), "neither Dedicated nor Shared"),
    ],
)
def test_bad_shared_specs_are_named(bad: dict[str, Any], fragment: str) -> None:
    problems = bot_manifests.validate_spec(bad)
    assert len(problems) == 1, problems
    assert fragment in problems[0]


def test_tenant_names_are_the_hosts() -> None:
    """The operator drops what `migrate` made: the names must be bot/db/bot_stores.py's."""
    assert database.tenant_schema("my-bot") == bot_stores.schema_name("my-bot")
    assert database.tenant_role("tgbot_x__hosts", "my-bot") == bot_stores.role_name(
        "tgbot_x__hosts", "my-bot"
    )


async def hosts_of(namespace: str, password: str) -> database.DatabaseTarget:
    """The namespace's hosts database and login role, as the operator makes them."""
    name = await database.claim(
        PG_ADMIN_URL, database.HOSTS, database.Owner(namespace), naming.hosts_database(namespace)
    )
    target = database.DatabaseTarget.named(name)
    await database.ensure_database(PG_ADMIN_URL, target, password, owner=database.Owner(namespace))
    return target


async def test_drop_tenant_removes_the_bots_schema_and_role_only(
    namespace: str, pg_cleanup: None
) -> None:
    hosts = await hosts_of(namespace, "pw")
    bots = {bot: database.Owner(namespace, bot, f"uid-{bot}") for bot in ("gone", "stays")}
    conn = await asyncpg.connect(PG_ADMIN_URL, database=hosts.database)
    try:
        for bot, owner in bots.items():
            role = await database.ensure_tenant_role(PG_ADMIN_URL, hosts, owner)
            schema = bot_stores.schema_name(bot)
            await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'CREATE TABLE "{schema}".users (id int)')
            await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            await conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')

        # Another namespace's bot of the same name: neither its schema nor role is dropped.
        with pytest.raises(database.NotOwned):
            await database.drop_tenant(
                PG_ADMIN_URL, hosts.database, database.Owner(f"{namespace}-x", "gone")
            )
        await database.drop_tenant(PG_ADMIN_URL, hosts.database, bots["gone"])
        await database.drop_tenant(PG_ADMIN_URL, hosts.database, bots["gone"])  # no error

        schemas = {r[0] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}
        assert "bot_gone" not in schemas
        assert "bot_stays" in schemas
        roles = {r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles")}
        assert bot_stores.role_name(hosts.database, "gone") not in roles
        assert bot_stores.role_name(hosts.database, "stays") in roles
    finally:
        await conn.execute('DROP SCHEMA IF EXISTS "bot_stays" CASCADE')
        await conn.close()
    # A namespace that never had a Shared bot has no hosts' database: nothing to drop.
    await database.drop_tenant(PG_ADMIN_URL, "tgh_none", bots["gone"])


async def test_the_real_host_serves_what_the_operator_writes(
    namespace: str, pg_cleanup: None, tmp_path: Path
) -> None:
    """The operator's hosts database (its role may not make roles: the operator made the bot's),
    bot file and host environment, given to a real `python -m bot host`: it migrates the bot
    and serves it."""
    password = "pw-" + uuid.uuid4().hex
    hosts_target = await hosts_of(namespace, password)
    await database.ensure_tenant_role(
        PG_ADMIN_URL, hosts_target, database.Owner(namespace, "quiz", "uid-quiz")
    )
    bots = tmp_path / "bots"
    bots.mkdir()
    token, secret = "5550101:AAquiz_token_0123456789abcdefghijklmn", "quiz-secret-" + "x" * 20
    (bots / host_manifests.bot_key("quiz")).write_text(host_manifests.bot_file(token, secret))
    deployment = host_manifests.render_deployment(HOST, IMAGE, 1, API, POD)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # The Pod's mounted files, here: the database URL is the file database_url in SECRETS_DIR.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    url = hosts_target.url(password=password, host="127.0.0.1", port=5432)
    (secrets / "database_url").write_text(url)
    env |= {"BOTS_DIR": str(bots), "SECRETS_DIR": str(secrets), "LOG_FORMAT": "console"}
    del env["HOST"], env["PORT"]  # BotProcess picks a free port on loopback
    host = BotProcess(env, cwd=tmp_path, command="host")
    try:
        await host.start()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{host.url}/readyz") as response:
                report = await response.json()
            assert report["checks"]["bots"] == {"quiz": {"status": "serving", "id": 5550101}}
            # Routed by the bot id in the path the operator registers (its secret is checked).
            url = host_manifests.webhook_url({"webhook": {"host": "x.example.com"}}, token)
            path = url.removeprefix("https://x.example.com")
            async with http.post(f"{host.url}{path}", json={}) as response:
                assert response.status == 401
    finally:
        await host.stop()
    assert token not in host.text


async def test_joining_again_keeps_the_pickup_clock_unless_the_file_changes(
    emulator: StampingEmulator, cluster: Cluster
) -> None:
    body = {
        "apiVersion": "hello-bot.dev/v1alpha1",
        "kind": "TelegramBot",
        "metadata": {"name": "again"},
        "spec": {"image": IMAGE, "token": {"secretName": "tok"}},
    }
    bot = await cluster.create("hello-bot.dev/v1alpha1", "telegrambots", body)
    secret_name = host_manifests.bots_secret_name(HOST)
    async with aiohttp.ClientSession() as http:
        kube = KubeClient(session=http, server=str(emulator.url))

        async def join(text: str) -> host_membership.Membership:
            return await host_membership.join(kube, bot, IMAGE, text, telegram_api_url=API, pod=POD)

        first = await join("BOT_TOKEN=1:a\nWEBHOOK_SECRET=s\n")
        version = (await cluster.get("v1", "secrets", secret_name) or {})["metadata"]
        assert (await join("BOT_TOKEN=1:a\nWEBHOOK_SECRET=s\n")).joined_at == first.joined_at
        again = (await cluster.get("v1", "secrets", secret_name) or {})["metadata"]
        assert again["resourceVersion"] == version["resourceVersion"]  # nothing to write
        # A changed file (a rotated token) must be read again before the webhook moves.
        changed = await join("BOT_TOKEN=1:b\nWEBHOOK_SECRET=s\n")
        assert changed.joined_at > first.joined_at
        # The record lost (someone edited the Secret): start the clock again, do not fail.
        await cluster.patch(
            "v1",
            "secrets",
            secret_name,
            {"metadata": {"annotations": {host_membership.JOINED_ANNOTATION: None}}},
        )
        assert (await join("BOT_TOKEN=1:b\nWEBHOOK_SECRET=s\n")).joined_at > changed.joined_at
