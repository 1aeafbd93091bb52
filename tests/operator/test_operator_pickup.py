"""A bot moving onto a bot host: Telegram is pointed there once the host's Pods say they serve it.

Each "host Pod" is the bot's real probe app (bot.serving.probes.create_probe_app) on 127.0.0.1 with
the real `BotHost.report` as its `bots`, so the JSON the operator reads is the host's own shape; the
host Service's EndpointSlices in the emulator point at them. Where the Pods answer, the operator
runs with HOST_PICKUP_SECONDS=0: the clock has run out from the start, so whatever holds the webhook
back is the host's word.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp.test_utils
import pytest
from operator_support import BOT_TOKEN, Cluster, FakeBotApi, condition, eventually
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from test_operator_runtime import HOST_1, operator, served_by, start_shared

from bot.hosting.host import BotHost, HostedBot
from bot.lifecycle import ServerState
from bot.serving.probes import create_probe_app

BOT_ID = int(BOT_TOKEN.split(":")[0])
SLICES = "discovery.k8s.io/v1"


class HostPod:
    """One host Pod's /readyz: the bots it holds, reported by the real BotHost.report."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bots: dict[int, HostedBot] = {}
        self.problems: dict[str, str] = {}
        self.port = 0

    def hold(self, bot: str, status: str | None = None, bot_id: int = BOT_ID) -> None:
        """The host read `bot`'s file: serving (HostedBot's own default) or `status`."""
        entry = SimpleNamespace(name=bot)
        tenant = SimpleNamespace(bot_id=bot_id)
        hosted = HostedBot(cast(Any, entry), cast(Any, None), cast(Any, tenant), cast(Any, None))
        if status is not None:
            hosted.status = status
        self.bots[bot_id] = hosted

    def report(self) -> dict[str, Any]:
        return BotHost.report(cast(BotHost, self))


@contextlib.asynccontextmanager
async def host_pods(*names: str) -> AsyncIterator[list[HostPod]]:
    # NullPool: each readiness ping opens and closes its own connection, none is left over.
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=NullPool)
    resources = SimpleNamespace(engine=engine, cache=SimpleNamespace(redis=None))
    pods, servers = [HostPod(name) for name in names], []
    try:
        for pod in pods:
            app = create_probe_app(
                resources=cast(Any, resources), schema=None, state=ServerState(), bots=pod.report
            )
            server = aiohttp.test_utils.TestServer(app, host="127.0.0.1")
            await server.start_server()
            servers.append(server)
            pod.port = int(server.port or 0)
        yield pods
    finally:
        for server in servers:
            await server.close()
        await engine.dispose()


