"""The small Python programs the chart runs in the bot image (wait-for-postgresql, the helm
test) work: each runs here against a loopback server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .helpers import Manifest, one, pod_spec


def _run(container: dict, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert container["command"] == ["python", "-c"]
    script, *argv = container["args"]
    return subprocess.run(
        [sys.executable, "-c", script, *argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_wait_for_postgresql_returns_once_the_port_accepts(
    default_objects: list[Manifest],
) -> None:
    wait = pod_spec(one(default_objects, "Job"))["initContainers"][0]
    assert wait["name"] == "wait-for-postgresql"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = _run(wait, {"DB_HOST": "127.0.0.1", "DB_PORT": str(port)})
    assert result.returncode == 0, result.stderr


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "ok"}' if self.path == "/readyz" else b"{}"
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def readyz_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(("status", "passes"), [(200, True), (503, False)])
def test_helm_test_passes_only_on_ready(
    default_objects: list[Manifest],
    readyz_server: ThreadingHTTPServer,
    status: int,
    passes: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Readyz, "status", status)
    (container,) = one(default_objects, "Pod")["spec"]["containers"]
    # Same program, pointed at the loopback server instead of the in-cluster Service.
    local = {
        **container,
        "args": [container["args"][0], f"http://127.0.0.1:{readyz_server.server_port}/readyz"],
    }
    result = _run(local)
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
