"""The real image: each Dockerfile target built once per run, run as the chart runs it.

Builds use the official base images when the engine can pull them (GitHub's runners), and the
stand-ins of standins.py otherwise (these machines). Build layers stay in the engine's store
and the stand-ins' root file system under ~/.cache/hello-bot, so a second run on one machine
rebuilds only what changed. The figures (sizes, build times, RSS) are printed at the end of
the run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.bot_process import BotProcess
from tests.support.dockerfile import dockerfile_instructions

from .engine import Engine, find_engine
from .standins import CACHE_DIR, python_standin, uv_standin

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / "charts" / "hello-bot" / "values.yaml").read_text())
TARGETS = ("bot", "operator", "dev")
# Each checkout builds under its own tag: several checkouts may share one engine.
TAG = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
FIGURES = pytest.StashKey[list[str]]()


def chart_memory_limit(component: str = "bot") -> int:
    """The chart's memory limit of a container, in bytes (values.yaml, `resources.limits`)."""
    section = VALUES["operator"] if component == "operator" else VALUES[component]
    text = str(section["resources"]["limits"]["memory"])
    units = {"Mi": 2**20, "Gi": 2**30}
    return int(text[:-2]) * units[text[-2:]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The first test to ask for an image pays for the build, and on a new machine for the
    # stand-in bases too (debootstrap and the locked wheels: minutes on a slow mirror).
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> list[str]:
    """Lines for the end-of-run summary: what the image tests measured."""
    return request.config.stash.setdefault(FIGURES, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("image figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def engine() -> Engine:
    return find_engine(CACHE_DIR / "containers", os.environ.get("HELLO_BOT_IMAGE_ENGINE"))


@pytest.fixture(scope="session")
def base_images(engine: Engine, figures: list[str]) -> dict[str, str]:
    """PYTHON_IMAGE and UV_IMAGE: the Dockerfile's own when they can be had, else stand-ins."""
    defaults = dict(
        arg.split("=", 1) for kind, arg in dockerfile_instructions() if kind == "ARG" and "=" in arg
    )
    makers = {"PYTHON_IMAGE": python_standin, "UV_IMAGE": uv_standin}
    chosen: dict[str, str] = {}
    for name, make in makers.items():
        official = defaults[name]
        started = time.monotonic()
        if engine.has_image(official) or engine.pull(official):
            chosen[name] = official
        else:
            chosen[name] = make(engine, official)
        took = time.monotonic() - started
        figures.append(f"{name}: {chosen[name]} (ready in {took:.1f} s; Dockerfile: {official})")
    return chosen


@pytest.fixture(scope="session")
def image(engine: Engine, base_images: dict[str, str], figures: list[str]) -> Callable[[str], str]:
    """target -> its image, built the first time a test asks for it."""
    built: dict[str, str] = {}

    def get(target: str) -> str:
        if target not in built:
            ref = f"localhost/hello-bot-test/{target}:{TAG}"
            started = time.monotonic()
            engine.build(ROOT, ref, target=target, **base_images)
            took = time.monotonic() - started
            size = engine.image_size(ref)
            base = engine.image_size(base_images["PYTHON_IMAGE"])
            figures.append(
                f"image {target}: {size / 1e6:.0f} MB ({(size - base) / 1e6:.0f} MB over its "
                f"python base); built in {took:.1f} s"
            )
            built[target] = ref
        return built[target]

    return get


@dataclass
class Containers:
    """Names of the containers a test started, removed after it whatever happened."""

    engine: Engine
    names: list[str] = field(default_factory=list)

    def new_name(self) -> str:
        name = f"hello-bot-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        return name

    def run(
        self,
        image: str,
        *args: str,
        flags: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Runs a container to completion; `env` travels by name, never on the command line."""
        names = [f for key in env or {} for f in ("-e", key)]
        return self.engine.run(
            "run", "--rm", "--name", self.new_name(),
            *(flags if flags is not None else self.engine.hardened()),
            *names, image, *args,
            check=False, timeout=timeout, env=env,
        )  # fmt: skip


@pytest.fixture
def containers(engine: Engine) -> Iterator[Containers]:
    box = Containers(engine)
    yield box
    for name in box.names:
        engine.remove(name)


class ContainerProcess(BotProcess):
    """A long-running container: the engine's client is the child process, and signals reach the
    container's PID 1 as the kubelet's do, through the engine (`kill --signal`). Without
    `entrypoint`, `args` go to the image's (`python -m bot`). `memory` is a limit in bytes."""

    def __init__(
        self,
        containers: Containers,
        image: str,
        args: Sequence[str],
        *,
        env: dict[str, str],
        read_only: bool = True,
        memory: int | None = None,
        keep: bool = False,
        entrypoint: str | None = None,
        mounts: Sequence[str] = (),
    ) -> None:
        # The working directory is the engine client's; the container's is the image's /app.
        super().__init__(env, Path(tempfile.gettempdir()), argv=[])
        self.engine = containers.engine
        self.name = containers.new_name()
        # HOST and PORT are BotProcess's; everything else is the test's.
        names = [f for key in ("HOST", "PORT", *env) for f in ("-e", key)]
        removal = [] if keep else ["--rm"]
        override = ["--entrypoint", entrypoint] if entrypoint else []
        flags = self.engine.hardened(read_only=read_only, memory=memory)
        volumes = [f for mount in mounts for f in ("-v", mount)]
        self.argv = self.engine.command(
            "run", *removal, "--name", self.name, *override, *flags, *volumes, *names, image, *args
        )
        self.env = self.engine.environ(self.env)

    def signal(self, sig: int = 15) -> None:
        self.engine.run("kill", "--signal", str(sig), self.name, timeout=30)

    def exec(self, *args: str) -> str:
        return self.engine.run("exec", self.name, *args, timeout=60).stdout

    def status(self) -> dict[str, int]:
        """PID 1's /proc/1/status memory lines (kB): VmRSS now, VmHWM its peak."""
        text = self.exec("cat", "/proc/1/status")
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


@pytest.fixture
async def make_container(containers: Containers) -> AsyncIterator[Callable[..., ContainerProcess]]:
    """ContainerProcess factory; whatever a test started is stopped after it."""
    started: list[ContainerProcess] = []

    def make(image: str, args: Sequence[str], **kwargs: Any) -> ContainerProcess:
        process = ContainerProcess(containers, image, args, **kwargs)
        started.append(process)
        return process

    yield make
    for process in started:
        await process.stop()