def closed_port() -> int:
    """A loopback port nobody listens on (a Pod the operator cannot reach)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def endpoint_slice(
    cluster: Cluster, service: str, pod: str, port: int, *, ready: bool = True
) -> None:
    """One slice per Pod: on loopback the Pods differ by port, and a slice has one port list."""
    await cluster.create(
        SLICES,
        "endpointslices",
        {
            "apiVersion": SLICES,
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-{pod}",
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["127.0.0.1"],
                    "conditions": {"ready": ready, "serving": ready, "terminating": False},
                    "targetRef": {"kind": "Pod", "name": pod},
                }
            ],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        },
    )


async def waiting_with(cluster: Cluster, name: str, text: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        bot = await cluster.bot(name)
        ready = condition(bot, "Ready")
        waiting = ready.get("reason") == "HostLoadingBot" and text in ready.get("message", "")
        return bot if waiting else None

    return await eventually(probe, what=f"Ready HostLoadingBot saying {text!r}")


@pytest.fixture
async def answered_operator(
    kubeconfig: Path, bot_api: FakeBotApi, pg_cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    monkeypatch.setenv("HOST_PICKUP_POLL_SECONDS", "0.2")
    async with operator(monkeypatch, kubeconfig, bot_api, "0"):
        yield


@pytest.mark.usefixtures("answered_operator")
async def test_webhook_moves_once_every_ready_pod_serves_the_bot(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    async with host_pods("host-a", "host-b") as (pod_a, pod_b):
        pod_a.hold("other-bot", bot_id=42)  # another tenant of the host, served all along
        for pod in (pod_a, pod_b):
            await endpoint_slice(cluster, HOST_1, pod.name, pod.port)
        # Neither asked: a terminating Pod, and another Service's Pod (a server may not filter).
        await endpoint_slice(cluster, HOST_1, "host-old", closed_port(), ready=False)
        await endpoint_slice(cluster, "unrelated", "other", closed_port())
        await start_shared(cluster, "pickup")

        bot = await waiting_with(cluster, "pickup", "has not loaded the bot yet")
        assert condition(bot, "Ready")["message"] == (
            f"host {HOST_1} has not loaded the bot yet (2 Pods asked)"
        )
        pod_a.hold("pickup")  # a rolling update: one Pod has the file, the other not yet
        await waiting_with(cluster, "pickup", "has not loaded the bot yet (1 of 2 Pods asked)")
        assert "setWebhook" not in bot_api.methods()

        pod_b.hold("pickup")
        await served_by(cluster, "pickup", HOST_1)
    assert bot_api.set_webhooks[-1]["url"] == f"https://pickup.example.com/webhook/{BOT_ID}"


@pytest.mark.usefixtures("answered_operator")
async def test_an_unhealthy_report_keeps_the_webhook_waiting(
    cluster: Cluster, bot_api: FakeBotApi
) -> None:
    async with host_pods("host-a") as (pod,):
        await endpoint_slice(cluster, HOST_1, pod.name, pod.port)
        pod.hold("sickly", status="schema_behind")
        await start_shared(cluster, "sickly")

        bot = await waiting_with(cluster, "sickly", "unhealthy")
        assert condition(bot, "Ready")["message"] == (
            f"host {HOST_1} reports the bot unhealthy: host-a: schema_behind (1 Pod asked)"
        )
        # The file itself unusable: the host reports it by file name, with its error.
        pod.bots.clear()
        pod.problems["sickly.env"] = "could not start: ValueError"
        await waiting_with(cluster, "sickly", "host-a: invalid: could not start: ValueError")
        assert "setWebhook" not in bot_api.methods()

        pod.problems.clear()
        pod.hold("sickly")
        await served_by(cluster, "sickly", HOST_1)


async def test_unreachable_pods_fall_back_to_the_timed_wait(
    kubeconfig: Path,
    bot_api: FakeBotApi,
    pg_cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
    cluster: Cluster,
) -> None:
    """An operator that cannot reach the Pods waits HOST_PICKUP_SECONDS, then says it did."""
    monkeypatch.setenv("HOST_PICKUP_POLL_SECONDS", "0.2")
    await endpoint_slice(cluster, HOST_1, "host-a", closed_port())
    async with operator(monkeypatch, kubeconfig, bot_api, "3600"):
        await start_shared(cluster, "remote")
        bot = await waiting_with(cluster, "remote", "did not say whether it serves the bot")
    message = condition(bot, "Ready")["message"]
    assert "host-a: ClientConnectorError" in message
    assert "HOST_PICKUP_SECONDS (3600 s) after the bot's key was written" in message
    assert "setWebhook" not in bot_api.methods()

    # The key was written long enough ago (the clock is the Secret's, kept across restarts).
    async with operator(monkeypatch, kubeconfig, bot_api, "0"):
        await served_by(cluster, "remote", HOST_1)

        async def warned() -> list[dict[str, Any]]:
            events = await cluster.events()
            return [e for e in events if e.get("reason") == "HostPickupUnconfirmed"]

        (event, *_) = await eventually(warned, what="a HostPickupUnconfirmed Event")
    assert "webhook pointed after HOST_PICKUP_SECONDS (0 s)" in event["message"]
    assert "host-a: ClientConnectorError" in event["message"]
    assert bot_api.set_webhooks[-1]["url"] == f"https://remote.example.com/webhook/{BOT_ID}"
