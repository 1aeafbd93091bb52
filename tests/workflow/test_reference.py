"""docs/reference.md is the contract: it documents every setting with its default (and otherwise
only variables the OpenTelemetry SDK reads), and every variable the chart sets on the bot is one
of those, documented, and named by the `## @param` line of the value that feeds it."""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

import helm_python as helm
import opentelemetry.sdk.environment_variables as otel_sdk_variables
import pytest
from pydantic import SecretStr

from bot.config import Settings
from tests.chart.helpers import REQUIRED, VARIANTS, Manifest, deep_merge, find

from .conftest import Render
from .helpers import CHART_DIR, REPO_ROOT, chart_schema, schema_node, set_value

REFERENCE = REPO_ROOT / "docs" / "reference.md"
SETTINGS = {name.upper() for name in Settings.model_fields}
# Variables the OpenTelemetry SDK reads itself; the reference may document those too.
SDK_VARIABLES = {name for name in dir(otel_sdk_variables) if name.startswith("OTEL_")}
VARIABLE_CELL = re.compile(r"`([A-Z][A-Z0-9_]*)`")

# The chart's variants plus the ones that switch on conditional variables.
CHART_VARIANTS: dict[str, dict[str, Any]] = {
    **VARIANTS,
    "polling": {"bot": {"mode": "polling"}},
    "tracing": {"bot": {"otel": {"exporterOtlpEndpoint": "http://collector.example:4318"}}},
}
# Settings the chart sets that no value feeds, and why.
NOT_FROM_A_VALUE = {
    "HOST": "fixed to 0.0.0.0: the Pod's address is not the user's choice",
    "OTEL_RESOURCE_ATTRIBUTES": "composed from the Downward API and the image tag",
    "BOTS_DIR": "fixed: where the chart mounts the Secret bot.bots.existingSecret names",
    "SECRETS_DIR": "fixed: where the chart mounts its Secret's keys as files",
}
# These @param lines configure the operator's own container, whose variables are the operator's
# settings (operator/README.md), not the bot's, even where a name is the same.
OTHER_PROGRAMS = ("operator.",)


# --- docs/reference.md -----------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """The body of `## heading`, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"no '## {heading}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """Cells of every Markdown table row in `text`, separator rows left out."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def documented_variables(text: str) -> dict[str, list[str]]:
    """The settings table: variable -> its row's cells (default, meaning)."""
    rows = {}
    for cells in table_rows(section(text, "Settings")):
        match = VARIABLE_CELL.fullmatch(cells[0])
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} documented twice"
            rows[match.group(1)] = cells[1:]
    return rows


def reference_variables() -> dict[str, list[str]]:
    return documented_variables(REFERENCE.read_text())


def default_of(name: str) -> object:
    default = Settings.model_fields[name.lower()].default
    return default.get_secret_value() if isinstance(default, SecretStr) else default


def test_the_table_parser_reads_rows_not_mentions() -> None:
    text = (
        "## Other\n\n| `E_F` | `2` |\n\n## Settings\n\n| variable | default |\n| --- | --- |\n"
        "| `A_B` | `1` |\n\n`C_D` in prose\n\n## Next\n\n| `G_H` | `3` |\n"
    )
    assert documented_variables(text) == {"A_B": ["`1`"]}


def test_every_setting_is_documented() -> None:
    assert sorted(SETTINGS - reference_variables().keys()) == []


def test_every_documented_variable_is_a_setting_or_read_by_the_sdk() -> None:
    stale = reference_variables().keys() - SETTINGS - SDK_VARIABLES
    assert sorted(stale) == []


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_documented_default_is_the_code_default(name: str) -> None:
    cell = reference_variables()[name][0]
    default = default_of(name)
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if literal is None:  # "none" or "empty": the code's default must be unset or empty
        assert cell in ("none", "empty"), cell
        assert default == ("" if cell == "empty" else None)
    elif isinstance(default, float):
        assert float(literal.group(1)) == default
    else:
        assert literal.group(1) == str(default)


# --- the chart -------------------------------------------------------------------------------


def _decoded(secret: Manifest) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def _source(objects: list[Manifest], kind: str, name: str) -> dict[str, str] | None:
    """The data of a ConfigMap or Secret of the release; None for one made outside it."""
    found = find(objects, kind, name)
    if not found:
        return None
    return _decoded(found[0]) if kind == "Secret" else dict(found[0].get("data") or {})


def container_environment(objects: list[Manifest], container: dict[str, Any]) -> dict[str, str]:
    """The variables a container starts with, as the kubelet makes them: envFrom first, then
    env in order with $(NAME) expanded; values from outside the release are left as markers."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        name = (source.get("configMapRef") or source["secretRef"])["name"]
        environment.update(_source(objects, kind, name) or {})
    for entry in container.get("env", []):
        if "value" in entry:
            value = re.sub(
                r"\$\((\w+)\)", lambda m: environment.get(m.group(1), m.group(0)), entry["value"]
            )
        else:
            ref = entry["valueFrom"]
            if "fieldRef" in ref:
                value = f"<{ref['fieldRef']['fieldPath']}>"
            else:
                kind = "Secret" if "secretKeyRef" in ref else "ConfigMap"
                key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                data = _source(objects, kind, key_ref["name"])
                value = f"<{kind} {key_ref['name']}>" if data is None else data[key_ref["key"]]
        environment[entry["name"]] = value
    return environment


def secret_files(
    objects: list[Manifest], pod: dict[str, Any], container: dict[str, Any], directory: str
) -> dict[str, str]:
    """The settings a container reads as files from SECRETS_DIR: file name (a setting's name,
    any case) -> the Secret's value, or a marker for a Secret made outside the release."""
    mounted = {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == directory}
    settings: dict[str, str] = {}
    for volume in pod.get("volumes", []):
        if volume["name"] not in mounted or "secret" not in volume:
            continue
        name = volume["secret"]["secretName"]
        data = _source(objects, "Secret", name)
        for item in volume["secret"]["items"]:
            value = f"<Secret {name}>" if data is None else data[item["key"]]
            settings[item["path"].upper()] = value
    return settings


