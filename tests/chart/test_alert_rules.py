"""The PrometheusRule's alerts, as Prometheus itself reads them: `promtool check rules` on the
rendered group, and `promtool test rules` with one firing and one quiet case per alert."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import FULLNAME, NAMESPACE, one
from .prometheus import PROMETHEUS_SERIES, exported_metric_names, metric_names_in, run_promtool

# Series as the chart's monitors label them: job set to the fullname, the release's namespace.
TARGET = {"job": FULLNAME, "namespace": NAMESPACE, "pod": "bot-1"}


def s(metric: str, **labels: str) -> str:
    """A series of the bot's target in promtool's notation."""
    pairs = ",".join(f'{key}="{value}"' for key, value in {**TARGET, **labels}.items())
    return f"{metric}{{{pairs}}}"


@dataclass(frozen=True)
class Case:
    """Input series and, when the alert fires, the values its annotations' `$value` and
    `$labels.pod` must expand to."""

    series: dict[str, str]
    eval_time: str
    value: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    firing: Case
    quiet: Case
    # Further cases where one alert has several ways in (or out): (case, fires).
    more: tuple[tuple[Case, bool], ...] = ()


def _histogram(counts_per_minute: dict[str, int]) -> dict[str, str]:
    """Cumulative buckets of hello_bot_update_duration_seconds growing by the given counts."""
    series, total = {}, 0
    for le in ("0.1", "0.5", "1", "2.5", "5", "+Inf"):
        total += counts_per_minute.get(le, 0)
        series[s("hello_bot_update_duration_seconds_bucket", le=le)] = f"0+{total}x40"
    return series


POD = {"pod": "bot-1"}
SHOP, NEWS = {"bot": "shop"}, {"bot": "news"}

SCENARIOS: dict[str, Scenario] = {
    "HelloBotWebhook5xx": Scenario(
        firing=Case(
            {
                s("hello_bot_webhook_requests_total", status="200"): "0+50x40",
                s("hello_bot_webhook_requests_total", status="503"): "0+10x40",
            },
            "20m",
            value="16.67%",
        ),
        quiet=Case(
            {
                s("hello_bot_webhook_requests_total", status="200"): "0+99x40",
                s("hello_bot_webhook_requests_total", status="503"): "0+1x40",
                s("hello_bot_webhook_requests_total", status="401"): "0+50x40",
            },
            "30m",
        ),
    ),
    "HelloBotUpdatesFailing": Scenario(
        firing=Case(
            {
                s(
                    "hello_bot_updates_total",
                    update_type="message",
                    handler="start_handler",
                    outcome="handled",
                ): "0+90x40",
                s(
                    "hello_bot_updates_total",
                    update_type="message",
                    handler="start_handler",
                    outcome="retry",
                ): "0+6x40",
                s(
                    "hello_bot_updates_total",
                    update_type="message",
                    handler="echo_handler",
                    outcome="error",
                ): "0+4x40",
            },
            "25m",
            value="10%",
        ),
        quiet=Case(
            {
                s(
                    "hello_bot_updates_total",
                    update_type="message",
                    handler="start_handler",
                    outcome="handled",
                ): "0+97x40",
                s(
                    "hello_bot_updates_total",
                    update_type="message",
                    handler="none",
                    outcome="duplicate",
                ): "0+2x40",
                s(
                    "hello_bot_updates_total",
                    update_type="message",
                    handler="start_handler",
                    outcome="retry",
                ): "0+1x40",
            },
            "30m",
        ),
    ),
    "HelloBotUpdatesSlow": Scenario(
        # Every update between 2.5 s and 5 s: the p99 interpolates to 4.975 s.
        firing=Case(_histogram({"5": 10}), "25m", value="4.975"),
        quiet=Case(_histogram({"0.1": 990, "0.5": 9, "5": 1}), "30m"),
    ),
    "HelloBotBotApiErrors": Scenario(
        firing=Case(
            {
                s(
                    "hello_bot_bot_api_requests_total", method="sendMessage", **SHOP, outcome="ok"
                ): "0+80x40",
                s(
                    "hello_bot_bot_api_requests_total",
                    method="sendMessage",
                    **SHOP,
                    outcome="error",
                ): "0+20x40",
            },
            "30m",
            value="20%",
            labels=SHOP,
        ),
        quiet=Case(
            {
                s(
                    "hello_bot_bot_api_requests_total", method="sendMessage", **SHOP, outcome="ok"
                ): "0+95x40",
                s(
                    "hello_bot_bot_api_requests_total",
                    method="sendMessage",
                    **SHOP,
                    outcome="retried",
                ): "0+3x40",
                s(
                    "hello_bot_bot_api_requests_total",
                    method="sendMessage",
                    **SHOP,
                    outcome="error",
                ): "0+2x40",
            },
            "30m",
        ),
    ),
    "HelloBotBotApiFloodWait": Scenario(
        firing=Case(
            {
                s(
                    "hello_bot_bot_api_retries_total",
                    method="sendMessage",
                    **SHOP,
                    reason="flood_wait",
                ): "0+12x40"
            },
            "25m",
            value="0.20",
            labels=SHOP,
        ),
        quiet=Case(
            {
                s(
                    "hello_bot_bot_api_retries_total",
                    method="sendMessage",
                    **SHOP,
                    reason="flood_wait",
                ): "0+1x40",
                s(
                    "hello_bot_bot_api_retries_total",
                    method="sendMessage",
                    **SHOP,
                    reason="server_error",
                ): "0+30x40",
            },
            "30m",
        ),
    ),
    "HelloBotNotReady": Scenario(
        firing=Case(
            {s("hello_bot_ready"): "1x5 0x20", s("up"): "1x25"},
            "15m",
            labels=POD,
        ),
        quiet=Case({s("hello_bot_ready"): "1x30", s("up"): "1x30"}, "30m"),
    ),
    "HelloBotRedisDegraded": Scenario(
        firing=Case({s("hello_bot_redis_degraded"): "0x5 1x20"}, "20m", labels=POD),
        # Short outages (a Redis restart) stay below the 10 minutes.
        quiet=Case({s("hello_bot_redis_degraded"): "0x5 1x5 0x20"}, "30m"),
    ),
    "HelloBotDbPoolSaturated": Scenario(
        firing=Case(
            {s("hello_bot_db_pool_connections_in_use"): "14x30"},
            "20m",
            value="93.33%",
            labels=POD,
        ),
        quiet=Case({s("hello_bot_db_pool_connections_in_use"): "6x10 15x3 6x20"}, "30m"),
    ),
    "HelloBotTelegramCannotReachUs": Scenario(
        # Deliveries keep failing (the error stays recent) while updates wait at Telegram.
        firing=Case(
            {
                s("hello_bot_webhook_pending_updates", **SHOP): "0x3 5+5x30",
                s("hello_bot_webhook_last_error_age_seconds", **SHOP): "0x3 30x30",
                s("hello_bot_webhook_url_expected", **SHOP): "1x33",
            },
            "20m",
            labels=SHOP,
        ),
        # An old error with a small backlog is ordinary traffic, not an outage.
        quiet=Case(
            {
                s("hello_bot_webhook_pending_updates", **SHOP): "2x30",
                s("hello_bot_webhook_last_error_age_seconds", **SHOP): "3600+60x30",
                s("hello_bot_webhook_url_expected", **SHOP): "1x30",
            },
            "30m",
        ),
        more=(
            # Another URL registered (a second deployment with the same token, say).
            (
                Case(
                    {
                        s("hello_bot_webhook_pending_updates", **SHOP): "0x30",
                        s("hello_bot_webhook_url_expected", **SHOP): "1x3 0x30",
                    },
                    "20m",
                    labels=SHOP,
                ),
                True,
            ),
            # A recent error that left nothing waiting: Telegram delivered on its retry.
            (
                Case(
                    {
                        s("hello_bot_webhook_pending_updates", **SHOP): "0x30",
                        s("hello_bot_webhook_last_error_age_seconds", **SHOP): "10x30",
                        s("hello_bot_webhook_url_expected", **SHOP): "1x30",
                    },
                    "30m",
                ),
                False,
            ),
            # The host: one bot's webhook fails, the other's is fine; the alert names the one.
            (
                Case(
                    {
                        s("hello_bot_webhook_pending_updates", **SHOP): "0x3 5+5x30",
                        s("hello_bot_webhook_last_error_age_seconds", **SHOP): "0x3 30x30",
                        s("hello_bot_webhook_url_expected", **SHOP): "1x33",
                        s("hello_bot_webhook_pending_updates", **NEWS): "1x33",
                        s("hello_bot_webhook_url_expected", **NEWS): "1x33",
                    },
                    "20m",
                    labels=SHOP,
                ),
                True,
            ),
        ),
    ),
}


@pytest.fixture(scope="module")
def rule_group(render) -> dict[str, Any]:
    objects = render(
        {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    )
    (group,) = one(objects, "PrometheusRule")["spec"]["groups"]
    return group


@pytest.fixture
def rules_file(rule_group: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [rule_group]}, sort_keys=False))
    return path


def _alerts(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in group["rules"] if "alert" in rule}


def _expected_annotations(rule: dict[str, Any], case: Case) -> dict[str, str]:
    """The rule's annotations with Prometheus's template fields expanded as the case says."""
    expanded = {}
    for key, template in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: case.labels[m.group(1)], template)
        text = re.sub(r"\{\{ [^}]*\$value[^}]* \}\}", lambda _m: str(case.value), text)
        assert "{{" not in text, text
        expanded[key] = text
    return expanded


def _unit_test(name: str, rule: dict[str, Any], case: Case, *, fires: bool) -> dict[str, Any]:
    expected = []
    if fires:
        labels = {**rule["labels"], **case.labels}
        expected = [{"exp_labels": labels, "exp_annotations": _expected_annotations(rule, case)}]
    return {
        "name": f"{name} {'fires' if fires else 'stays quiet'}",
        "interval": "1m",
        "input_series": [
            {"series": series, "values": values} for series, values in case.series.items()
        ],
        "alert_rule_test": [
            {"eval_time": case.eval_time, "alertname": name, "exp_alerts": expected}
        ],
    }


def _write_tests(group: dict[str, Any], rules_file: Path, names: list[str]) -> Path:
    alerts = _alerts(group)
    tests = []
    for name in names:
        scenario = SCENARIOS[name]
        tests.append(_unit_test(name, alerts[name], scenario.firing, fires=True))
        tests.append(_unit_test(name, alerts[name], scenario.quiet, fires=False))
        tests += [
            _unit_test(name, alerts[name], case, fires=fires) for case, fires in scenario.more
        ]
    path = rules_file.with_name("rules_test.yaml")
    path.write_text(
        yaml.safe_dump(
            {"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    return path


def test_promtool_accepts_the_rules(rules_file: Path) -> None:
    result = run_promtool("check", "rules", rules_file, cwd=rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    (group,) = yaml.safe_load(rules_file.read_text())["groups"]
    assert f"SUCCESS: {len(group['rules'])} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(rules_file: Path, rule_group: dict[str, Any]) -> None:
    """The check above can fail: a PromQL syntax error is reported."""
    broken = {**rule_group, "rules": [{**rule_group["rules"][0], "expr": "sum(rate(x[5m])"}]}
    rules_file.write_text(yaml.safe_dump({"groups": [broken]}))
    result = run_promtool("check", "rules", rules_file, cwd=rules_file.parent)
    assert result.returncode != 0
    assert "parse error" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case(rule_group: dict[str, Any]) -> None:
    assert sorted(_alerts(rule_group)) == sorted(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_alert_fires_and_stays_quiet(
    rule_group: dict[str, Any], rules_file: Path, name: str
) -> None:
    tests = _write_tests(rule_group, rules_file, [name])
    result = run_promtool("test", "rules", tests, cwd=rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_quiet_case_that_fires_fails_the_unit_test(
    rule_group: dict[str, Any], rules_file: Path
) -> None:
    """promtool's verdict is real: swapping the cases of one alert fails both."""
    name = "HelloBotWebhook5xx"
    scenario = SCENARIOS[name]
    rule = _alerts(rule_group)[name]
    swapped = [
        _unit_test(name, rule, scenario.quiet, fires=True),
        _unit_test(name, rule, scenario.firing, fires=False),
    ]
    path = rules_file.with_name("swapped_test.yaml")
    path.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "tests": swapped}, sort_keys=False)
    )
    result = run_promtool("test", "rules", path, cwd=rules_file.parent)
    assert result.returncode != 0
    assert result.stdout.count("FAILED") + result.stderr.count("FAILED") >= 1


def test_alerts_select_only_series_the_bot_exports(rule_group: dict[str, Any]) -> None:
    """A misspelt metric parses fine and never fires; this is the check that catches it."""
    known = exported_metric_names() | PROMETHEUS_SERIES
    for name, rule in _alerts(rule_group).items():
        names = metric_names_in(rule["expr"])
        assert names, name
        assert names <= known, f"{name}: {sorted(names - known)} are not exported"
