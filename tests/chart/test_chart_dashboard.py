"""metrics.grafanaDashboard: a ConfigMap Grafana's sidecar picks up, whose dashboard has a
title, a unit and a grid place of its own for every panel, queries promtool parses, and only
metrics the bot exports."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .helpers import CHART_DIR, FULLNAME, NAMESPACE, Manifest, find, one
from .prometheus import exported_metric_names, metric_names_in, run_promtool

GRID_COLUMNS = 24
# Grafana's variables, as a Prometheus query would see them once Grafana filled them in.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$namespace": NAMESPACE,
    "$job": FULLNAME,
}
# What the issue asks the dashboard to show, by the metric that shows it.
REQUIRED_METRICS = {
    "hello_bot_updates_total",  # updates/s by outcome
    "hello_bot_update_duration_seconds_bucket",  # latency percentiles
    "hello_bot_updates_duplicate_total",  # duplicates skipped
    "hello_bot_bot_api_requests_total",  # Bot API calls and errors
    "hello_bot_bot_api_retries_total",  # Bot API retries
    "hello_bot_cache_requests_total",  # cache hit ratio
    "hello_bot_db_pool_connections_in_use",  # DB pool
    "process_resident_memory_bytes",  # RSS
    "process_cpu_seconds_total",  # CPU
    "hello_bot_webhook_pending_updates",  # Telegram's view of delivery
    "hello_bot_webhook_last_error_age_seconds",
    "hello_bot_webhook_url_expected",
}


@pytest.fixture(scope="module")
def dashboard_objects(render) -> list[Manifest]:
    return render({"metrics": {"grafanaDashboard": {"enabled": True}}})


@pytest.fixture(scope="module")
def dashboard(dashboard_objects: list[Manifest]) -> dict[str, Any]:
    config_map = one(dashboard_objects, "ConfigMap", f"{FULLNAME}-dashboard")
    (text,) = config_map["data"].values()
    return json.loads(text)


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard["panels"]


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in _panels(dashboard)
        for target in panel["targets"]
    ]


def test_no_dashboard_by_default(default_objects: list[Manifest]) -> None:
    assert [
        c for c in find(default_objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
    ] == []


def test_the_config_map_is_labelled_for_grafanas_sidecar(
    dashboard_objects: list[Manifest], render
) -> None:
    config_map = one(dashboard_objects, "ConfigMap", f"{FULLNAME}-dashboard")
    kubernetes_validate.validate(config_map, "1.33.0", strict=True)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    # The file in the chart is what Grafana gets, byte for byte.
    (text,) = config_map["data"].values()
    assert text == (CHART_DIR / "files" / "dashboard.json").read_text().rstrip("\n")
    elsewhere = one(
        render(
            {
                "metrics": {
                    "grafanaDashboard": {
                        "enabled": True,
                        "namespace": "monitoring",
                        "labels": {"grafana_dashboard": "hello", "team": "bots"},
                    }
                }
            }
        ),
        "ConfigMap",
        f"{FULLNAME}-dashboard",
    )
    assert elsewhere["metadata"]["namespace"] == "monitoring"
    assert elsewhere["metadata"]["labels"]["grafana_dashboard"] == "hello"
    assert elsewhere["metadata"]["labels"]["team"] == "bots"


def test_every_panel_has_a_title_a_unit_and_queries(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["title"].strip(), panel
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    titles = [p["title"] for p in panels]
    assert len(set(titles)) == len(titles)


def _cells(grid: dict[str, int]) -> set[tuple[int, int]]:
    return {
        (x, y)
        for x in range(grid["x"], grid["x"] + grid["w"])
        for y in range(grid["y"], grid["y"] + grid["h"])
    }


def test_panels_have_grid_places_that_do_not_overlap(dashboard: dict[str, Any]) -> None:
    panels = _panels(dashboard)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0, panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
    for first, second in combinations(panels, 2):
        shared = _cells(first["gridPos"]) & _cells(second["gridPos"])
        assert not shared, f"{first['title']!r} overlaps {second['title']!r}"


def test_the_overlap_check_can_fail() -> None:
    assert _cells({"x": 0, "y": 0, "w": 12, "h": 8}) & _cells({"x": 11, "y": 7, "w": 2, "h": 2})
    assert not _cells({"x": 0, "y": 0, "w": 12, "h": 8}) & _cells(
        {"x": 12, "y": 0, "w": 12, "h": 8}
    )


def _as_prometheus_sees_it(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable promtool cannot read: {expr}"
    return expr


def _rule_file(queries: list[tuple[str, str]], directory: Path) -> Path:
    """Each query as a recording rule: `promtool check rules` then parses every one of them."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": _as_prometheus_sees_it(expr)}
        for index, (_, expr) in enumerate(queries)
    ]
    path = directory / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def test_promtool_parses_every_panel_query(dashboard: dict[str, Any], tmp_path: Path) -> None:
    queries = _queries(dashboard)
    result = run_promtool("check", "rules", _rule_file(queries, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_promtool_reports_a_query_that_does_not_parse(tmp_path: Path) -> None:
    broken = [("broken", "sum by (outcome) (rate(hello_bot_updates_total[$__rate_interval])")]
    result = run_promtool("check", "rules", _rule_file(broken, tmp_path), cwd=tmp_path)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_queries_name_only_metrics_the_bot_exports(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    named: set[str] = set()
    for where, expr in _queries(dashboard):
        names = metric_names_in(expr)
        assert names, where
        assert names <= exported, f"{where}: {sorted(names - exported)} are not exported"
        named |= names
    assert named >= REQUIRED_METRICS


def test_queries_select_the_release_through_the_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "job"}
    for where, expr in _queries(dashboard):
        selectors = expr.count("{")
        assert expr.count('namespace="$namespace"') == selectors, where
        assert expr.count('job="$job"') == selectors, where