def expansion_helpers(container: dict[str, Any]) -> set[str]:
    """Variables set only to be expanded into another one as $(NAME): the bot never reads them."""
    values = " ".join(entry.get("value", "") for entry in container.get("env", []))
    return set(re.findall(r"\$\((\w+)\)", values))


def bot_containers(objects: list[Manifest]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Pod spec, container) of the containers that run `python -m bot`: the bot Deployment's
    and the migration Job's. (The Job's init containers wait for PostgreSQL and make its roles,
    reading their own variables.)"""
    found = [
        (obj["spec"]["template"]["spec"], container)
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
        and obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in ("bot", "migration")
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]
    assert sorted(c["name"] for _, c in found) == ["bot", "migrate"]
    return found


def chart_settings(objects: list[Manifest]) -> dict[str, set[str]]:
    """Setting -> the values it gets in the bot's containers, as variables (expansion helpers
    left out) or as files in SECRETS_DIR."""
    settings: dict[str, set[str]] = {}
    for pod, container in bot_containers(objects):
        helpers = expansion_helpers(container)
        environment = container_environment(objects, container)
        files = secret_files(objects, pod, container, environment.get("SECRETS_DIR", ""))
        for name, value in (environment | files).items():
            if name not in helpers:
                settings.setdefault(name, set()).add(value)
    return settings


def render_variant(render: Render, values: dict[str, Any]) -> list[Manifest]:
    return render(deep_merge(REQUIRED, values))


@pytest.fixture(scope="module")
def variant_settings(render: Render) -> dict[str, dict[str, set[str]]]:
    return {
        name: chart_settings(render_variant(render, values))
        for name, values in CHART_VARIANTS.items()
    }


def param_lines() -> dict[str, str]:
    """values.yaml: value path -> its `## @param` description."""
    text = (CHART_DIR / "values.yaml").read_text()
    return dict(re.findall(r"^\s*## @param (\S+) (.*)$", text, flags=re.MULTILINE))


def params_naming(variable: str) -> list[str]:
    return [
        path
        for path, description in param_lines().items()
        if re.search(rf"\b{variable}\b", description) and not path.startswith(OTHER_PROGRAMS)
    ]


def all_chart_settings(variant_settings: dict[str, dict[str, set[str]]]) -> set[str]:
    return {name for settings in variant_settings.values() for name in settings}


def test_the_chart_sets_only_documented_settings(
    variant_settings: dict[str, dict[str, set[str]]],
) -> None:
    chart = all_chart_settings(variant_settings)
    assert {"BOT_TOKEN", "DATABASE_URL", "REDIS_URL", "OTEL_TRACES_SAMPLER"} <= chart
    assert sorted(chart - SETTINGS - SDK_VARIABLES) == []
    assert sorted(chart - reference_variables().keys()) == []


def test_a_value_feeds_each_chart_setting_and_its_param_names_it(
    variant_settings: dict[str, dict[str, set[str]]],
) -> None:
    unnamed = {name for name in all_chart_settings(variant_settings) if not params_naming(name)}
    assert sorted(unnamed - NOT_FROM_A_VALUE.keys()) == []
    # The exceptions stay exceptional: still set by the chart, still fed by no value.
    assert sorted(NOT_FROM_A_VALUE.keys() - unnamed) == []


def another_value(path: str, current: Any) -> Any:
    """A value for `path` that differs from `current` and that the chart's schema accepts."""
    node = schema_node(path) or {}
    if "$ref" in node:
        node = chart_schema()["definitions"][node["$ref"].rsplit("/", 1)[1]]
    if "enum" in node:
        return next(option for option in node["enum"] if option != current)
    if isinstance(current, bool):
        return not current
    if isinstance(current, int):
        return current + 1 if current + 1 <= node.get("maximum", current + 1) else current - 1
    pattern = re.compile(node.get("pattern", ".*"))
    candidates = [f"{current}alt", "alt", "/alt", "https://alt.example.org", "redis://alt:6380/1"]
    candidates.append("0.25")  # a sampling ratio
    return next(c for c in candidates if c != current and pattern.search(c))


def value_at(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


# (value path, variable) for every @param line that names a variable the bot or the SDK reads.
NAMED = sorted({(path, name) for name in SETTINGS | SDK_VARIABLES for path in params_naming(name)})


def test_the_param_scan_finds_the_named_settings() -> None:
    assert ("bot.logLevel", "LOG_LEVEL") in NAMED
    assert ("secret.botToken", "BOT_TOKEN") in NAMED


@pytest.mark.parametrize(("path", "name"), NAMED)
def test_the_value_a_param_line_names_feeds_that_setting(
    path: str,
    name: str,
    chart: helm.Chart,
    render: Render,
    variant_settings: dict[str, dict[str, set[str]]],
) -> None:
    """Changing the value changes the variable, in some variant where the chart sets it."""
    tried = []
    for variant, settings in variant_settings.items():
        if name not in settings:
            continue
        values = copy.deepcopy(CHART_VARIANTS[variant])
        current = value_at(deep_merge(chart.values, deep_merge(REQUIRED, values)), path)
        alternative = another_value(path, current)
        set_value(values, path, alternative)
        changed = chart_settings(render_variant(render, values)).get(name, set())
        if changed != settings[name] and any(str(alternative) in v for v in changed):
            return
        tried.append(variant)
    pytest.fail(f"{path} does not feed {name} in any variant that sets it ({tried})")
