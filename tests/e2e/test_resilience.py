"""Every update Telegram delivers is answered exactly once, whatever happens: the resilience
scenarios of `benchmarks/resilience.py` at small counts, against the real `python -m bot serve`.
"""

from __future__ import annotations

import pytest

from tests.conftest import REDIS_URL
from tests.e2e.harness import (
    SOAK_MAX_SLOPE_MIB_PER_10K,
    Environment,
    MiB,
    Row,
    Sizes,
    format_table,
    rss_slope,
)
from tests.e2e.scenarios import SCENARIOS


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_every_update_is_answered_exactly_once(
    name: str, pg_migrated_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = Environment(pg_migrated_url, REDIS_URL, tmp_path_factory.mktemp("e2e"))
    row: Row = await SCENARIOS[name](env, Sizes.fast())
    table = format_table([row])
    assert row.sent > 0, table
    assert row.replied > 0, table
    assert row.lost == 0, table
    assert row.duplicates == 0, table
    assert row.failures == [], table


def test_the_soak_tells_a_leak_from_allocator_noise() -> None:
    """The soak's verdict (`benchmarks.resilience --only soak`), on made-up RSS samples."""
    noisy = [(n, 200 + (3 if n % 3 == 0 else -2)) for n in range(10_000, 50_000, 900)]
    assert abs(rss_slope(noisy)) < SOAK_MAX_SLOPE_MIB_PER_10K
    leaking = [(n, 200 + n * 1024 / MiB) for n in range(10_000, 50_000, 900)]  # 1 KiB/update
    assert rss_slope(leaking) == pytest.approx(10_000 * 1024 / MiB)
    assert rss_slope(leaking) > SOAK_MAX_SLOPE_MIB_PER_10K
