"""The operator watches its children: their changes reach the TelegramBot's status within 5 s.

The integration tests run the operator with a 60 s migration retry, and its webhook timer only
runs every 60 s, so a bound of 5 s can be met only through the watches on Deployments and Jobs.
Each bound is measured from the moment the simulated controller stored the child's new status.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from hello_operator import bot_manifests, conditions, on_children
from hello_operator.pod_shape import load_bot_pod
from operator_support import (
    Cluster,
    DeploymentController,
    JobController,
    StampingEmulator,
    condition,
    eventually,
)
from test_operator_integration import (
    BOTS,
    IMAGE_1,
    IMAGE_2,
    bot_manifest,
    create_token_secret,
    wait_condition,
)

WITHIN = 5.0
ROOT = Path(__file__).resolve().parents[2]
OWNER_UID = "uid-1"
LATENCY = logging.getLogger("hello_operator.tests.latency")


async def reaches(
    cluster: Cluster, name: str, type_: str, reason: str, *, since: float
) -> dict[str, Any]:
    """The condition shows `reason` within `WITHIN` seconds of `since`."""

    async def probe() -> dict[str, Any] | None:
        bot = await cluster.bot(name)
        return bot if condition(bot, type_).get("reason") == reason else None

    bot = await eventually(probe, what=f"{type_} {reason}", deadline=WITHIN, since=since)
    latency = asyncio.get_running_loop().time() - since
    # For the record (`--log-cli-level=INFO`): how far under the bound the watches are.
    LATENCY.info("%s %s %s %.3f s after its cause", name, type_, reason, latency)
    return bot


async def migrating_bot(cluster: Cluster, name: str, **spec: Any) -> str:
    """A TelegramBot whose migration Job runs, reported as such; returns the Job's name."""
    await create_token_secret(cluster, name)
    await cluster.create(BOTS, "telegrambots", bot_manifest(name, **spec))
    await wait_condition(cluster, name, "Migrated", "MigrationRunning", phase="Migrating")
    return bot_manifests.job_name(name, IMAGE_1)


@pytest.mark.usefixtures("watching_operator")
async def test_ready_follows_the_deployment_within_5s(cluster: Cluster) -> None:
    name = "watched"
    jobs, deployments = JobController(cluster), DeploymentController(cluster)
    await jobs.succeed(await migrating_bot(cluster, name, webhook={"host": "w.example.com"}))
    await wait_condition(cluster, name, "Ready", "DeploymentNotReady", phase="Deploying")

    ready_at = await deployments.report(name)
    bot = await reaches(cluster, name, "Ready", "DeploymentAvailable", since=ready_at)
    assert condition(bot, "Ready")["status"] == "True"
    assert condition(bot, "Ready")["message"] == "1/1 replicas ready"
    assert condition(bot, "Ready")["observedGeneration"] == 1
    assert bot["status"]["phase"] == "Running"

    lost_at = await deployments.report(name, ready=0)
    bot = await reaches(cluster, name, "Ready", "DeploymentNotReady", since=lost_at)
    assert condition(bot, "Ready")["status"] == "False"
    assert condition(bot, "Ready")["message"] == "0/1 replicas ready"
    assert bot["status"]["phase"] == "Deploying"


@pytest.mark.usefixtures("watching_operator")
async def test_migration_noticed_within_5s_of_the_job_succeeding(cluster: Cluster) -> None:
    name = "migrator"
    job = await migrating_bot(cluster, name)
    assert await cluster.get("apps/v1", "deployments", name) is None

    succeeded_at = await JobController(cluster).succeed(job)
    bot = await reaches(cluster, name, "Migrated", "MigrationSucceeded", since=succeeded_at)
    assert bot["status"]["migratedImage"] == IMAGE_1
    assert bot["status"]["phase"] == "Deploying"
    assert condition(bot, "Migrated")["observedGeneration"] == 1
    deployment = await cluster.get("apps/v1", "deployments", name)
    assert deployment is not None
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE_1


@pytest.mark.usefixtures("watching_operator")
async def test_failed_job_reported_within_5s(cluster: Cluster) -> None:
    name = "failing"
    job = await migrating_bot(cluster, name)

    failed_at = await JobController(cluster).fail(job)
    bot = await reaches(cluster, name, "Migrated", "MigrationFailed", since=failed_at)
    assert condition(bot, "Migrated")["status"] == "False"
    assert job in condition(bot, "Migrated")["message"]
    assert bot["status"]["phase"] == "Failed"
    assert await cluster.get("apps/v1", "deployments", name) is None


