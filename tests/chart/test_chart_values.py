"""values.schema.json rejects wrong values with messages naming the key; validateValues
fails on inconsistent ones; every value is documented."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from .helpers import CHART_DIR, REQUIRED, deep_merge

BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"image": {"tag": "latest"}}, "/image/tag"),
    ({"postgresql": {"image": {"tag": "latest"}}}, "/postgresql/image/tag"),
    ({"bot": {"webhookPath": "webhook"}}, "/bot/webhookPath"),
    ({"bot": {"replicaCount": "2"}}, "/bot/replicaCount"),
    ({"bot": {"logFormat": "xml"}}, "/bot/logFormat"),
    ({"bot": {"webhookUrl": "http://insecure.example.com"}}, "/bot/webhookUrl"),
    ({"bot": {"resources": {"limits": {"memory": None}}}}, "/bot/resources/limits"),
    ({"bot": {"resources": {"limits": {"memory": "a lot"}}}}, "/bot/resources/limits/memory"),
    ({"redis": {"maxmemoryPolicy": "lru"}}, "/redis/maxmemoryPolicy"),
    ({"redis": {"maxmemory": "48"}}, "/redis/maxmemory"),
    ({"secret": {"botToken": "not a token"}}, "/secret/botToken"),
    ({"secret": {"webhookSecret": "has spaces!"}}, "/secret/webhookSecret"),
    ({"secret": {"databasePassword": "p@ss/word"}}, "/secret/databasePassword"),
    ({"postgresql": {"auth": {"username": "bad-user"}}}, "/postgresql/auth/username"),
    ({"networkPolicy": {"telegramCidrs": ["everywhere"]}}, "/networkPolicy/telegramCidrs/0"),
    ({"ingress": {"host": "https://bot.example.com"}}, "/ingress/host"),
    ({"externalRedis": {"url": "cache:6379"}}, "/externalRedis/url"),
    ({"operator": {"enabled": "yes"}}, "/operator/enabled"),
    ({"operator": {"image": {"tag": "latest"}}}, "/operator/image/tag"),
    ({"operator": {"image": {"tag": ""}}}, "/operator/image/tag"),
    ({"operator": {"image": {"digest": "sha256:short"}}}, "/operator/image/digest"),
    ({"operator": {"image": {"registry": "ghcr.io"}}}, "additional properties 'registry'"),
    ({"operator": {"replicas": 2}}, "additional properties 'replicas'"),
    ({"operator": {"telegramApiUrl": "api.telegram.org"}}, "/operator/telegramApiUrl"),
    ({"operator": {"migrationPollSeconds": 0}}, "/operator/migrationPollSeconds"),
    ({"operator": {"blockedRetrySeconds": "60"}}, "/operator/blockedRetrySeconds"),
    ({"operator": {"sharedPostgres": {"port": "5432"}}}, "/operator/sharedPostgres/port"),
    (
        {"operator": {"sharedPostgres": {"existingSecret": "Bad_Name"}}},
        "/operator/sharedPostgres/existingSecret",
    ),
    ({"operator": {"resources": {"limits": {"memory": "128"}}}}, "/operator/resources/limits"),
    ({"networkPolicy": {"kubeApiCidrs": ["node"]}}, "/networkPolicy/kubeApiCidrs/0"),
    ({"replicaCount": 2}, "additional properties 'replicaCount'"),
]


def test_defaults_pass_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema(REQUIRED)


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(deep_merge(REQUIRED, values))
    assert where in str(caught.value)


def test_render_refuses_values_the_schema_rejects(render) -> None:
    with pytest.raises(helm.HelmValuesError, match="/image/tag"):
        render({"image": {"tag": "latest"}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"secret": {"botToken": ""}}, "secret.botToken: set the Telegram bot token"),
        ({"postgresql": {"enabled": False}}, "externalDatabase.host"),
        ({"ingress": {"enabled": True}}, "ingress.host"),
        (
            {"bot": {"terminationGracePeriodSeconds": 25}},
            "bot.terminationGracePeriodSeconds: 25 must exceed",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(
    render, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render(values)
    assert message in str(caught.value)


def test_all_mistakes_are_reported_at_once(render) -> None:
    with pytest.raises(helm.HelmError) as caught:
        render({"secret": {"botToken": ""}, "postgresql": {"enabled": False}})
    assert "secret.botToken" in str(caught.value)
    assert "externalDatabase.host" in str(caught.value)


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        # Free-form maps and tuned resource blocks are documented as a whole.
        if isinstance(value, dict) and value and not key.endswith(("resources", "Resources")):
            if key in ("config", "namespaceSelector", "podSelector"):
                paths.add(path)
            else:
                paths |= _leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def test_every_value_is_documented_and_in_the_schema(chart: helm.Chart) -> None:
    text = (CHART_DIR / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*## @param (\S+)", text, flags=re.MULTILINE))
    leaves = _leaf_paths(chart.values)
    assert leaves - documented == set()
    assert documented - leaves == set()
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    for path in leaves:
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
            if "$ref" in node:
                node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        assert "type" in node, path


def test_values_keys_are_camel_case(chart: helm.Chart) -> None:
    for path in _leaf_paths(chart.values):
        for part in path.split("."):
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*", part), path


def test_notes_tell_the_next_steps(chart: helm.Chart) -> None:
    notes = chart.render(REQUIRED, name="demo", namespace="bots")["hello-bot/templates/NOTES.txt"]
    assert "helm test demo" in notes
    assert "logs job/demo-hello-bot-migrate-1" in notes
    assert "ingress.enabled=true" in notes
    with_ingress = chart.render(
        deep_merge(REQUIRED, {"ingress": {"enabled": True, "host": "bot.example.com"}}),
        name="demo",
        namespace="bots",
    )["hello-bot/templates/NOTES.txt"]
    assert "https://bot.example.com/webhook" in with_ingress


def test_readme_documents_every_value_and_the_budget(chart: helm.Chart) -> None:
    readme = (CHART_DIR / "README.md").read_text()
    for path in _leaf_paths(chart.values):
        assert f"| `{path}` |" in readme, path
    for heading in ("## Migration ordering", "## Memory budget", "## NetworkPolicies"):
        assert heading in readme
    assert "volatile-lru" in readme
    assert "**672Mi** (800Mi with operator)" in readme


def test_the_webhook_benchmark_runs_the_pool_the_chart_deploys() -> None:
    from benchmarks.webhook import CHART_POOL  # noqa: PLC0415 - only this test needs it

    bot = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["bot"]
    assert {
        "DB_POOL_SIZE": str(bot["dbPoolSize"]),
        "DB_MAX_OVERFLOW": str(bot["dbMaxOverflow"]),
    } == CHART_POOL
