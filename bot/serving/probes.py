"""/healthz, /readyz and /metrics: the probe app every long-running mode serves on HOST:PORT."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web
from opentelemetry.instrumentation.utils import suppress_instrumentation
from prometheus_client.aiohttp import make_aiohttp_handler
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import Resources
from bot.db.schema import SCHEMA_REVISION, SchemaGate, schema_state
from bot.lifecycle import ServerState
from bot.observability.metrics import DB_POOL_IN_USE, READY, REDIS_DEGRADED

MAX_BODY_BYTES = 1024 * 1024
READINESS_TIMEOUT_SECONDS = 2.0
# An idle connection is closed after this long, and so is one whose request headers never end
# (aiohttp times both with its keep-alive timer, from the connection's start). Longer than a
# proxy keeps idle connections to us (Traefik: 90 s), so it never sends on one being closed.
IDLE_TIMEOUT_SECONDS = 100.0
# After an answer given without reading the whole body (401, 404, 408, 413): how long the rest
# may take to arrive, read and thrown away, before the connection is closed.
LINGER_SECONDS = 2.0


BotsReport = Callable[[], dict[str, Any]]
Check = Callable[[], dict[str, Any]]


def create_probe_app(
    *,
    resources: Resources,
    schema: SchemaGate | None,
    state: ServerState,
    bots: BotsReport | None = None,
    bots_dir: Check | None = None,
) -> web.Application:
    """The probes and /metrics; the webhook mode adds its route to this same app.

    `schema` is the one bot's gate (serve, poll); the host passes None and `bots`, its per-bot
    report: each bot has its own schema, and one bot's trouble does not make the Pod unready.
    The host's `bots_dir` does: not `ok`, its bots are not (yet) those of its directory.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def healthz(_request: web.Request) -> web.Response:
        # Answering at all proves the process and its event loop work; nothing external is asked.
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        # A kubelet probe every few seconds is not a trace anybody wants.
        with suppress_instrumentation():
            checks, ready = await readiness(resources, schema, state)
        if bots_dir is not None:
            checks["bots_dir"] = bots_dir()
            ready = ready and checks["bots_dir"]["status"] == "ok"
        if bots is not None:
            checks["bots"] = bots()
        READY.set(1 if ready else 0)
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler())
    pool = resources.engine.sync_engine.pool
    DB_POOL_IN_USE.set_function(lambda: float(getattr(pool, "checkedout", lambda: 0)()))
    return app


async def readiness(
    resources: Resources, schema: SchemaGate | None, state: ServerState
) -> tuple[dict[str, Any], bool]:
    checks: dict[str, Any] = {}
    if state.draining:
        checks["shutdown"] = {"status": "draining"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            current = await (schema.observe() if schema else _ping(resources.engine))
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = {"status": "error", "error": type(exc).__name__}
    else:
        checks["database"] = {"status": "ok"}
        if schema is not None:
            # "ahead" (a newer release migrated, then a rollback) is served: compatible by policy.
            status = {"head": "ok", "behind": "behind", "ahead": "ahead"}[schema_state(current)]
            checks["schema"] = {"status": status, "current": current, "head": SCHEMA_REVISION}
    ready = not state.draining and checks["database"]["status"] == "ok"
    ready = ready and checks.get("schema", {"status": "ok"})["status"] in {"ok", "ahead"}
    cache = resources.cache
    if cache.redis is None:
        checks["redis"] = {"status": "disabled"}
    else:
        # Redis down is degraded, not unready: the memory fallback keeps updates flowing.
        redis_ok = await cache.ping()
        checks["redis"] = {"status": "ok" if redis_ok else "degraded"}
        # Set here because the kubelet probes every few seconds: the alert needs no traffic.
        REDIS_DEGRADED.set(0 if redis_ok else 1)
    return checks, ready


async def _ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def start_http(
    app: web.Application,
    *,
    host: str,
    port: int,
    stack: AsyncExitStack,
    idle_timeout: float = IDLE_TIMEOUT_SECONDS,
) -> web.AppRunner:
    """Listens on host:port until `stack` closes."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=1.0,
        keepalive_timeout=idle_timeout,
        lingering_time=LINGER_SECONDS,
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, host, port).start()
    return runner
