"""Fixtures for the chart tests: render charts/hello-bot with Helm's own Go library
(helm-python-sdk), offline, and hand the tests parsed Kubernetes objects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import helm_python as helm
import pytest

from .helpers import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REQUIRED,
    VARIANTS,
    FakeApiServer,
    Manifest,
    deep_merge,
    parse_manifests,
)


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def render(chart: helm.Chart) -> Render:
    """render(values, is_upgrade=False) -> objects; values are merged over REQUIRED."""

    def _render(
        values: dict[str, Any] | None = None, *, is_upgrade: bool = False, revision: int = 1
    ) -> list[Manifest]:
        rendered = chart.render(
            deep_merge(REQUIRED, values or {}),
            name=RELEASE,
            namespace=NAMESPACE,
            revision=revision if not is_upgrade else max(revision, 2),
            is_install=not is_upgrade,
            is_upgrade=is_upgrade,
        )
        return parse_manifests(rendered)

    return _render


@pytest.fixture(scope="session")
def rendered_variants(render: Render) -> dict[str, list[Manifest]]:
    return {name: render(values) for name, values in VARIANTS.items()}


@pytest.fixture(scope="session")
def default_objects(rendered_variants: dict[str, list[Manifest]]) -> list[Manifest]:
    return rendered_variants["default"]


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server
