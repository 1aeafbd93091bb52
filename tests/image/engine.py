"""The container engine the image tests drive: Docker when its daemon answers, else podman.

Containers run the way the chart runs the bot (charts/hello-bot/files/bot-pod.yaml): uid 10001,
every capability dropped, no-new-privileges, a read-only root filesystem with only /tmp
writable, the chart's memory limit. They share the host's network, so they reach the machine's
PostgreSQL and Redis and the tests' fake servers on 127.0.0.1 like any other child process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

INSTALL_HINT = (
    "the image tests need a container engine: install podman (Debian/Ubuntu: "
    "`apt-get install podman runc debootstrap`; .ci/run does this on a CI machine) or start a "
    "Docker daemon; HELLO_BOT_IMAGE_ENGINE=docker|podman picks one"
)
APP_USER = "10001:10001"  # the Dockerfile's user; the chart's runAsUser/runAsGroup


@dataclass(frozen=True)
class Engine:
    name: str  # "docker" or "podman"
    binary: str
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        return [self.binary, *args]

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def run(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = True,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            input=input_text,
            env=self.environ(env),
        )
        if check and result.returncode != 0:
            msg = f"{self.name} {' '.join(args[:3])} ... exited {result.returncode}:\n"
            raise AssertionError(msg + result.stdout[-4000:] + result.stderr[-4000:])
        return result

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False, timeout=30).returncode == 0

    def pull(self, ref: str) -> bool:
        """True when the registry gave the image (these machines reach no registry)."""
        return self.run("pull", "-q", ref, check=False, timeout=300).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def image_config(self, ref: str, key: str) -> str:
        return self.run("image", "inspect", "--format", f"{{{{json .Config.{key}}}}}", ref).stdout

    def build(
        self, context: Path, tag: str, *, target: str | None = None, **build_args: str
    ) -> None:
        args = ["build", "--network", "host", "-t", tag]
        if target:
            args += ["--target", target]
        for name, value in build_args.items():
            args += ["--build-arg", f"{name}={value}"]
        # Build output goes to the failure message only: it is long, and mostly pip's.
        self.run(*args, str(context), timeout=900)

    def hardened(self, *, read_only: bool = True, memory: int | None = None) -> list[str]:
        """`run` flags for the chart's securityContext (and its memory limit, when given)."""
        flags = [
            "--network", "host",
            "--user", APP_USER,
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            # The chart's emptyDir at /tmp (tmpSizeLimit: 64Mi).
            "--tmpfs", "/tmp:rw,size=64m,mode=1777",
        ]  # fmt: skip
        if read_only:
            flags.append("--read-only")
            if self.name == "podman":
                # podman's --read-only mounts writable tmpfs on /run, /tmp and /var/tmp too;
                # Kubernetes gives only what the Pod mounts.
                flags.append("--read-only-tmpfs=false")
        if memory:
            flags += ["--memory", f"{memory // 2**20}m"]
        return flags

    def remove(self, name: str) -> None:
        self.run("rm", "-f", name, check=False, timeout=60)


def _answers(binary: str, env: dict[str, str]) -> bool:
    try:
        result = subprocess.run(
            [binary, "info"],
            capture_output=True,
            check=False,
            timeout=30,
            env={**os.environ, **env},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def podman_env(config_dir: Path) -> dict[str, str]:
    """A containers.conf of the tests' own (never the machine's): what podman needs here.

    The default ulimits exceed these machines' hard limits ("setrlimit RLIMIT_NOFILE: Operation
    not permitted"), and crun refuses their hybrid cgroup hierarchy where runc works.
    """
    lines = ["[containers]", "default_ulimits = []"]
    if shutil.which("runc") or Path("/usr/sbin/runc").exists():
        lines += ["[engine]", 'runtime = "runc"']
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "containers.conf"
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return {"CONTAINERS_CONF": str(path)}


def find_engine(config_dir: Path, choice: str | None = None) -> Engine:
    """The first engine that answers `info`; fails (never skips) naming what to install."""
    candidates: Sequence[str] = (choice,) if choice else ("docker", "podman")
    for name in candidates:
        binary = shutil.which(name)
        if binary is None:
            continue
        env = podman_env(config_dir) if name == "podman" else {}
        if _answers(binary, env):
            return Engine(name, binary, env)
    pytest.fail(f"no working container engine ({', '.join(candidates)}): {INSTALL_HINT}")
