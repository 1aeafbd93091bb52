"""Every resilience scenario by name: the single-process ones and the replicated ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.e2e.harness import SCENARIOS as SINGLE_PROCESS
from tests.e2e.harness import Environment, Row, Sizes
from tests.e2e.replicas import REPLICA_SCENARIOS

SCENARIOS: dict[str, Callable[[Environment, Sizes], Awaitable[Row]]] = {
    **SINGLE_PROCESS,
    **REPLICA_SCENARIOS,
}
