"""Fixtures for the workflow tests: the chart rendered offline with Helm's Go library."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from .helpers import CHART_DIR

Render = Callable[[dict[str, Any]], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm.Chart) -> Render:
    """render(values) -> objects of a first install of release `hello-bot` (skaffold's name)."""

    def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
        rendered = chart.render(
            values,
            name="hello-bot",
            namespace="hello-bot",
            revision=1,
            is_install=True,
            is_upgrade=False,
        )
        return [
            doc
            for path, text in sorted(rendered.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    return _render
