"""Stand-ins for the Dockerfile's base images, for machines that reach no container registry.

The Dockerfile takes its bases as build arguments (PYTHON_IMAGE, UV_IMAGE); production builds
keep the official ones. Where they cannot be pulled, the tests build the same images from
package registries that are reachable:

- python: a Debian root file system of the official image's release (debootstrap, minbase)
  with Debian's python3, linked where the official image has its interpreter
  (/usr/local/bin/python3, the Dockerfile's UV_PYTHON). Debian's Python is 3.11, which the
  project supports (pyproject.toml).
- uv: the pinned uv binary, from the same PyPI wheel scripts/_bootstrap.sh installs, alone in
  an image as the official one has it (/uv).

Both are cached between runs on one machine: the root file system as a tarball under
~/.cache/hello-bot (HELLO_BOT_CACHE), the images in the engine's own store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .engine import Engine

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("HELLO_BOT_CACHE") or Path.home() / ".cache" / "hello-bot")
DEBIAN_MIRROR = os.environ.get("HELLO_BOT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Bump when the recipe below changes, so cached root file systems are made again.
RECIPE = "1"
# A machine behind a TLS-inspecting proxy trusts it through this bundle; inside the build, uv
# (downloading the locked wheels) must trust it too.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What the official python image says about itself, so builds and runs see the same.
PYTHON_IMAGE_CONFIG = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"ENV SSL_CERT_FILE={HOST_CA_BUNDLE}",
    'CMD ["python3"]',
)
# Slim images carry no documentation or translations; neither does the stand-in.
PRUNED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")


def python_standin(engine: Engine, official: str) -> str:
    """An image that does what `official` (python:3.X.Y-slim-<release>) does for the build."""
    release = official.rsplit("-", 1)[-1]
    ca = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    key = hashlib.sha256(f"{RECIPE}:{release}:{DEBIAN_MIRROR}:".encode() + ca).hexdigest()[:12]
    ref = f"localhost/hello-bot-standin/python:{release}-{key}"
    if engine.has_image(ref):
        return ref
    tarball = CACHE_DIR / "image" / f"python-{release}-{key}.tar"
    if not tarball.is_file():
        _debootstrap(release, tarball, ca)
    changes = [arg for line in PYTHON_IMAGE_CONFIG for arg in ("--change", line)]
    engine.run("import", *changes, str(tarball), ref, timeout=300)
    return ref


def _debootstrap(release: str, tarball: Path, ca: bytes) -> None:
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        pytest.fail(
            "the official base images cannot be pulled here, and the stand-in python image "
            "needs debootstrap run as root (`apt-get install debootstrap`; .ci/run installs it)"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs-") as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,ca-certificates",
             release, str(rootfs), DEBIAN_MIRROR],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"):
            for path in rootfs.glob(pattern):
                path.unlink() if path.is_file() else shutil.rmtree(path)
        for pruned in PRUNED:
            shutil.rmtree(rootfs / pruned, ignore_errors=True)
        for name in ("python3", "python"):
            (rootfs / "usr/local/bin" / name).symlink_to("/usr/bin/python3")
        if ca:
            (rootfs / HOST_CA_BUNDLE.relative_to("/")).write_bytes(ca)
        # Written beside the root file system, then renamed: a run that shares the cache never
        # sees half a tarball.
        partial = Path(work) / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        partial.replace(tarball)


def uv_standin(engine: Engine, official: str) -> str:
    """An image holding /uv, the version `official` (ghcr.io/astral-sh/uv:X.Y.Z) holds."""
    version = official.rsplit(":", 1)[1]
    ref = f"localhost/hello-bot-standin/uv:{version}"
    if engine.has_image(ref):
        return ref
    # scripts/_bootstrap.sh installs exactly this wheel; its binary is the image's /uv.
    uv = ROOT / ".tools" / "bin" / "uv"
    found = subprocess.run(
        [str(uv), "--version"], capture_output=True, text=True, check=False
    ).stdout.split() if uv.is_file() else []  # fmt: skip
    if found[:2] != ["uv", version]:
        pytest.fail(
            f"the stand-in uv image needs uv {version} at {uv} (found {found[:2] or 'nothing'}):"
            " run `bash -c 'source scripts/_bootstrap.sh'` (scripts/test does)"
        )
    with tempfile.TemporaryDirectory() as context:
        shutil.copy2(uv, Path(context) / "uv")
        (Path(context) / "Dockerfile").write_text("FROM scratch\nCOPY uv /uv\n")
        engine.build(Path(context), ref)
    return ref
