"""End-to-end resilience suite at full size: `python -m benchmarks.resilience`.

Starts the real `python -m bot serve` against this machine's PostgreSQL (a fresh database) and
Redis (a fresh key namespace), throwaway servers for the outage scenarios, and a fake Bot API;
prints one row per scenario and exits non-zero when any scenario fails.
`--fast` uses the test suite's small counts; `--only NAME` runs some scenarios. The soak runs
here only (about 3 minutes at full size), not in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from sqlalchemy.ext.asyncio import create_async_engine

from bot.db.migrations import upgrade_to_head
from tests.conftest import REDIS_URL, _create_database, _drop_database, database_url
from tests.e2e.harness import LONG_SCENARIOS, Environment, Row, Sizes, format_table
from tests.e2e.scenarios import SCENARIOS

ALL = {**SCENARIOS, **LONG_SCENARIOS}


async def main(names: list[str], sizes: Sizes, verbose: bool) -> list[Row]:
    name = f"hb_e2e_{int(time.time())}"
    await _create_database(name)
    try:
        url = database_url(name)
        engine = create_async_engine(url)
        try:
            await upgrade_to_head(engine)
        finally:
            await engine.dispose()
        env = Environment(url, REDIS_URL, quiet=not verbose, keep_logs=verbose)
        rows = []
        for scenario in names:
            print(f"running {scenario} ...", file=sys.stderr, flush=True)
            rows.append(await ALL[scenario](env, sizes))
        return rows
    finally:
        await _drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the test suite's small counts")
    parser.add_argument("--only", action="append", choices=sorted(ALL), default=[])
    parser.add_argument(
        "--verbose", action="store_true", help="the bot logs at INFO, kept in files"
    )
    args = parser.parse_args()
    sizes = Sizes.fast() if args.fast else Sizes.full()
    started = time.monotonic()
    rows = asyncio.run(main(args.only or list(ALL), sizes, args.verbose))
    print(format_table(rows))
    print(f"{len(rows)} scenarios in {time.monotonic() - started:.0f} s ({sizes})")
    sys.exit(0 if all(row.passed for row in rows) else 1)
