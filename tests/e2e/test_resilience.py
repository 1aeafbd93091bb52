"""Every update Telegram delivers is answered exactly once, whatever happens: the resilience
scenarios of `benchmarks/resilience.py` at small counts, against the real `python -m bot serve`.
"""

from __future__ import annotations

import pytest

from tests.conftest import REDIS_URL
from tests.e2e.harness import Environment, Row, Sizes, format_table
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