@pytest.mark.usefixtures("watching_operator")
async def test_the_api_server_filters_the_watches(emulator: StampingEmulator) -> None:
    """Only the operator's own children stream in (the emulator itself ignores selectors)."""

    async def selectors() -> dict[str, set[str]] | None:
        seen: dict[str, set[str]] = {"deployments": set(), "jobs": set()}
        for request in list(emulator):
            plural = request.resource.plural if request.resource is not None else ""
            if plural in seen and request.action in {kmock.action.LIST, kmock.action.WATCH}:
                seen[plural].add(request.params.get("labelSelector", ""))
        return seen if all(seen.values()) else None

    seen = await eventually(selectors, what="watches on Deployments and Jobs")
    managed = "app.kubernetes.io/managed-by=hello-bot-operator"
    assert seen == {
        # Bots' and bot hosts' Deployments; the handlers tell them apart by component.
        "deployments": {managed},
        "jobs": {f"app.kubernetes.io/component=migration,{managed}"},
    }


async def test_a_stale_json_patch_is_refused_as_the_api_server_does(cluster: Cluster) -> None:
    """422, not 500: kopf then drops its finalizer patch for the next cycle instead of retrying it.

    A timer and the handlers both patch a new TelegramBot with `test resourceVersion`; with a 500
    kopf retried the stale patch for longer than the tests wait (a CI failure on 2026-11-27).
    """
    created = await cluster.create(BOTS, "telegrambots", bot_manifest("stale"))
    version = created["metadata"]["resourceVersion"]
    await cluster.patch(BOTS, "telegrambots", "stale", {"metadata": {"labels": {"a": "b"}}})
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["hello-bot.dev/operator"]},
    ]
    headers = {"Content-Type": "application/json-patch+json"}
    url = cluster.path(BOTS, "telegrambots", "stale")
    async with cluster.session.patch(url, json=stale, headers=headers) as response:
        assert response.status == 422, await response.text()
    bot = await cluster.bot("stale")
    assert bot is not None and "finalizers" not in bot["metadata"]


# --- the decisions behind the handlers, without an operator --------------------------------


