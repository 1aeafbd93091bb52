"""Process lifecycle shared by the long-running modes: start-up heap, signals, drain."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import signal
from collections.abc import Iterator
from typing import Any

import structlog

log = structlog.get_logger(__name__)

YOUNG_COLLECTION_THRESHOLD = 10_000


def settle_heap() -> None:
    """Called once start-up is done (`bot.__main__` turned the collector off for it).

    Start-up objects are permanent: frozen, so the collector never scans aiogram's models and
    the imports again. No collection first: it took ~0.2 s of start-up and found ~1,700 objects.
    """
    gc.freeze()
    # The youngest generation is collected after 700 net allocations by default: several times
    # per update with 32 in flight, each time promoting the in-flight updates' objects a
    # generation up, where the older collections scan them again. At 10,000 an update's
    # objects are mostly freed by reference counting before any collection sees them: 1.6% of
    # an update's instructions, 3% of a traced one's (benchmarks.tracing_cost). Cyclic garbage
    # waits a little longer: at most that many objects, a few MiB.
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    gc.enable()
    # Import-time temporaries (pydantic building aiogram's ~450 models, above all) leave ~5 MiB
    # freed but resident in the C heap; glibc hands such pages back only when asked.
    with contextlib.suppress(OSError, AttributeError):  # no glibc (musl, macOS): keep them
        ctypes.CDLL(None).malloc_trim(0)


class ServerState:
    """Whether we still accept updates, and how many are in flight."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    def stop_accepting(self) -> None:
        """Readiness turns 503 and no new update is taken; in-flight ones go on."""
        self.draining = True
        log.info("shutdown_started", in_flight=self.in_flight)

    async def drain(self, grace: float) -> None:
        """Waits for the updates in flight, at most `grace` seconds."""
        drained = await self.wait_idle(grace)
        log.info(
            "shutdown_drained" if drained else "shutdown_grace_expired", in_flight=self.in_flight
        )

    async def wait_idle(self, grace: float) -> bool:
        """Waits until nothing is in flight; False when `grace` seconds passed first."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


async def until_signalled(*, also: asyncio.Future[Any] | None = None) -> None:
    """Returns on SIGTERM or SIGINT (or when `also` finishes first)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(stop.wait())
    waits: set[asyncio.Future[Any]] = {waiter} if also is None else {waiter, also}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
