"""benchmarks.tracing_cost's arithmetic: the cost at exactly the ratio, whatever a run sampled."""

from __future__ import annotations

import pytest

from benchmarks.tracing_cost import report


def test_the_cost_at_exactly_the_ratio_discounts_a_lucky_or_unlucky_sample(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every update pays 2% and each traced one 40% more: at exactly 10%, 6%.
    # This run traced 15 of 100 updates at 0.1 (8% measured) and all of them at 1.0.
    results = [(None, 100.0, 0, 1.0), (0.1, 108.0, 15, 1.0), (1.0, 142.0, 100, 1.0)]
    report(100, results)
    out = capsys.readouterr().out
    assert "tracing 0.1 at exactly 10% traced: 1.060x off" in out
    assert "every update pays +2.0%, each traced one +40%" in out
    assert "15 (15.0%)" in out


def test_without_a_fully_traced_run_only_the_measured_table_is_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report(100, [(None, 100.0, 0, 1.0), (0.1, 108.0, 15, 1.0)])
    out = capsys.readouterr().out
    assert "1.080" in out
    assert "exactly" not in out