def owned(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    ref = {
        "apiVersion": BOTS,
        "kind": "TelegramBot",
        "name": "echo",
        "uid": OWNER_UID,
        "controller": True,
    }
    return {"kind": kind, "metadata": {"name": name, "ownerReferences": [ref]}, **extra}


def bot_with(ready_reason: str | None, phase: str = "Deploying", **status: Any) -> dict[str, Any]:
    conds = []
    if ready_reason is not None:
        conds.append({"type": "Ready", "status": "False", "reason": ready_reason, "message": "m"})
    meta = {"name": "echo", "uid": OWNER_UID, "generation": 1}
    return {"metadata": meta, "status": {"phase": phase, "conditions": conds, **status}}


def test_the_label_filters_select_what_the_operator_renders() -> None:
    spec = {"image": IMAGE_1, "token": {"secretName": "t"}}
    pod = load_bot_pod()
    deployment = bot_manifests.render_deployment(
        "echo", spec, IMAGE_1, "https://api.telegram.org", pod
    )
    job = bot_manifests.render_job("echo", spec, "https://api.telegram.org", pod)
    assert on_children.DEPLOYMENT_LABELS.items() <= deployment["metadata"]["labels"].items()
    assert on_children.JOB_LABELS.items() <= job["metadata"]["labels"].items()
    assert not on_children.JOB_LABELS.items() <= deployment["metadata"]["labels"].items()
    assert not on_children.DEPLOYMENT_LABELS.items() <= job["metadata"]["labels"].items()


def test_controller_ref_is_the_owning_telegrambot_only() -> None:
    child = owned("Deployment", "echo")
    assert on_children.controller_ref(child) == child["metadata"]["ownerReferences"][0]
    child["metadata"]["ownerReferences"][0]["controller"] = False
    assert on_children.controller_ref(child) is None
    assert on_children.controller_ref({"metadata": {}}) is None
    foreign = owned("Deployment", "echo")
    foreign["metadata"]["ownerReferences"][0]["kind"] = "ReplicaSet"
    assert on_children.controller_ref(foreign) is None


@pytest.mark.parametrize(
    ("ready_reason", "ready_replicas", "phase", "expected"),
    [
        ("DeploymentNotReady", 1, "Running", ("True", "DeploymentAvailable")),
        ("DeploymentAvailable", 0, "Deploying", ("False", "DeploymentNotReady")),
        # Reconcile's reasons stay until reconcile itself clears them.
        ("TokenSecretNotFound", 1, None, None),
        ("InvalidSpec", 1, None, None),
        # Not deployed by reconcile yet.
        (None, 1, None, None),
    ],
)
def test_readiness_change(
    ready_reason: str | None,
    ready_replicas: int,
    phase: str | None,
    expected: tuple[str, str] | None,
) -> None:
    deployment = owned("Deployment", "echo", spec={"replicas": 1})
    deployment["status"] = {"readyReplicas": ready_replicas}
    ref = on_children.controller_ref(deployment)
    assert ref is not None
    patch = on_children.readiness_change(ref, deployment)(bot_with(ready_reason))
    if expected is None:
        assert patch is None
        return
    assert patch is not None
    ready = conditions.find(patch["conditions"], "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == expected
    assert patch["phase"] == phase


def test_readiness_change_writes_nothing_twice_nor_for_a_namesake() -> None:
    deployment = owned("Deployment", "echo", spec={"replicas": 1}, status={"readyReplicas": 0})
    ref = on_children.controller_ref(deployment)
    assert ref is not None
    same = bot_with("DeploymentNotReady")
    same["status"]["conditions"][0]["message"] = "0/1 replicas ready"
    assert on_children.readiness_change(ref, deployment)(same) is None
    namesake = bot_with("DeploymentAvailable")
    namesake["metadata"]["uid"] = "another"
    assert on_children.readiness_change(ref, deployment)(namesake) is None
    deleting = bot_with("DeploymentAvailable")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert on_children.readiness_change(ref, None)(deleting) is None
    gone = on_children.readiness_change(ref, None)(bot_with("DeploymentAvailable"))
    assert gone is not None
    assert conditions.find(gone["conditions"], "Ready")["reason"] == "DeploymentMissing"


def waiting_bot(
    image: str = IMAGE_1, generation: int = 1, migrated_image: str = "", **meta: Any
) -> dict[str, Any]:
    migrated = {
        "type": "Migrated",
        "status": "False",
        "reason": "MigrationRunning",
        "observedGeneration": 1,
    }
    return {
        "metadata": {"name": "echo", "uid": OWNER_UID, "generation": generation, **meta},
        "spec": {"image": image},
        "status": {"migratedImage": migrated_image, "conditions": [migrated]},
    }


@pytest.mark.parametrize(
    ("bot", "waits"),
    [
        (waiting_bot(), True),
        # The spec changed since reconcile last looked: its own handlers go first.
        (waiting_bot(generation=2), False),
        # An older image's Job: the bot waits for another one.
        (waiting_bot(image=IMAGE_2), False),
        (waiting_bot(deletionTimestamp="2026-01-01T00:00:00Z"), False),
        (waiting_bot(uid="another"), False),
        # Already migrated (the owner's retry came first).
        (waiting_bot(migrated_image=IMAGE_1), False),
    ],
    ids=["waiting", "spec-changed", "other-image", "deleting", "namesake", "done"],
)
def test_waits_for(bot: dict[str, Any], waits: bool) -> None:
    job = owned("Job", bot_manifests.job_name("echo", IMAGE_1))
    ref = on_children.controller_ref(job)
    assert ref is not None
    assert on_children.waits_for(bot, job, ref) is waits


def test_cluster_role_lets_the_operator_watch_its_children() -> None:
    """The chart's copy of the role is held equal to this one by tests/chart."""
    rules = yaml.safe_load((ROOT / "k8s" / "operator" / "clusterrole.yaml").read_text())["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for group, resource in [("apps", "deployments"), ("batch", "jobs")]:
        assert {(group, resource, "list"), (group, resource, "watch")} <= granted
    # Jobs go with their TelegramBot (owner reference) or their TTL; never by the operator.
    assert ("batch", "jobs", "delete") not in granted
