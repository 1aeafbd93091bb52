"""A webhook's DNS name belongs to one namespace (issue 22: a TelegramBot author gets nothing
that is not its own).

The operator writes an Ingress for `spec.webhook.host`. Were a second namespace's bot given the
same name, the Ingress controller could route the first bot's updates (and with them its secret
token header) to the second one's Pods: a tenant would read another's users and could forge
updates. The oldest TelegramBot claiming a name owns it; another namespace's claim is a condition.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from hello_operator.webhook_hosts import Claim, owner
from operator_support import TEST_USER_AGENT, Cluster, StampingEmulator, condition, eventually
from test_operator_integration import (
    BOTS,
    IMAGE_1,
    bot_manifest,
    complete_job,
    create_token_secret,
    wait_condition,
)

pytestmark = pytest.mark.usefixtures("running_operator")

HOST = "shop.example.com"


def claim(namespace: str, name: str, created: str) -> Claim:
    return Claim(namespace=namespace, name=name, created=created)


def test_the_oldest_claim_owns_the_name_whatever_the_order() -> None:
    first = claim("team-b", "evil", "2026-01-01T00:00:00Z")
    second = claim("team-a", "shop", "2026-01-02T00:00:00Z")
    assert owner([first, second]) == owner([second, first]) == first


def test_a_tie_is_broken_by_namespace_and_name_never_by_arrival() -> None:
    a = claim("team-a", "shop", "2026-01-01T00:00:00Z")
    b = claim("team-b", "evil", "2026-01-01T00:00:00Z")
    assert owner([a, b]) == owner([b, a]) == a


async def test_another_namespace_cannot_take_a_webhook_host(
    cluster: Cluster, emulator: StampingEmulator
) -> None:
    await create_token_secret(cluster, "shop")
    await cluster.create(BOTS, "telegrambots", bot_manifest("shop", webhook={"host": HOST}))
    await complete_job(cluster, "shop", IMAGE_1)
    await eventually(
        lambda: cluster.get("networking.k8s.io/v1", "ingresses", "shop"), what="shop's Ingress"
    )
    # creationTimestamp has a resolution of one second: the intruder is strictly younger.
    await asyncio.sleep(1.1)

    headers = {"User-Agent": TEST_USER_AGENT}
    async with aiohttp.ClientSession(base_url=str(emulator.url), headers=headers) as session:
        intruder = Cluster(session, f"{cluster.ns}-b")
        await create_token_secret(intruder, "evil")
        manifest: dict[str, Any] = bot_manifest("evil", webhook={"host": HOST})
        await intruder.create(BOTS, "telegrambots", manifest)
        bot = await wait_condition(intruder, "evil", "Ready", "WebhookHostTaken", phase="Blocked")
        assert HOST in condition(bot, "Ready")["message"]
        # The victim's namespace is not named to the intruder.
        assert cluster.ns not in condition(bot, "Ready")["message"]
        for api, plural in [
            ("networking.k8s.io/v1", "ingresses"),
            ("batch/v1", "jobs"),
            ("apps/v1", "deployments"),
        ]:
            found = await intruder.get(api, plural, "evil")
            assert found is None, f"{plural} made for a host another namespace owns"

    shop = await cluster.bot("shop")
    assert condition(shop, "Ready").get("reason") != "WebhookHostTaken"


async def test_bots_of_one_namespace_may_share_a_host(cluster: Cluster) -> None:
    for name, path in [("shop", "/webhook"), ("news", "/news")]:
        await create_token_secret(cluster, name)
        spec = bot_manifest(name, webhook={"host": HOST, "path": path})
        await cluster.create(BOTS, "telegrambots", spec)
    for name in ("shop", "news"):
        await complete_job(cluster, name, IMAGE_1)
        await eventually(
            lambda name=name: cluster.get("networking.k8s.io/v1", "ingresses", name),
            what=f"{name}'s Ingress",
        )
