"""The `operator` image: its entrypoint starts kopf, which answers the liveness endpoint and
reconciles a TelegramBot through the Kubernetes API (the kmock emulator of tests/operator)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.operator.operator_support import (
    Cluster,
    StampingEmulator,
    eventually,
    kubernetes_emulator,
)

from .conftest import ContainerProcess, chart_memory_limit
from .engine import Engine

LIVENESS = "--liveness=http://0.0.0.0:8080/healthz"


@pytest.fixture
async def emulator() -> AsyncIterator[StampingEmulator]:
    async with kubernetes_emulator() as k8s:
        yield k8s


@pytest.fixture
def kubeconfig(tmp_path: Path, emulator: StampingEmulator) -> Path:
    """The emulator's address for kopf; readable by the container's uid 10001."""
    server = str(emulator.url).rstrip("/")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    return path


async def test_operator_image_runs_kopf_live_and_reconciling(
    engine: Engine,
    image: Callable[[str], str],
    make_container: Callable[..., ContainerProcess],
    kubeconfig: Path,
    emulator: StampingEmulator,
) -> None:
    operator_image = image("operator")
    entrypoint = json.loads(engine.image_config(operator_image, "Entrypoint"))
    assert entrypoint[:2] == ["kopf", "run"]
    assert LIVENESS in entrypoint
    operator = make_container(
        operator_image,
        [],
        env={"KUBECONFIG": "/kube/config", "TELEGRAM_API_URL": "http://127.0.0.1:9"},
        memory=chart_memory_limit("operator"),
        mounts=[f"{kubeconfig}:/kube/config:ro"],
        entrypoint=entrypoint[0],
    )
    # The image's own command line, but for the liveness port: the tests share the host's
    # network, where 8080 may be taken.
    probe = f"--liveness=http://127.0.0.1:{operator.port}/healthz"
    operator.argv += [probe if arg == LIVENESS else arg for arg in entrypoint[1:]]
    await operator.start(wait_ready=False, timeout=90)

    async with aiohttp.ClientSession(base_url=str(emulator.url)) as session:
        cluster = Cluster(session, "image-test")
        manifest = {
            "apiVersion": "hello-bot.dev/v1alpha1",
            "kind": "TelegramBot",
            "metadata": {"name": "imaged"},
            "spec": {"image": "registry.example/hello-bot:1.0.0", "token": {"secretName": "nope"}},
        }
        await cluster.create("hello-bot.dev/v1alpha1", "telegrambots", manifest)

        async def reconciled() -> list[str] | None:
            # The token Secret is missing: the operator says so instead of creating anything.
            bot = await cluster.bot("imaged") or {}
            conditions = bot.get("status", {}).get("conditions") or []
            reasons = [c["reason"] for c in conditions if "Secret" in c.get("reason", "")]
            return reasons if reasons and bot["metadata"].get("finalizers") else None

        await eventually(reconciled, what="the operator's finalizer and a missing-Secret condition")
    assert await operator.stop() == 0
