"""A real Prometheus (Debian's `prometheus` binary) on a loopback port, scraping given targets
every second, for tests that run the dashboard's queries against what a bot really exported."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.servers import free_port


class PrometheusServer:
    def __init__(self, directory: Path, *, job: str, target: str, labels: dict[str, str]) -> None:
        self.port = free_port()
        self.directory = directory
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [target], "labels": labels}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: apt-get install prometheus (.ci/run installs it)"
        self.process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={self.directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(self.url + "/-/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert self.process.returncode is None, "prometheus exited at start"
                assert time.monotonic() < deadline, "prometheus did not get ready"
                await asyncio.sleep(0.1)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one series) that `expr` evaluates to now."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + "/api/v1/query", params={"query": expr}) as response,
        ):
            body = await response.json()
        assert body["status"] == "success", (expr, body)
        result = body["data"]["result"]
        return result if body["data"]["resultType"] == "vector" else [{"value": result}]

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
