"""`python -m bot serve` as a real child process: start it, talk to it, stop it, read its output."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    """`argv`, when given, replaces `python -m bot <command>` (tests/image: the same bot in a
    container, its engine's client as the child process)."""

    def __init__(
        self,
        env: dict[str, str],
        cwd: Path,
        command: str = "serve",
        argv: Sequence[str] | None = None,
    ) -> None:
        self.port = free_port()
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BOT_", "DATABASE_", "REDIS_", "WEBHOOK_", "OTEL_"))
        }
        self.env = {
            **inherited,
            "PYTHONPATH": str(ROOT),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            **env,
        }
        self.cwd = cwd
        self.command = command
        self.argv = list(argv) if argv is not None else [sys.executable, "-m", "bot", command]
        self.process: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self._reader: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, *, wait_ready: bool = True, timeout: float = 60.0) -> float:
        """Starts the process; returns seconds until /readyz (or /healthz) answered 200."""
        self.started_at = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        await self.wait_for_status("/readyz" if wait_ready else "/healthz", 200, timeout)
        return time.monotonic() - self.started_at

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while chunk := await self.process.stdout.read(65536):
            self.output.extend(chunk)

    async def wait_for_status(self, path: str, status: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.process is not None and self.process.returncode is not None:
                    msg = f"bot exited with {self.process.returncode}:\n{self.text}"
                    raise AssertionError(msg)
                try:
                    async with http.get(self.url + path) as response:
                        if response.status == status:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    msg = f"{path} did not answer {status} within {timeout}s:\n{self.text}"
                    raise AssertionError(msg)
                await asyncio.sleep(0.05)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> int:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(60)
        except TimeoutError:
            self.process.kill()
            return await self.wait(10)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")
