"""The operator finds the chart's bot Pod shape, or refuses to start with a message naming it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import kopf
import pytest
import yaml
from hello_operator import on_telegrambot, pod_shape
from hello_operator.settings import OperatorConfig

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "hello-bot"


def _chart_copy(tmp_path: Path) -> Path:
    """The two files the operator image ships, at their paths inside the chart."""
    copy = tmp_path / "chart"
    (copy / "files").mkdir(parents=True)
    for name in (pod_shape.SHAPE_FILE, pod_shape.VALUES_FILE):
        shutil.copyfile(CHART_DIR / name, copy / name)
    return copy


def test_a_checkout_reads_the_chart_itself() -> None:
    assert not pod_shape.BUNDLED_CHART_DIR.exists()
    assert pod_shape.chart_dir({}) == pod_shape.CHECKOUT_CHART_DIR
    assert pod_shape.CHECKOUT_CHART_DIR.resolve() == CHART_DIR
    assert pod_shape.load_bot_pod() == pod_shape.load_bot_pod(CHART_DIR)


def test_the_environment_names_another_copy(tmp_path: Path) -> None:
    copy = _chart_copy(tmp_path)
    values = yaml.safe_load((copy / "values.yaml").read_text())
    values["bot"]["dbMaxOverflow"] = 7
    (copy / "values.yaml").write_text(yaml.safe_dump(values))
    config = OperatorConfig.from_env({pod_shape.CHART_DIR_ENV: str(copy)})
    assert config.bot_pod.db_max_overflow == 7
    assert OperatorConfig.from_env({}).bot_pod.db_max_overflow == 5


def test_the_shape_carries_the_charts_defaults() -> None:
    pod = pod_shape.load_bot_pod(CHART_DIR)
    assert (pod.db_pool_size, pod.db_max_overflow) == (10, 5)
    assert (pod.pre_stop_seconds, pod.shutdown_grace_seconds) == (5, 20)
    assert pod.termination_grace_period_seconds == 35
    assert pod.strategy_for("webhook")["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert pod.strategy_for("polling") == {"type": "Recreate"}
    assert pod.pod["enableServiceLinks"] is False
    # Handed out as copies: a rendered manifest can be changed without changing the shape.
    pod.strategy_for("webhook")["type"] = "Recreate"
    assert pod.strategy_for("webhook")["type"] == "RollingUpdate"


@pytest.mark.parametrize("missing", [pod_shape.SHAPE_FILE, pod_shape.VALUES_FILE])
def test_a_missing_file_stops_the_start_with_its_path(tmp_path: Path, missing: Path) -> None:
    copy = _chart_copy(tmp_path)
    (copy / missing).unlink()
    with pytest.raises(pod_shape.PodShapeError) as caught:
        OperatorConfig.from_env({pod_shape.CHART_DIR_ENV: str(copy)})
    assert str(copy / missing) in str(caught.value)
    assert pod_shape.CHART_DIR_ENV in str(caught.value)


def test_an_incomplete_or_inconsistent_shape_is_refused(tmp_path: Path) -> None:
    copy = _chart_copy(tmp_path)
    shape = yaml.safe_load((copy / pod_shape.SHAPE_FILE).read_text())
    del shape["container"]
    (copy / pod_shape.SHAPE_FILE).write_text(yaml.safe_dump(shape))
    with pytest.raises(pod_shape.PodShapeError, match="container"):
        pod_shape.load_bot_pod(copy)

    copy = _chart_copy(tmp_path / "second")
    values = yaml.safe_load((copy / "values.yaml").read_text())
    values["bot"]["terminationGracePeriodSeconds"] = 25
    (copy / "values.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(pod_shape.PodShapeError, match="must exceed"):
        pod_shape.load_bot_pod(copy)


async def test_the_operator_stops_at_start_up_without_the_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PermanentError ends kopf's start-up at once (no retry loop), naming the file."""
    monkeypatch.setenv(pod_shape.CHART_DIR_ENV, str(tmp_path))
    with pytest.raises(kopf.PermanentError, match=re.escape(str(tmp_path / "files"))):
        await on_telegrambot.configure(settings=kopf.OperatorSettings(), memo=kopf.Memo())
