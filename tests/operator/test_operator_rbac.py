"""operator.watchNamespaces: the operator serves named namespaces with the RBAC the chart renders.

The real kopf loop runs as `kopf run --namespace <ns>` against the emulator; every request it
sends must be one that the chart's Role (in that namespace) or its ClusterRole grants, and a
TelegramBot in a namespace it does not serve gets no request at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import helm_python as helm
import pytest
from conftest import operator_with
from hello_operator import host_manifests
from operator_support import (
    TEST_USER_AGENT,
    ApiCall,
    Cluster,
    DeploymentController,
    FakeBotApi,
    OperatorThread,
    StampingEmulator,
    eventually,
    grants,
)
from test_operator_integration import (
    BOTS,
    IMAGE_1,
    bot_manifest,
    complete_job,
    create_token_secret,
    wait_condition,
)
from test_operator_runtime import served_by, start_shared

from tests.chart.helpers import CHART_DIR, REQUIRED, deep_merge, parse_manifests

UNSERVED = "not-served"
RBAC_KINDS = ("ClusterRole", "Role")


def rendered_rbac(namespace: str) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """(kind, namespace) -> rules, as the chart renders them for watchNamespaces [namespace]."""
    values = {"operator": {"enabled": True, "watchNamespaces": [namespace]}}
    with helm.Chart.load(CHART_DIR) as chart:
        objects = parse_manifests(
            chart.render(deep_merge(REQUIRED, values), name="demo", namespace="hello-bot")
        )
    return {
        (obj["kind"], obj["metadata"].get("namespace")): obj["rules"]
        for obj in objects
        if obj["kind"] in RBAC_KINDS
    }


def denied(calls: list[ApiCall], rbac: dict[tuple[str, str | None], list[dict[str, Any]]]) -> list:
    """The calls neither the ClusterRole nor the Role of the call's namespace grants."""
    cluster = grants(rbac["ClusterRole", None])
    out = []
    for call in calls:
        if not call.verb:
            continue  # discovery
        wanted = (call.group, call.resource, call.verb)
        role = grants(rbac.get(("Role", call.namespace), [])) if call.namespace else set()
        if wanted not in cluster | role:
            out.append(call)
    return out


@pytest.fixture
async def namespaced_operator(
    emulator: StampingEmulator,
    namespace: str,
    *,
    kubeconfig: Path,
    bot_api: FakeBotApi,
    pg_cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[OperatorThread]:
    """Served: the test's namespace only. Both namespaces exist (kopf lists them)."""
    async with aiohttp.ClientSession(
        base_url=str(emulator.url), headers={"User-Agent": TEST_USER_AGENT}
    ) as session:
        for name in (namespace, UNSERVED):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            async with session.post("/api/v1/namespaces", json=body) as response:
                assert response.status in {200, 201}, await response.text()
    emulator.rbac = {
        grant for rules in rendered_rbac(namespace).values() for grant in grants(rules)
    }
    async with operator_with(
        monkeypatch,
        kubeconfig,
        bot_api,
        [namespace],
        MIGRATION_POLL_SECONDS="0.2",
        BLOCKED_RETRY_SECONDS="0.5",
        HOST_PICKUP_SECONDS="0",
    ) as running:
        yield running


@pytest.mark.usefixtures("namespaced_operator")
async def test_a_namespaced_operator_needs_only_the_chart_s_role(
    cluster: Cluster, emulator: StampingEmulator, bot_api: FakeBotApi
) -> None:
    elsewhere = Cluster(cluster.session, UNSERVED)
    await create_token_secret(elsewhere, "ignored")
    await elsewhere.create(BOTS, "telegrambots", bot_manifest("ignored"))
    # A Dedicated bot through to Ready, a Shared one onto its host; then both deleted.
    await create_token_secret(cluster, "solo")
    await cluster.create(BOTS, "telegrambots", bot_manifest("solo", webhook={"host": "s.example"}))
    await complete_job(cluster, "solo", IMAGE_1)
    await DeploymentController(cluster).report("solo")
    await wait_condition(cluster, "solo", "Ready", "DeploymentAvailable")
    await start_shared(cluster, "guest")
    await served_by(cluster, "guest", host_manifests.host_name(IMAGE_1))
    for name in ("solo", "guest"):
        await cluster.delete(BOTS, "telegrambots", name)

    async def released() -> bool:
        return all([await cluster.bot(name) is None for name in ("solo", "guest")])

    await eventually(released, what="both TelegramBots released by their finalizers")
    assert "deleteWebhook" in bot_api.methods()

    calls = emulator.operator_requests
    assert denied(calls, rendered_rbac(cluster.ns)) == []
    # Cluster-wide, kopf only lists and watches CRDs and namespaces.
    assert {c.resource for c in calls if c.verb and c.namespace is None} <= {
        "customresourcedefinitions",
        "namespaces",
    }
    assert [c for c in calls if c.namespace == UNSERVED] == []
    assert "status" not in (await elsewhere.bot("ignored") or {})
