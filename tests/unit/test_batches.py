"""Coalesced writes: concurrent submits share a round, later ones queue for the next, a failed
round fails each of its callers, and a result whose caller has gone is handed to the orphan
hook."""

from __future__ import annotations

import asyncio

import pytest

from bot.db.batches import Batches


class Recorder:
    def __init__(self) -> None:
        self.rounds: list[list[int]] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.orphans: list[int] = []

    async def run(self, key: str, items: list[int]) -> list[int]:
        self.rounds.append(items)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if key == "broken":
            msg = "database away"
            raise ConnectionError(msg)
        return [item * 10 for item in items]

    def orphan(self, _key: str, result: int) -> None:
        self.orphans.append(result)


async def test_concurrent_submits_share_one_round() -> None:
    recorder = Recorder()
    batches: Batches[str, int, int] = Batches(recorder.run)
    results = await asyncio.gather(*(batches.submit("scope", i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert recorder.rounds == [list(range(10))]


async def test_submits_during_a_round_go_out_in_the_next() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    batches: Batches[str, int, int] = Batches(recorder.run)
    first = asyncio.create_task(batches.submit("scope", 1))
    await recorder.started.wait()
    later = [asyncio.create_task(batches.submit("scope", i)) for i in (2, 3)]
    await asyncio.sleep(0)  # they are queued behind the round in flight
    recorder.gate.set()
    assert await first == 10
    assert [await task for task in later] == [20, 30]
    assert recorder.rounds == [[1], [2, 3]]


async def test_each_key_has_its_own_rounds() -> None:
    recorder = Recorder()
    batches: Batches[str, int, int] = Batches(recorder.run)
    await asyncio.gather(batches.submit("a", 1), batches.submit("b", 2))
    assert sorted(recorder.rounds) == [[1], [2]]


async def test_a_failed_round_fails_each_caller() -> None:
    recorder = Recorder()
    batches: Batches[str, int, int] = Batches(recorder.run)
    results = await asyncio.gather(
        *(batches.submit("broken", i) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await batches.submit("ok", 4) == 40  # the next round is unaffected


async def test_a_result_whose_caller_was_cancelled_goes_to_the_orphan_hook() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    batches: Batches[str, int, int] = Batches(recorder.run, orphan=recorder.orphan)
    gone = asyncio.create_task(batches.submit("scope", 5))
    stays = asyncio.create_task(batches.submit("scope", 6))
    await recorder.started.wait()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    recorder.gate.set()
    assert await stays == 60
    assert recorder.orphans == [50]
