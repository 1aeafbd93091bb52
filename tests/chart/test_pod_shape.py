"""One bot Pod shape: the chart's bot Deployment and the operator's, rendered for the same bot,
agree field by field except where ALLOWED says why; both read charts/hello-bot/files/bot-pod.yaml
and the bot.* defaults of values.yaml (operator/hello_operator/pod_shape.py)."""

from __future__ import annotations

import importlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import pytest
import yaml

from .helpers import CHART_DIR, FULLNAME, REPO_ROOT, REQUIRED, Manifest, deep_merge, one

BOT = "shop-bot"
HOST = "bot.example.com"
REDIS_URL = f"redis://{FULLNAME}-redis:6379/0"

# Where the two Deployments may differ, and why. Every entry must still be needed (the test
# fails on an allowance nothing uses), so the list shrinks when the two converge.
ALLOWED: dict[str, str] = {
    "selector.matchLabels.*": "each installer selects its own Pods: release vs TelegramBot name",
    "template.metadata.labels.*": "installer labels: Helm's release labels vs the operator's",
    "template.metadata.annotations.checksum/*": (
        "the chart rolls Pods when its ConfigMap or Secret changes; the operator has no ConfigMap "
        "(its settings are in the Pod template) and never rewrites its generated Secret's values"
    ),
    "template.spec.serviceAccountName": (
        "the chart makes a ServiceAccount per release; the operator's bots use the namespace's "
        "default one (both mount no token)"
    ),
    "template.spec.containers[bot].envFrom*": (
        "the chart keeps non-secret settings in a ConfigMap; this test merges its data into env"
    ),
    "template.spec.containers[bot].env[DATABASE_*": (
        "the chart's DATABASE_URL names its PostgreSQL, the password is a file; the operator "
        "provisions a database per bot and keeps the whole URL in a Secret"
    ),
    "template.spec.volumes[secrets]*": (
        "both mount the secrets as files at the same SECRETS_DIR; the chart's come from its one "
        "Secret, the operator's from several (the TelegramBot's token Secret, its generated one)"
    ),
    "template.spec.containers[bot].env[LOG_LEVEL]*": "the chart sets the bot's default (INFO)",
    "template.spec.containers[bot].env[OTEL_SERVICE_NAME]*": (
        "the chart sets the bot's default (PROJECT_NAME)"
    ),
    "template.spec.containers[bot].env[K8S_*": (
        "Downward API for the chart's tracing resource attributes (next entry)"
    ),
    "template.spec.containers[bot].env[OTEL_RESOURCE_ATTRIBUTES]*": (
        "the chart tags spans with Pod, namespace, node and its image tag; the operator's bots "
        "export no traces unless spec.env configures an exporter"
    ),
}
# Polling only: the chart always renders both; an empty WEBHOOK_URL means the same as none.
ALLOWED_POLLING: dict[str, str] = {
    "template.spec.containers[bot].env[WEBHOOK_URL]*": "empty in the chart, absent in the operator",
    "template.spec.containers[bot].env[WEBHOOK_PATH]*": "unused without WEBHOOK_URL",
}


