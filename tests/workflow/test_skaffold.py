"""skaffold.yaml: schema-valid, its sync rules match real files and the image's WORKDIR, and
every value it sets exists in the chart and renders into the Pod the developer expects."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .conftest import Render
from .helpers import (
    REPO_ROOT,
    SCHEMAS_DIR,
    TOKEN,
    apply_patches,
    dockerfile_stages,
    effective_config,
    helm_release,
    profile_names,
    release_values,
    schema_node,
    skaffold,
    stage_workdir,
    template_key,
)

PROFILES: list[str | None] = [None, *profile_names()]
DIGEST = "sha256:" + "ab" * 32


def _skaffold_schema(api_version: str) -> dict[str, Any]:
    version = api_version.removeprefix("skaffold/")
    path = SCHEMAS_DIR / f"skaffold-{version}.json"
    if not SCHEMAS_DIR.is_dir():
        pytest.skip(f"Skaffold's JSON Schemas are not beside this clone ({SCHEMAS_DIR} is missing)")
    assert path.is_file(), f"no published schema for {api_version} in {SCHEMAS_DIR}"
    return json.loads(path.read_text())


def _errors(config: dict[str, Any]) -> list[str]:
    schema = _skaffold_schema(config["apiVersion"])
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(config)]


def _templates(config: dict[str, Any]) -> dict[str, str]:
    key = template_key(_artifact(config)["image"])
    return {
        f"IMAGE_REPO_{key}": "registry.example.com/hello-bot",
        f"IMAGE_TAG_{key}": "3f9a0c1d",
        f"IMAGE_DIGEST_{key}": DIGEST,
        "BOT_TOKEN": TOKEN,
    }


def _artifact(config: dict[str, Any]) -> dict[str, Any]:
    (artifact,) = config["build"]["artifacts"]
    return artifact


def _bot_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# --- the file itself ---------------------------------------------------------------------------


def test_declares_a_current_v4beta_schema_and_is_valid_against_it() -> None:
    config = skaffold()
    assert re.fullmatch(r"skaffold/v4beta1[34]", config["apiVersion"]), config["apiVersion"]
    assert config["kind"] == "Config"
    assert _errors(config) == []


def test_the_schema_check_would_catch_a_mistake() -> None:
    misspelt = copy.deepcopy(skaffold())
    misspelt["build"]["artifacts"][0]["docker"]["targte"] = "dev"
    assert _errors(misspelt)
    wrong_type = copy.deepcopy(skaffold())
    wrong_type["profiles"][0]["portForward"][0]["port"] = [8080]
    assert _errors(wrong_type)


@pytest.mark.parametrize("profile", profile_names())
def test_profile_patches_apply_to_existing_paths(profile: str) -> None:
    (chosen,) = [p for p in skaffold()["profiles"] if p["name"] == profile]
    apply_patches(skaffold(), chosen.get("patches", []))  # raises on a path that is not there


def test_patch_helper_refuses_a_missing_path() -> None:
    with pytest.raises(KeyError):
        apply_patches({"a": {}}, [{"op": "replace", "path": "/a/b", "value": 1}])


def test_skaffold_dev_selects_the_dev_profile() -> None:
    (dev,) = [p for p in skaffold()["profiles"] if p["name"] == "dev"]
    assert {"command": "dev"} in dev["activation"]


# --- build: the artifact and the Dockerfile -----------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_artifact_builds_an_existing_dockerfile_target(profile: str | None) -> None:
    artifact = _artifact(effective_config(profile))
    context = REPO_ROOT / artifact.get("context", ".")
    assert (context / artifact["docker"].get("dockerfile", "Dockerfile")).is_file()
    assert artifact["docker"]["target"] in dockerfile_stages()


def test_production_profiles_build_the_production_target_and_dev_the_dev_one() -> None:
    assert _artifact(effective_config(None))["docker"]["target"] == "bot"
    assert _artifact(effective_config("prod"))["docker"]["target"] == "bot"
    assert _artifact(effective_config("dev"))["docker"]["target"] == "dev"
    assert list(dockerfile_stages())[-1] == "bot"  # `docker build .` still builds production


def test_watchfiles_is_only_in_the_dev_image() -> None:
    stages = dockerfile_stages()
    text = {name: "\n".join(f"{i} {a}" for i, a in body) for name, body in stages.items()}
    assert "--group reload" in text["dev-builder"]
    assert "dev-builder" in text["dev"]
    for stage in ("builder", "bot", "operator", "runtime-base"):
        assert "reload" not in text[stage] and "dev-builder" not in text[stage], stage


# --- file sync -----------------------------------------------------------------------------------


def _sync_rules() -> list[dict[str, str]]:
    sync = _artifact(effective_config("dev")).get("sync", {})
    rules = sync.get("manual", [])
    assert rules, "the dev profile syncs nothing"
    return rules


def test_only_the_dev_profile_syncs_files() -> None:
    assert "sync" not in _artifact(effective_config(None))
    assert "sync" not in _artifact(effective_config("prod"))
    assert _sync_rules()


def test_every_sync_source_matches_python_files_of_the_bot() -> None:
    context = REPO_ROOT / _artifact(effective_config("dev")).get("context", ".")
    for rule in _sync_rules():
        matched = [p for p in context.glob(rule["src"]) if p.is_file()]
        assert matched, f"sync src {rule['src']!r} matches no file"
        assert all(p.suffix == ".py" for p in matched), rule["src"]
        assert all(p.relative_to(context).parts[0] == "bot" for p in matched), rule["src"]
    assert (context / "bot" / "__main__.py") in context.glob(_sync_rules()[0]["src"])


def test_sync_destinations_are_where_the_image_keeps_the_code() -> None:
    target = _artifact(effective_config("dev"))["docker"]["target"]
    workdir = stage_workdir(target)
    assert workdir == "/app"
    copies = [a for i, a in dockerfile_stages()[target] if i == "COPY"]
    for rule in _sync_rules():
        dest = rule["dest"]
        root = dest if dest.startswith("/") else str(Path(workdir) / dest)
        root = str(Path(root))
        assert root == workdir, f"sync dest {dest!r} resolves to {root}, WORKDIR is {workdir}"
        # bot/x.py lands on <root>/bot/x.py: that is where the image copies the package.
        top = rule["src"].split("/", 1)[0]
        assert any(c.split()[-1] == f"{root}/{top}" for c in copies), copies
    assert "strip" not in "".join(json.dumps(r) for r in _sync_rules())


def test_synced_code_is_writable_by_the_pods_user(render: Render) -> None:
    stage = dockerfile_stages()["dev"]
    (bot_copy,) = [a for i, a in stage if i == "COPY" and a.split()[-1] == "/app/bot"]
    assert "--chown=10001:10001" in bot_copy
    assert ("USER", "10001:10001") in stage
    config = effective_config("dev")
    objects = render(release_values(config, _templates(config)))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


# --- deploy: the Helm release and its values ---------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_every_value_skaffold_sets_exists_in_the_chart_schema(profile: str | None) -> None:
    release = helm_release(effective_config(profile))
    assert (REPO_ROOT / release["chartPath"] / "Chart.yaml").is_file()
    keys = [*release.get("setValues", {}), *release.get("setValueTemplates", {})]
    assert keys
    missing = [key for key in keys if schema_node(key) is None]
    assert missing == []


def test_schema_lookup_would_catch_a_misspelt_value() -> None:
    assert schema_node("bot.hotReload") is not None
    assert schema_node("bot.hotreload") is None
    assert schema_node("image.digests") is None


@pytest.mark.parametrize("profile", PROFILES)
def test_the_built_image_is_wired_into_the_chart(profile: str | None) -> None:
    config = effective_config(profile)
    key = template_key(_artifact(config)["image"])
    templates = helm_release(config)["setValueTemplates"]
    assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
    assert templates["image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}"
    assert templates["secret.botToken"] == "{{.BOT_TOKEN}}"


def test_prod_profile_pushes_and_deploys_by_digest(render: Render) -> None:
    config = effective_config("prod")
    key = template_key(_artifact(config)["image"])
    assert config["build"]["local"]["push"] is True
    assert helm_release(config)["setValueTemplates"]["image.digest"] == (
        f"{{{{.IMAGE_DIGEST_{key}}}}}"
    )
    container = _bot_container(render(release_values(config, _templates(config))))
    assert container["image"] == f"registry.example.com/hello-bot:3f9a0c1d@{DIGEST}"
    assert container["args"] == ["serve"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_dev_profile_runs_the_bot_polling_under_watchfiles(render: Render) -> None:
    config = effective_config("dev")
    objects = render(release_values(config, _templates(config)))
    container = _bot_container(objects)
    assert container["image"] == "registry.example.com/hello-bot:3f9a0c1d"
    command = container["command"]
    assert command[0] == "watchfiles"
    assert "python -m bot poll" in command
    # watchfiles watches the directory the sync rules write into.
    assert command[-1] == "/app/bot"
    assert "args" not in container
    # Polling serves the probes too; a restart by watchfiles is shorter than the liveness window.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 20


def test_dev_profile_relaxes_only_the_bot_containers_root_filesystem(render: Render) -> None:
    config = effective_config("dev")
    objects = render(release_values(config, _templates(config)))
    relaxed = []
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job", "Pod"):
            continue
        spec = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["runAsNonRoot"] is True
            if not context["readOnlyRootFilesystem"]:
                relaxed.append((obj["kind"], container["name"]))
    assert relaxed == [("Deployment", "bot")]


def test_port_forwards_point_at_services_the_chart_renders(render: Render) -> None:
    config = effective_config("dev")
    objects = render(release_values(config, _templates(config)))
    services = {
        o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
        for o in objects
        if o["kind"] == "Service"
    }
    forwards = config["portForward"]
    assert forwards
    release = helm_release(config)
    for forward in forwards:
        assert forward["resourceType"] == "service"
        assert forward["namespace"] == release["namespace"]
        assert forward["port"] in services.get(forward["resourceName"], set()), forward
    assert {"resourceName": "hello-bot", "port": 8080} in [
        {"resourceName": f["resourceName"], "port": f["port"]} for f in forwards
    ]


# --- restart on change: the rendered watchfiles command, run for real --------------------------


def _read_lines(stream: Any, lines: list[str]) -> None:
    for line in iter(stream.readline, ""):
        lines.append(line)


def _wait_for(lines: list[str], needle: str, count: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        found = sum(line.strip() == needle for line in lines)
        if found >= count:
            return found
        time.sleep(0.05)
    return sum(line.strip() == needle for line in lines)


def test_the_watchfiles_command_restarts_the_bot_when_a_python_file_changes(
    render: Render, tmp_path: Path
) -> None:
    config = effective_config("dev")
    command = list(_bot_container(render(release_values(config, _templates(config))))["command"])
    watched = tmp_path / "bot"
    watched.mkdir()
    (watched / "handler.py").write_text("VERSION = 1\n")
    # The same watchfiles invocation, with the bot replaced by a program that says it started.
    fake_bot = (
        f"{sys.executable} -c \"print('bot-started', flush=True); import time; time.sleep(60)\""
    )
    target_index = command.index("python -m bot poll")
    command[target_index] = fake_bot
    command[-1] = str(watched)
    command[0] = str(Path(sys.executable).parent / "watchfiles")
    assert shlex.split(fake_bot)[0] == sys.executable
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        assert _wait_for(lines, "bot-started", 1, time.monotonic() + 30) == 1, lines
        assert _wait_for(lines, "bot-started", 2, time.monotonic() + 2) == 1, "restarted unasked"
        # Give the watcher its start-up moment, then change the synced file.
        time.sleep(1)
        (watched / "handler.py").write_text("VERSION = 2\n")
        assert _wait_for(lines, "bot-started", 2, time.monotonic() + 30) >= 2, lines
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=5)
        process.stdout.close()
