"""Handler logic as plain functions: conditions, health, Bot API client, database, reconcile."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import kopf
import pytest
from hello_operator import (
    bot_manifests,
    conditions,
    database,
    naming,
    on_telegrambot,
    pickup,
    reconcile,
    runtime,
    webhook_timer,
)
from hello_operator.kube import KubeClient
from hello_operator.settings import OperatorConfig
from hello_operator.telegram import TelegramClient, TelegramError, WebhookInfo
from operator_support import BOT_TOKEN, PG_ADMIN_URL, Cluster, FakeBotApi, StampingEmulator

NOW = "2026-01-01T00:00:00Z"


def cond(status: bool | None, reason: str = "R") -> conditions.Condition:
    return conditions.Condition(conditions.READY, status, reason, "m")


def test_merge_keeps_transition_time_until_status_flips() -> None:
    first = conditions.merge_conditions([], [cond(False)], generation=1, now=NOW)
    same = conditions.merge_conditions(first, [cond(False, "Other")], generation=2, now="later")
    flipped = conditions.merge_conditions(same, [cond(True)], generation=2, now="later")
    assert same[0]["lastTransitionTime"] == NOW
    assert same[0]["reason"] == "Other"
    assert flipped[0]["lastTransitionTime"] == "later"
    assert flipped[0]["status"] == "True"
    assert flipped[0]["observedGeneration"] == 2


def test_merge_keeps_other_types_and_orders_them() -> None:
    webhook = conditions.Condition(conditions.WEBHOOK_HEALTHY, None, "X", "m")
    migrated = conditions.Condition(conditions.MIGRATED, True, "Y", "m")
    merged = conditions.merge_conditions([], [webhook, migrated], generation=None, now=NOW)
    merged = conditions.merge_conditions(merged, [cond(True)], generation=None, now=NOW)
    assert [c["type"] for c in merged] == ["Migrated", "Ready", "WebhookHealthy"]
    assert merged[2]["status"] == "Unknown"
    assert "observedGeneration" not in merged[0]


WEBHOOK_SPEC = {"webhook": {"host": "bot.example.com"}}
GOOD_URL = "https://bot.example.com/webhook"


@pytest.mark.parametrize(
    ("spec", "info", "status", "reason"),
    [
        ({}, WebhookInfo("", 3, "", 0), True, "PollingMode"),
        ({}, WebhookInfo(GOOD_URL, 0, "", 0), False, "WebhookSetWhilePolling"),
        (WEBHOOK_SPEC, WebhookInfo("", 0, "", 0), False, "WebhookNotSet"),
        (
            WEBHOOK_SPEC,
            WebhookInfo(GOOD_URL, 9, "refused", 990),
            False,
            "DeliveryFailing",
        ),
        (WEBHOOK_SPEC, WebhookInfo(GOOD_URL, 0, "refused", 1), True, "WebhookOK"),
        (WEBHOOK_SPEC, WebhookInfo(GOOD_URL, 0, "", 0), True, "WebhookOK"),
    ],
)
def test_webhook_condition(
    spec: dict[str, Any], info: WebhookInfo, status: bool, reason: str
) -> None:
    result = webhook_timer.webhook_condition(
        spec, info, now=1000.0 + webhook_timer.ERROR_WINDOW_SECONDS / 2
    )
    assert (result.status, result.reason) == (status, reason)


def test_failing_webhook_message_carries_telegrams_words() -> None:
    info = WebhookInfo(GOOD_URL, 9, "Wrong response from the webhook: 500", 1000)
    result = webhook_timer.webhook_condition(WEBHOOK_SPEC, info, now=1001.0)
    assert result.message == "Wrong response from the webhook: 500 (9 updates pending)"


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {"SHARED_POSTGRES_ADMIN_URL": "postgresql://admin:pw@pg.internal:6543/postgres"}
    )
    assert (config.shared_postgres_host, config.shared_postgres_port) == ("pg.internal", 6543)
    assert config.telegram_api_url == "https://api.telegram.org"
    override = OperatorConfig.from_env({"SHARED_POSTGRES_HOST": "pg", "TELEGRAM_API_URL": "x/"})
    assert (override.shared_postgres_host, override.telegram_api_url) == ("pg", "x")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_telegram_client_reads_webhook_info(
    bot_api: FakeBotApi, http: aiohttp.ClientSession
) -> None:
    bot_api.webhook = {"url": GOOD_URL, "pending_update_count": 4, "last_error_date": 5}
    client = TelegramClient(session=http, api_url=bot_api.url)
    info = await client.get_webhook_info(BOT_TOKEN)
    assert info == WebhookInfo(GOOD_URL, 4, "", 5)
    await client.delete_webhook(BOT_TOKEN)
    assert bot_api.calls == [(BOT_TOKEN, "getWebhookInfo"), (BOT_TOKEN, "deleteWebhook")]


@pytest.mark.parametrize("where", ["rejected", "unreachable"])
async def test_telegram_errors_never_carry_the_token(
    bot_api: FakeBotApi, http: aiohttp.ClientSession, where: str
) -> None:
    # A wrong token gets Telegram's 401; an unreachable server fails before any answer.
    api_url = bot_api.url if where == "rejected" else "http://127.0.0.1:9"
    token = BOT_TOKEN + "-wrong" if where == "rejected" else BOT_TOKEN
    client = TelegramClient(session=http, api_url=api_url)
    with pytest.raises(TelegramError) as caught:
        await client.get_webhook_info(token)
    assert BOT_TOKEN not in str(caught.value)
    # No chained aiohttp error either: kopf would log its message (with the URL) in tracebacks.
    error = caught.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    assert str(caught.value).startswith("getWebhookInfo failed: ")


def test_quoting_is_safe() -> None:
    assert database.quote_ident('a"b') == '"a""b"'
    assert database.quote_literal("it's") == "'it''s'"


async def test_database_provisioning_is_idempotent(namespace: str, pg_cleanup: None) -> None:
    owner = database.Owner(namespace, "unit", "uid-unit")
    name = naming.bot_database(namespace, "unit")
    assert await database.claim(PG_ADMIN_URL, database.BOT, owner, name) == name
    target = database.DatabaseTarget.named(name)
    assert await database.ensure_database(PG_ADMIN_URL, target, "first-pass", owner=owner) is True
    assert await database.ensure_database(PG_ADMIN_URL, target, "second-pass", owner=owner) is False
    url = target.url(password="second-pass", host="127.0.0.1", port=5432)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    assert await conn.fetchval("SELECT current_user") == target.role
    await conn.close()
    await database.drop_database(PG_ADMIN_URL, target, owner=owner)
    assert await database.database_exists(PG_ADMIN_URL, target) is False
    await database.drop_database(PG_ADMIN_URL, target, owner=owner)  # already gone: still fine


@pytest.fixture
async def clients(
    emulator: StampingEmulator, bot_api: FakeBotApi, http: aiohttp.ClientSession
) -> reconcile.Clients:
    config = OperatorConfig(
        telegram_api_url=bot_api.url,
        shared_postgres_admin_url=PG_ADMIN_URL,
        shared_postgres_host="127.0.0.1",
        migration_poll_seconds=0.1,
        blocked_retry_seconds=0.1,
    )
    return reconcile.Clients(
        kube=KubeClient(session=http, server=str(emulator.url)),
        telegram=TelegramClient(session=http, api_url=bot_api.url),
        config=config,
    )


async def make_bot(cluster: Cluster, name: str, **spec: Any) -> kopf.Body:
    body = {
        "apiVersion": "hello-bot.dev/v1alpha1",
        "kind": "TelegramBot",
        "metadata": {"name": name},
        "spec": {"image": "img:1", "token": {"secretName": "tok"}, **spec},
    }
    return kopf.Body(await cluster.create("hello-bot.dev/v1alpha1", "telegrambots", body))


async def add_token(cluster: Cluster) -> None:
    data = {"BOT_TOKEN": base64.b64encode(BOT_TOKEN.encode()).decode()}
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tok"}, "data": data}
    await cluster.create("v1", "secrets", body)


async def test_reconcile_rejects_an_invalid_spec(
    clients: reconcile.Clients, cluster: Cluster
) -> None:
    bot = await make_bot(cluster, "bad", webhook={"host": "bad host"})
    with pytest.raises(reconcile.Blocked) as caught:
        await runtime.reconcile(clients, bot, bot.spec, bot.status, 0)
    assert caught.value.reason == "InvalidSpec"
    assert caught.value.retry_after is None  # permanent until the spec changes


async def test_reconcile_reports_a_missing_secret(
    clients: reconcile.Clients, cluster: Cluster
) -> None:
    bot = await make_bot(cluster, "nosecret")
    with pytest.raises(reconcile.Blocked) as caught:
        await runtime.reconcile(clients, bot, bot.spec, bot.status, 0)
    assert caught.value.reason == "TokenSecretNotFound"
    assert caught.value.retry_after == 0.1
    assert f"{cluster.ns}/tok" in caught.value.message


async def test_create_handler_converges_when_run_again(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    await add_token(cluster)
    bot = await make_bot(cluster, "again", webhook={"host": "again.example.com"})
    memo = kopf.Memo(clients=clients)
    secrets_seen = []
    for _ in range(2):
        patch = kopf.Patch()
        with pytest.raises(kopf.TemporaryError):
            await on_telegrambot.create_bot(
                body=bot,
                status=bot.status,
                patch=patch,
                memo=memo,
                retry=0,
                webhook_host_claims={},  # no bot claims a webhook host
            )
        assert patch["status"]["phase"] == "Migrating"
        stored = await cluster.bot("again")
        assert stored is not None
        migrated = conditions.find(stored["status"]["conditions"], conditions.MIGRATED)
        assert migrated is not None and migrated["reason"] == "MigrationRunning"
        secret = await cluster.get("v1", "secrets", bot_manifests.generated_secret_name("again"))
        assert secret is not None
        secrets_seen.append(secret["data"])
    assert secrets_seen[0] == secrets_seen[1]  # generated once, then kept
    job = await cluster.get("batch/v1", "jobs", bot_manifests.job_name("again", "img:1"))
    assert job is not None and job["metadata"]["ownerReferences"][0]["uid"] == bot.metadata.uid
    assert await cluster.get("apps/v1", "deployments", "again") is None


def test_job_state_and_readiness() -> None:
    assert reconcile.job_state({}) == "running"
    assert reconcile.job_state({"status": {"succeeded": 1}}) == "succeeded"
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert reconcile.job_state(failed) == "failed"
    ready = reconcile.ready_condition({"spec": {"replicas": 2}, "status": {"readyReplicas": 2}})
    assert (ready.status, ready.reason) == (True, "DeploymentAvailable")
    partial = reconcile.ready_condition({"spec": {"replicas": 2}, "status": {"readyReplicas": 1}})
    assert (partial.status, partial.message) == (False, "1/2 replicas ready")
    assert reconcile.backoff(0) < reconcile.backoff(3) <= reconcile.backoff(50) == 300


async def test_health_check_refreshes_readiness_from_the_deployment(
    clients: reconcile.Clients, cluster: Cluster, bot_api: FakeBotApi
) -> None:
    await add_token(cluster)
    deployment = bot_manifests.render_deployment(
        "h", {"token": {"secretName": "tok"}}, "img:1", "x", clients.config.bot_pod
    )
    deployment["metadata"]["namespace"] = cluster.ns
    deployment["status"] = {"readyReplicas": 1}
    await cluster.create("apps/v1", "deployments", deployment)
    bot_api.webhook = {"url": "", "pending_update_count": 2, "last_error_date": int(time.time())}
    status = {
        "phase": "Deploying",
        "conditions": [{"type": "Ready", "status": "False", "reason": "DeploymentNotReady"}],
    }
    report = await webhook_timer.check(
        clients, cluster.ns, "h", {"token": {"secretName": "tok"}}, status
    )
    assert report.phase == "Running"
    assert report.webhook is not None and report.webhook["pendingUpdateCount"] == 2
    by_type = {c.type: c for c in report.conditions}
    assert by_type["Ready"].status is True
    assert by_type["WebhookHealthy"].reason == "PollingMode"


async def test_unreachable_database_blocks_with_a_reason(
    clients: reconcile.Clients, cluster: Cluster, pg_cleanup: None
) -> None:
    await add_token(cluster)
    bot = await make_bot(cluster, "nodb")
    config = dataclasses.replace(
        clients.config, shared_postgres_admin_url="postgresql://postgres@127.0.0.1:9/postgres"
    )
    with pytest.raises(reconcile.Blocked) as caught:
        await runtime.reconcile(
            dataclasses.replace(clients, config=config), bot, bot.spec, bot.status, 2
        )
    assert caught.value.reason == "DatabaseUnavailable"
    assert caught.value.retry_after == reconcile.backoff(2)
    assert "postgres@" not in caught.value.message  # no admin URL in status


async def test_kube_client_create_or_patch(clients: reconcile.Clients, cluster: Cluster) -> None:
    service = bot_manifests.render_service("svc")
    service["metadata"]["namespace"] = cluster.ns
    await clients.kube.apply(service)
    service["metadata"]["labels"]["extra"] = "yes"
    await clients.kube.apply(service)  # exists: merge-patched, not a conflict
    stored = await cluster.get("v1", "services", "svc")
    assert stored is not None and stored["metadata"]["labels"]["extra"] == "yes"
    path = f"/api/v1/namespaces/{cluster.ns}/services/svc"
    assert await clients.kube.delete(path) is True
    assert await clients.kube.delete(path) is False
    assert await clients.kube.get(path) is None


# --- pickup: what a bot host's Pods say about a bot ------------------------------------------


def test_pickup_reads_only_ready_endpoints_of_the_hosts_service() -> None:
    slices = {
        "items": [
            {
                "metadata": {"labels": {pickup.SERVICE_NAME_LABEL: "h"}},
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "targetRef": {"name": "h-1"}},  # ready unknown
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
                    {"addresses": ["fd00::3"], "conditions": {"ready": True}},
                ],
            },
            {
                "metadata": {"labels": {pickup.SERVICE_NAME_LABEL: "other"}},
                "endpoints": [{"addresses": ["10.0.0.9"]}],
            },
        ]
    }
    assert pickup.ready_pods(slices, "h", 9000) == [
        pickup.PodAddress("h-1", "http://10.0.0.1:8080/readyz"),
        pickup.PodAddress("fd00::3", "http://[fd00::3]:8080/readyz"),
    ]


@pytest.mark.parametrize(
    ("bots", "state"),
    [
        ({"b": {"status": "serving", "id": 7}}, ("serving", "")),
        # The same name with another bot's token: an older file, not this bot yet.
        ({"b": {"status": "serving", "id": 8}}, ("not_loaded", "serves bot id 8")),
        ({"a": {"status": "serving", "id": 1}}, ("not_loaded", "")),
        ({"b": {"status": "token_refused", "id": 7}}, ("unhealthy", "token_refused")),
        (
            {"b.env": {"status": "invalid", "error": "no BOT_TOKEN"}},
            ("unhealthy", "invalid: no BOT_TOKEN"),
        ),
    ],
)
def test_pickup_reads_the_hosts_report(bots: dict[str, Any], state: tuple[str, str]) -> None:
    body = {"status": "ready", "checks": {"database": {"status": "ok"}, "bots": bots}}
    assert pickup.bot_state(body, "b", "7") == state
    assert pickup.bot_state({"status": "ready", "checks": {}}, "b", "7")[0] == "unanswered"
