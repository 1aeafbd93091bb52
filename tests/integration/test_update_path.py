"""An update's path through the middlewares: the one bot.app declares, and the docs show."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiogram import BaseMiddleware

from bot.app import handler_path, update_path
from bot.delivery.deadline import DeadlineMiddleware
from bot.middlewares.dedup import DeduplicationMiddleware
from bot.middlewares.locale import LocaleMiddleware
from bot.middlewares.observer import HandlerNameMiddleware, UpdateObserverMiddleware
from bot.middlewares.session import SessionMiddleware
from tests.integration.conftest import Harness
from tests.support.updates import start_update, user

DOCS = Path(__file__).resolve().parents[2] / "docs" / "development.md"
MIDDLEWARES = (
    UpdateObserverMiddleware,
    DeduplicationMiddleware,
    DeadlineMiddleware,
    HandlerNameMiddleware,
    LocaleMiddleware,
    SessionMiddleware,
)


@pytest.fixture
def passed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The middlewares an update passes, by class name, in the order it passes them."""
    order: list[str] = []
    for cls in MIDDLEWARES:
        original = cls.__call__

        async def traced(
            self: BaseMiddleware, handler: Any, event: Any, data: Any, _original=original
        ) -> Any:
            order.append(type(self).__name__)
            return await _original(self, handler, event, data)

        monkeypatch.setattr(cls, "__call__", traced)
    return order


def documented_path() -> list[str]:
    """The class names of docs/development.md's "An update's path" list, in order."""
    section = DOCS.read_text().split("## An update's path", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `(\w+)`", section, flags=re.MULTILINE)


async def test_an_update_passes_the_declared_middlewares_in_order(
    harness: Harness, passed: list[str]
) -> None:
    await harness.feed(start_update(user(4242, "Ann", language_code="en")))

    declared = update_path(harness.settings, harness.resources, deduplicate=True)
    declared += handler_path(harness.dp.errors.middleware[0])  # the dispatcher's locale
    names = [type(middleware).__name__ for middleware in declared]
    assert names == [cls.__name__ for cls in MIDDLEWARES]
    assert passed == names
    assert documented_path() == names
