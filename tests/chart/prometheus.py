"""Real tools for the chart's Prometheus objects: prometheus-operator's CRD schemas (from
../shared/schemas, never copied into the repository) and Debian's promtool."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import REGISTRY

from .helpers import REPO_ROOT, Manifest

SCHEMAS_DIR = REPO_ROOT.parent / "shared" / "schemas" / "prometheus-operator"
CRD_FILES = {
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


def _closed(node: Any) -> Any:
    """The schema as the API server applies it: a field the schema does not name is pruned
    from an object, which for a chart means silently lost. Closing every object that lists
    its properties (and does not preserve unknown fields) turns that loss into an error."""
    if isinstance(node, dict):
        closed = {key: _closed(value) for key, value in node.items()}
        if (
            "properties" in closed
            and "additionalProperties" not in closed
            and not closed.get("x-kubernetes-preserve-unknown-fields")
        ):
            closed["additionalProperties"] = False
        return closed
    if isinstance(node, list):
        return [_closed(item) for item in node]
    return node


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """openAPIV3Schema of the served version of the kind's CRD, closed (see _closed)."""
    path = SCHEMAS_DIR / CRD_FILES[kind]
    if not SCHEMAS_DIR.is_dir():
        pytest.skip(f"prometheus-operator's CRDs are not beside this clone ({SCHEMAS_DIR})")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    # metadata is `type: object` in every CRD; the API server checks it, not the schema.
    schema["properties"]["metadata"] = {"type": "object"}
    return _closed(schema)


def crd_errors(obj: Manifest) -> list[str]:
    schema = crd_schema(obj["kind"])
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


def promtool() -> str:
    tool = shutil.which("promtool")
    # .ci/run installs Debian's `prometheus` package; a developer without it gets a clear line.
    assert tool, "promtool is missing: apt-get install prometheus (.ci/run installs it)"
    return tool


def run_promtool(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Series Prometheus makes itself for every target, next to what the bot exports.
PROMETHEUS_SERIES = {"up"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_metric_names() -> set[str]:
    """Every series name the bot's /metrics can carry: its own metrics (also those no update
    has touched yet), Telegram's view of delivery, and prometheus-client's default collectors."""
    import bot.observability.metrics  # noqa: F401, PLC0415 - registers the bot's metrics
    from bot.observability import webhook_info  # noqa: PLC0415 - its collector registers only in serve

    names = {webhook_info.PENDING, webhook_info.ERROR_AGE, webhook_info.URL_EXPECTED}
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (each written with a `{...}` selector)."""
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