@pytest.fixture
def operator_modules(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    # operator/ is a folder, not a package (it would shadow stdlib `operator`).
    monkeypatch.syspath_prepend(str(REPO_ROOT / "operator"))
    return {
        name: importlib.import_module(f"hello_operator.{name}")
        for name in ("bot_manifests", "pod_shape")
    }


def _chart_values(mode: str) -> dict[str, Any]:
    bot: dict[str, Any] = {"mode": mode, "projectName": BOT}
    if mode == "webhook":
        return {"bot": bot, "ingress": {"enabled": True, "host": HOST}}
    return {"bot": bot}


def _telegram_bot(mode: str, image: str) -> dict[str, Any]:
    """The TelegramBot that describes the chart's bot: same image, token Secret and Redis."""
    spec: dict[str, Any] = {
        "image": image,
        "token": {"secretName": FULLNAME, "key": "bot-token"},
        "redis": {"url": REDIS_URL},
    }
    if mode == "webhook":
        spec["webhook"] = {"host": HOST}
    return spec


def _named(items: list[Any]) -> dict[str, Any] | list[Any]:
    """Lists of named objects (containers, env, ports, volumes, mounts) become maps by name."""
    if items and all(isinstance(i, dict) and "name" in i for i in items):
        return {f"[{i['name']}]": {k: v for k, v in i.items() if k != "name"} for i in items}
    return items


def flatten(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, list):
        node = _named(node)
    if isinstance(node, dict) and node:
        leaves: dict[str, Any] = {}
        for key, value in node.items():
            joiner = "" if key.startswith("[") or not path else "."
            leaves |= flatten(value, f"{path}{joiner}{key}")
        return leaves
    return {path: node}


def _with_config_map(objects: list[Manifest], deployment: Manifest) -> dict[str, Any]:
    """The chart's Deployment spec with its ConfigMap's data in env, as the kubelet sees it."""
    spec = yaml.safe_load(yaml.safe_dump(deployment["spec"]))
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for source in container["envFrom"]:
        data = one(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
        env = {name: {"name": name, "value": value} for name, value in data.items()} | env
    container["env"] = list(env.values())
    return spec


def differences(chart: dict[str, Any], operator: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    left, right = flatten(chart), flatten(operator)
    missing = object()
    return {
        path: (left.get(path, "<absent>"), right.get(path, "<absent>"))
        for path in sorted(left.keys() | right.keys())
        if left.get(path, missing) != right.get(path, missing)
    }


def _render_both(
    render_chart: Callable[[dict[str, Any]], list[Manifest]],
    operator_modules: dict[str, ModuleType],
    chart_dir: Path,
    mode: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(chart's Deployment spec, operator's) for one bot, the operator reading `chart_dir`."""
    objects = render_chart(_chart_values(mode))
    deployment = one(objects, "Deployment", FULLNAME)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    bot_manifests, pod_shape = operator_modules["bot_manifests"], operator_modules["pod_shape"]
    api_url = one(objects, "ConfigMap", FULLNAME)["data"]["TELEGRAM_API_URL"]
    theirs = bot_manifests.render_deployment(
        BOT,
        _telegram_bot(mode, container["image"]),
        container["image"],
        api_url,
        pod_shape.load_bot_pod(chart_dir),
    )
    return _with_config_map(objects, deployment), theirs["spec"]


def _allowed(mode: str) -> dict[str, str]:
    return ALLOWED | (ALLOWED_POLLING if mode == "polling" else {})


def _matches(path: str, pattern: str) -> bool:
    """`*` is the only wildcard; brackets are literal (they name list items)."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), path) is not None


def _unexplained(found: dict[str, tuple[Any, Any]], allowed: dict[str, str]) -> dict[str, Any]:
    return {p: v for p, v in found.items() if not any(_matches(p, a) for a in allowed)}


@pytest.mark.parametrize("mode", ["webhook", "polling"])
def test_chart_and_operator_render_the_same_bot_pod(
    render, operator_modules: dict[str, ModuleType], mode: str
) -> None:
    chart, operator = _render_both(render, operator_modules, CHART_DIR, mode)
    found = differences(chart, operator)
    assert _unexplained(found, _allowed(mode)) == {}
    # An allowance nothing needs any more is a place where a difference could hide later.
    unused = [a for a in _allowed(mode) if not any(_matches(p, a) for p in found)]
    assert unused == []
    # What the issue found drifted, now asserted on both sides.
    for spec in (chart, operator):
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["DB_POOL_SIZE"], env["DB_MAX_OVERFLOW"]) == ("10", "5")
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
        assert container["readinessProbe"]["failureThreshold"] == 2
        assert pod["enableServiceLinks"] is False
        assert pod["terminationGracePeriodSeconds"] == 35
    expected = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        if mode == "webhook"
        else {"type": "Recreate"}
    )
    assert chart["strategy"] == operator["strategy"] == expected


def test_the_comparison_catches_a_one_sided_change(
    render, operator_modules: dict[str, ModuleType]
) -> None:
    chart, operator = _render_both(render, operator_modules, CHART_DIR, "webhook")
    (container,) = operator["template"]["spec"]["containers"]
    container["readinessProbe"]["failureThreshold"] = 3
    del container["lifecycle"]
    found = _unexplained(differences(chart, operator), ALLOWED)
    assert set(found) == {
        "template.spec.containers[bot].readinessProbe.failureThreshold",
        "template.spec.containers[bot].lifecycle.preStop.exec.command",
    }


def test_both_read_the_shape_from_the_charts_files(
    tmp_path: Path, operator_modules: dict[str, ModuleType]
) -> None:
    """Edit only the chart's files, and both Deployments follow: one source, not two copies."""
    chart_dir = tmp_path / "hello-bot"
    shutil.copytree(CHART_DIR, chart_dir, symlinks=False)
    shape_file = chart_dir / "files" / "bot-pod.yaml"
    shape = yaml.safe_load(shape_file.read_text())
    shape["container"]["readinessProbe"]["failureThreshold"] = 7
    shape["pod"]["securityContext"]["fsGroupChangePolicy"] = "Always"
    shape_file.write_text(yaml.safe_dump(shape))
    values_file = chart_dir / "values.yaml"
    values = yaml.safe_load(values_file.read_text())
    values["bot"]["dbPoolSize"] = 12
    values_file.write_text(yaml.safe_dump(values))

    with helm.Chart.load(chart_dir) as edited:

        def render_edited(values: dict[str, Any]) -> list[Manifest]:
            rendered = edited.render(deep_merge(REQUIRED, values), name="demo", namespace="bots")
            return [
                doc
                for path, text in sorted(rendered.items())
                if not path.endswith("NOTES.txt")
                for doc in yaml.safe_load_all(text)
                if doc
            ]

        chart, operator = _render_both(render_edited, operator_modules, chart_dir, "webhook")
    assert _unexplained(differences(chart, operator), ALLOWED) == {}
    for spec in (chart, operator):
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        assert container["readinessProbe"]["failureThreshold"] == 7
        assert pod["securityContext"]["fsGroupChangePolicy"] == "Always"
        assert {e["name"]: e.get("value") for e in container["env"]}["DB_POOL_SIZE"] == "12"


def test_the_operator_reads_the_chart_values_the_chart_renders(render) -> None:
    """The tunables' defaults live in values.yaml only: the file the operator image ships."""
    bot = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["bot"]
    (container,) = one(render({}), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == bot["resources"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(bot["preStopSeconds"]),
    ]


def test_a_chart_without_the_shape_file_fails_clearly(tmp_path: Path) -> None:
    copy = tmp_path / "hello-bot"
    shutil.copytree(CHART_DIR, copy, symlinks=False)
    (copy / "files" / "bot-pod.yaml").unlink()
    with helm.Chart.load(copy) as broken, pytest.raises(helm.HelmError) as caught:
        broken.render(REQUIRED, name="demo", namespace="bots")
    assert "files/bot-pod.yaml is missing" in str(caught.value)
