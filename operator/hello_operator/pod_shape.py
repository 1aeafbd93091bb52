"""The bot's Pod shape, read from the Helm chart so the operator's bots and the chart's are alike.

Two files of `charts/hello-bot` are the one source: `files/bot-pod.yaml` (probes, security
contexts, rollout strategy, ...) and the `bot.*` defaults in `values.yaml` (grace period, preStop
pause, drain time, DB pool sizes, resources, port). The operator image ships both (Dockerfile,
target `operator`); a checkout reads the chart itself; `HELLO_BOT_CHART_DIR` names another copy.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_DIR_ENV = "HELLO_BOT_CHART_DIR"
SHAPE_FILE = Path("files") / "bot-pod.yaml"
VALUES_FILE = Path("values.yaml")
# Where the Dockerfile copies the two files, keeping their paths inside the chart.
BUNDLED_CHART_DIR = Path(__file__).resolve().parent / "chart"
CHECKOUT_CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "hello-bot"


class PodShapeError(RuntimeError):
    """The chart's files are missing or do not describe a usable Pod."""


@dataclass(frozen=True)
class BotPod:
    """What every bot Deployment shares; `render_*` hand out copies, never these dicts."""

    port: int
    termination_grace_period_seconds: int
    pre_stop_seconds: int
    shutdown_grace_seconds: int
    db_pool_size: int
    db_max_overflow: int
    resources: Mapping[str, Any]
    revision_history_limit: int
    strategy: Mapping[str, Mapping[str, Any]]
    pod: Mapping[str, Any]
    container: Mapping[str, Any]
    tmp_size_limit: str

    def strategy_for(self, mode: str) -> dict[str, Any]:
        return copy.deepcopy(dict(self.strategy[mode]))

    @classmethod
    def from_chart(cls, shape: Mapping[str, Any], bot_values: Mapping[str, Any]) -> BotPod:
        try:
            pod = cls(
                port=int(bot_values["port"]),
                termination_grace_period_seconds=int(bot_values["terminationGracePeriodSeconds"]),
                pre_stop_seconds=int(bot_values["preStopSeconds"]),
                shutdown_grace_seconds=int(bot_values["shutdownGraceSeconds"]),
                db_pool_size=int(bot_values["dbPoolSize"]),
                db_max_overflow=int(bot_values["dbMaxOverflow"]),
                resources=dict(bot_values["resources"]),
                revision_history_limit=int(shape["revisionHistoryLimit"]),
                strategy={
                    mode: dict(shape["strategy"][mode]) for mode in ("webhook", "polling", "host")
                },
                pod=dict(shape["pod"]),
                container=dict(shape["container"]),
                tmp_size_limit=str(shape["tmpSizeLimit"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the bot Pod shape lacks or mistypes {exc}"
            raise PodShapeError(msg) from exc
        drain = pod.pre_stop_seconds + pod.shutdown_grace_seconds
        if pod.termination_grace_period_seconds <= drain:
            # The chart's validateValues refuses the same: Pods would be killed mid-drain.
            msg = f"terminationGracePeriodSeconds must exceed preStop + drain ({drain})"
            raise PodShapeError(msg)
        return pod


def chart_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CHART_DIR_ENV):
        return Path(env[CHART_DIR_ENV])
    return BUNDLED_CHART_DIR if BUNDLED_CHART_DIR.is_dir() else CHECKOUT_CHART_DIR


def load_bot_pod(directory: Path | None = None) -> BotPod:
    """Read the shape once, at start-up; a missing or broken file stops the operator there."""
    root = chart_dir() if directory is None else directory
    documents: list[Mapping[str, Any]] = []
    for path in (root / SHAPE_FILE, root / VALUES_FILE):
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            msg = f"cannot read the bot Pod shape from {path} (set {CHART_DIR_ENV}): {exc}"
            raise PodShapeError(msg) from exc
        if not isinstance(document, Mapping):
            msg = f"{path} is not a YAML mapping"
            raise PodShapeError(msg)
        documents.append(document)
    shape, values = documents
    return BotPod.from_chart(shape, values.get("bot") or {})
