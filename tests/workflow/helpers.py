"""Shared helpers for the workflow tests: skaffold profiles, Dockerfile stages, chart schema."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.dockerfile import dockerfile_stages

REPO_ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = REPO_ROOT / "skaffold.yaml"
CHART_DIR = REPO_ROOT / "charts" / "hello-bot"
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
# Skaffold's published schemas live beside the repository in this workspace (shared/schemas).
SCHEMAS_DIR = REPO_ROOT.parent / "shared" / "schemas"

TOKEN = "123456:test-token-value-not-a-real-one_xyz"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def skaffold() -> dict[str, Any]:
    return load_yaml(SKAFFOLD)


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_patches(doc: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace/remove, strict like Skaffold: a missing parent or target raises."""
    result = copy.deepcopy(doc)
    for patch in patches:
        *parents, last = _pointer(patch["path"])
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        op = patch.get("op", "replace")
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, patch["value"])
            elif op == "replace":
                node[index] = patch["value"]
            else:
                del node[index]
            continue
        if op in ("replace", "remove") and last not in node:
            msg = f"{op} {patch['path']}: no such key"
            raise KeyError(msg)
        if op == "remove":
            del node[last]
        else:
            node[last] = patch["value"]
    return result


def effective_config(profile: str | None) -> dict[str, Any]:
    """The config `skaffold -p PROFILE` uses: patches applied, profile sections replacing."""
    config = skaffold()
    if profile is None:
        return config
    (chosen,) = [p for p in config.get("profiles", []) if p["name"] == profile]
    result = apply_patches(config, chosen.get("patches", []))
    for key, value in chosen.items():
        if key not in ("name", "activation", "patches", "requiresAllActivations"):
            result[key] = value
    return result


def profile_names() -> list[str]:
    return [p["name"] for p in skaffold().get("profiles", [])]


def helm_release(config: dict[str, Any]) -> dict[str, Any]:
    (release,) = config["deploy"]["helm"]["releases"]
    return release


def template_key(image: str) -> str:
    """Skaffold's suffix for an artifact in IMAGE_REPO_<key>: non-alphanumerics become _."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


# --- Dockerfile ------------------------------------------------------------------------------


def stage_workdir(stage: str) -> str | None:
    """The WORKDIR a stage ends with, following FROM <other stage> chains."""
    stages = dockerfile_stages()
    instructions = stages[stage]
    workdirs = [args for instruction, args in instructions if instruction == "WORKDIR"]
    if workdirs:
        return workdirs[-1]
    base = instructions[0][1].split()[0]
    return stage_workdir(base) if base in stages else None


# --- chart values ----------------------------------------------------------------------------


def chart_schema() -> dict[str, Any]:
    return json.loads((CHART_DIR / "values.schema.json").read_text())


def schema_node(dotted: str) -> dict[str, Any] | None:
    """The schema node for a dotted value path (as `--set` names it), or None."""
    schema = chart_schema()
    node: dict[str, Any] = schema
    for part in dotted.split("."):
        if "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        properties = node.get("properties", {})
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def set_value(values: dict[str, Any], dotted: str, value: Any) -> None:
    node = values
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def helm_scalar(text: str) -> Any:
    """What `helm --set` makes of a string: true/false and integers are typed."""
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return text


def release_values(config: dict[str, Any], templates: dict[str, str]) -> dict[str, Any]:
    """The values a Skaffold helm release passes, with template fields filled from `templates`."""
    release = helm_release(config)
    values: dict[str, Any] = {}
    for key, value in release.get("setValues", {}).items():
        set_value(values, key, helm_scalar(str(value)))
    for key, template in release.get("setValueTemplates", {}).items():
        rendered = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: templates[m.group(1)], template)
        set_value(values, key, helm_scalar(rendered))
    return values
