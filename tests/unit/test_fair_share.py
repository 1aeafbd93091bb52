"""The host's fair shares: the whole budget for a bot alone, an equal share next to active bots."""

from __future__ import annotations

import asyncio

import pytest

from bot.hosting.fair_share import RECOUNT_SECONDS, FairShare

FLOODED, QUIET, OTHER = 1, 2, 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted(shares: FairShare, bot_id: int, attempts: int) -> int:
    return sum(shares.try_acquire(bot_id) for _ in range(attempts))


def test_a_bot_alone_gets_the_whole_budget() -> None:
    shares = FairShare(8, clock=Clock())
    assert admitted(shares, FLOODED, 20) == 8
    assert shares.in_flight(FLOODED) == 8


def test_a_newly_active_bot_shrinks_the_others_share_at_once() -> None:
    shares = FairShare(8, clock=Clock())
    assert admitted(shares, FLOODED, 8) == 8
    # The quiet bot's update is admitted although the flood holds the whole budget...
    assert shares.try_acquire(QUIET)
    # ...and from now on the flood gets half: nothing more until it is below 4 in flight.
    assert shares.share() == 4
    for _ in range(4):
        shares.release(FLOODED)
    assert not shares.try_acquire(FLOODED)
    shares.release(FLOODED)
    assert admitted(shares, FLOODED, 5) == 1


def test_a_bot_gone_quiet_gives_its_share_back_after_the_window() -> None:
    clock = Clock()
    shares = FairShare(8, window=2.0, clock=clock)
    shares.try_acquire(QUIET)
    shares.release(QUIET)
    assert admitted(shares, FLOODED, 8) == 4
    clock.now += 1.0  # still within the quiet bot's window
    shares.release(FLOODED)
    assert admitted(shares, FLOODED, 8) == 1
    clock.now += 1.0 + RECOUNT_SECONDS
    assert admitted(shares, FLOODED, 8) == 4


def test_the_share_never_falls_below_the_floor() -> None:
    shares = FairShare(2, clock=Clock())
    for bot_id in range(10, 20):
        assert shares.try_acquire(bot_id)
    assert shares.share() == 1
    assert not shares.try_acquire(10)
    assert FairShare(2, floor=2, clock=Clock()).share() == 2


def test_a_removed_bot_no_longer_takes_a_share() -> None:
    shares = FairShare(8, clock=Clock())
    shares.try_acquire(OTHER)
    shares.release(OTHER)
    shares.forget(OTHER)
    assert admitted(shares, FLOODED, 20) == 8


def test_release_after_forget_leaves_no_residue() -> None:
    shares = FairShare(4, clock=Clock())
    assert shares.try_acquire(OTHER)
    shares.forget(OTHER)
    shares.release(OTHER)
    assert shares.in_flight(OTHER) == 0


async def test_an_update_over_the_share_waits_for_its_bots_next_free_slot() -> None:
    shares = FairShare(2, clock=Clock())
    assert admitted(shares, FLOODED, 2) == 2
    first = asyncio.ensure_future(shares.acquire(FLOODED, wait=60))
    second = asyncio.ensure_future(shares.acquire(FLOODED, wait=60))
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    shares.release(FLOODED)
    assert await first  # first come, first served
    assert not second.done()
    assert shares.in_flight(FLOODED) == 2
    shares.release(FLOODED)
    assert await second


async def test_a_wait_that_times_out_is_refused_and_leaves_nothing_behind() -> None:
    shares = FairShare(1, clock=Clock())
    assert shares.try_acquire(FLOODED)
    assert not await shares.acquire(FLOODED, wait=0.01)
    shares.release(FLOODED)
    assert shares.in_flight(FLOODED) == 0  # no slot was handed to the departed waiter
    assert await shares.acquire(FLOODED, wait=0)


async def test_a_slot_is_held_inside_its_context_and_released_on_the_way_out() -> None:
    shares = FairShare(1, clock=Clock())
    async with shares.slot(FLOODED, wait=0) as first:
        assert first
        async with shares.slot(FLOODED, wait=0) as second:
            assert not second  # over the share: refused, and nothing to release
        assert shares.in_flight(FLOODED) == 1
    assert shares.in_flight(FLOODED) == 0
    with pytest.raises(RuntimeError):
        async with shares.slot(FLOODED, wait=0):
            raise RuntimeError
    assert shares.in_flight(FLOODED) == 0  # released by a failing update too
