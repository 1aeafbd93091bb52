"""What a TelegramBot author may ask for, as the platform operator allows it (issue 22, finding 9).

Creating a TelegramBot starts a Pod of the author's image and an Ingress with the author's
annotations: as much as creating a Pod and an Ingress. A platform that grants `create` on
TelegramBots, but not on Pods, narrows that with ALLOWED_IMAGES and ALLOWED_INGRESS_ANNOTATIONS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import operator_with
from hello_operator import policy
from operator_support import Cluster, FakeBotApi, OperatorThread, condition
from test_operator_integration import (
    BOTS,
    IMAGE_1,
    bot_manifest,
    complete_job,
    create_token_secret,
    deployed,
    wait_condition,
)

ALLOWED = "registry.example/hello-bot:,registry.example/team-images/"
ANNOTATIONS = "cert-manager.io/,traefik.ingress.kubernetes.io/router.tls"


@pytest.fixture
async def strict_operator(
    kubeconfig: Path, bot_api: FakeBotApi, pg_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[OperatorThread]:
    async with operator_with(
        monkeypatch,
        kubeconfig,
        bot_api,
        MIGRATION_POLL_SECONDS="0.2",
        BLOCKED_RETRY_SECONDS="0.5",
        ALLOWED_IMAGES=ALLOWED,
        ALLOWED_INGRESS_ANNOTATIONS=ANNOTATIONS,
    ) as running:
        yield running


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example/hello-bot:1.0.0", True),
        ("registry.example/team-images/shop@sha256:" + "a" * 64, True),
        (
            "registry.example/hello-bot-miner:1",
            False,
        ),  # a prefix ends where the author's part starts
        ("registry.example.evil.com/hello-bot:1", False),
        ("docker.io/library/alpine:3", False),
    ],
)
def test_images_by_prefix(image: str, allowed: bool) -> None:
    rules = policy.Policy.parse(images=ALLOWED, annotations="")
    assert (rules.problems({"image": image}) == []) is allowed


def test_empty_allows_anything_as_before() -> None:
    rules = policy.Policy.parse(images="", annotations="")
    spec = {"image": "docker.io/x:1", "webhook": {"annotations": {"a/b": "c"}}}
    assert rules.problems(spec) == []


def test_annotations_by_key_prefix() -> None:
    rules = policy.Policy.parse(images="", annotations=ANNOTATIONS)
    ok = {"cert-manager.io/cluster-issuer": "le", "traefik.ingress.kubernetes.io/router.tls": "1"}
    assert rules.problems({"image": "x", "webhook": {"annotations": ok}}) == []
    bad = {"traefik.ingress.kubernetes.io/router.middlewares": "kube-system-admin@kubernetescrd"}
    (problem,) = rules.problems({"image": "x", "webhook": {"annotations": ok | bad}})
    assert "spec.webhook.annotations" in problem
    assert "router.middlewares" in problem


@pytest.mark.usefixtures("strict_operator")
async def test_a_bot_outside_the_policy_gets_nothing(cluster: Cluster) -> None:
    await create_token_secret(cluster, "miner")
    manifest = bot_manifest("miner", image="docker.io/library/alpine:3")
    await cluster.create(BOTS, "telegrambots", manifest)
    bot = await wait_condition(cluster, "miner", "Ready", "NotAllowed", phase="Failed")
    assert "spec.image" in condition(bot, "Ready")["message"]
    assert await cluster.get("batch/v1", "jobs", "miner-migrate") is None
    for api, plural in [("apps/v1", "deployments"), ("v1", "secrets")]:
        name = "miner" if plural == "deployments" else "miner-generated"
        assert await cluster.get(api, plural, name) is None

    await create_token_secret(cluster, "shop")
    await cluster.create(BOTS, "telegrambots", bot_manifest("shop"))
    await complete_job(cluster, "shop", IMAGE_1)
    await deployed(cluster, "shop", IMAGE_1)
